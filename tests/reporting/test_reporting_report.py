"""ccsam.reporting.report (`ccsam report`): figures and tables from two tiny runs with their analyses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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
        # one seed per method: the value alone, no "± 0.00" that would claim a measured spread
        assert f"| {100 * results['test']['top1']:.2f} |" in row and "±" not in row
    assert "averaged over seeds" not in text
    assert "| erm | 1 of 1 |" in text and "| ccsam | 0 | 1 of 1 |" in text  # probe; landscape (seed, runs)
    assert main(["report", str(two_runs[0]), "--out", str(out)]) == 2  # never overwrites a report


def test_report_says_how_many_runs_each_analysis_row_covers(two_runs, tmp_path):
    """A second ERM seed without analyses: the test metrics average 2 runs, the analyses say 1 of 2."""
    second = Path(shutil.copytree(two_runs[0], tmp_path / "erm-seed1"))
    shutil.rmtree(second / "analysis")
    results = json.loads((second / "results.json").read_text())
    results["seed"] = 1
    (second / "results.json").write_text(json.dumps(results))
    out = tmp_path / "report"
    assert main(["report", str(two_runs[0]), str(second), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| erm | 0,1 |"))
    top1 = json.loads((two_runs[0] / "results.json").read_text())["test"]["top1"]
    assert f"| {100 * top1:.2f} ± 0.00 |" in row  # two seeds: a spread (here none: the same numbers)
    probe = text.split("## Random weight perturbation")[1].split("\n## ")[0]
    probe_rows = [line for line in probe.splitlines() if line.startswith("| erm |")]
    assert len(probe_rows) == 1 and probe_rows[0].startswith("| erm | 1 of 2 |")
    assert "averaged over the runs of each method that have a probe" in text
    landscape = text.split("## 1-D loss landscape")[1].split("\n## ")[0]
    assert "| erm | 0 | 1 of 2 |" in landscape and "no average over seeds" in landscape
    assert "erm: seed 0 (1 of 2 runs have one)" in text


def test_report_compares_probes_only_at_a_sigma_they_all_have(two_runs, tmp_path, capsys):
    """Probes run with different --sigmas: one line saying so (it used to be a StopIteration, 'a bug')."""
    second = Path(shutil.copytree(two_runs[0], tmp_path / "erm-seed1"))
    probe = json.loads((second / "analysis" / "probe.json").read_text())
    for entry in probe["train"]["results"]:
        entry["sigma"] *= 10
    (second / "analysis" / "probe.json").write_text(json.dumps(probe))
    results = json.loads((second / "results.json").read_text())  # a second seed (a repeated one is skipped)
    (second / "results.json").write_text(json.dumps({**results, "seed": 1}))
    out = tmp_path / "report"
    assert main(["report", str(two_runs[0]), str(second), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "The probes share no sigma" in text and "`--sigmas` for every run" in text
    assert not (out / "figures" / "probe.png").exists()
