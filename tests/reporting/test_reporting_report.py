"""`ccsam probe | landscape | sharpness | report` end to end on two tiny runs."""

from __future__ import annotations

import json

import pytest

from ccsam.cli.main import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    from conftest import synthetic_overrides

    paths = []
    for name, extra in (("erm", ["stage1.method=erm", "stage2.epochs=0"]), ("ccsam", [])):
        out = root / name
        assert main(["train", "--out", str(out), "--no-progress", *synthetic_overrides(), f"name={name}", *extra]) == 0
        paths.append(out)
    return paths


def test_analyses_write_json_into_each_run_and_refuse_to_overwrite(two_runs, capsys):
    args = [str(p) for p in two_runs]
    assert main(["probe", *args, "--sigmas", "0.01", "0.05", "--draws", "2"]) == 0
    assert main(["landscape", *args, "--points", "5", "--surface", "3"]) == 0
    assert main(["sharpness", *args, "--iterations", "5", "--max-per-class", "8"]) == 0
    for path in two_runs:
        probe = json.loads((path / "analysis" / "probe.json").read_text())
        assert {"train", "test"} <= set(probe) and [r["sigma"] for r in probe["train"]["results"]] == [0.01, 0.05]
        landscape = json.loads((path / "analysis" / "landscape.json").read_text())
        assert len(landscape["train"]["alphas"]) == 5 and landscape["train"]["alphas"][2] == 0.0
        assert landscape["train"]["loss"]["overall"][2] == pytest.approx(landscape["train"]["clean"]["overall"])
        sharpness = json.loads((path / "analysis" / "sharpness.json").read_text())
        assert len(sharpness["head"]) == len(sharpness["class_counts"]) == 5
    capsys.readouterr()
    assert main(["probe", args[0]]) == 2
    assert "--force" in capsys.readouterr().err


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
