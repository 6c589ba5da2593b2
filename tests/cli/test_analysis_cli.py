"""`ccsam probe | landscape | sharpness` end to end on two tiny runs: JSON written into each run folder."""

from __future__ import annotations

import json

import pytest

from ccsam.cli.main import main


@pytest.fixture(scope="module")
def two_runs(copy_erm_and_ccsam_runs):
    return copy_erm_and_ccsam_runs()


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
