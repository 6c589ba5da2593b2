"""ccsam.reporting.report (`ccsam report`): figures and tables from two tiny runs with their analyses."""

from __future__ import annotations

import json

import pytest

from ccsam.analysis.runs import landscape_run, probe_run, sharpness_run
from ccsam.cli.main import main
from ccsam.training.run_dir import RunDir

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def two_runs(copy_erm_and_ccsam_runs):
    """An ERM and a CC-SAM run, each with its probe, landscape (1-D and 2-D) and sharpness analyses."""
    paths = copy_erm_and_ccsam_runs()
    for out in paths:
        run = RunDir.open(out)
        probe_run(run, sigmas=(0.01, 0.05), draws=2, mode="isotropic", seed=0)
        landscape_run(run, points=5, span=1.0, seed=0, surface_points=3)
        sharpness_run(run, iterations=5, max_per_class=8)
    return paths


def test_report_has_valid_figures_and_tables_that_match_results(two_runs, tmp_path):
    out = tmp_path / "report"
    assert main(["report", *[str(p) for p in two_runs], "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    for figure in ("per_class_accuracy", "reliability", "confusion", "probe", "landscape", "landscape_2d",
                   "sharpness"):
        data = (out / "figures" / f"{figure}.png").read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, figure
        assert f"figures/{figure}.png" in text
    for path in two_runs:
        results = json.loads((path / "results.json").read_text())
        row = next(line for line in text.splitlines() if line.startswith(f"| {results['name']} |"))
        assert f"{100 * results['test']['top1']:.2f} ± 0.00" in row
    assert main(["report", str(two_runs[0]), "--out", str(out)]) == 2  # never overwrites a report
