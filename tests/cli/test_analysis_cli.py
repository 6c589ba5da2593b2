"""`ccsam probe | landscape | sharpness` end to end on two tiny runs: JSON written into each run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ccsam.cli import analysis_cmd
from ccsam.cli.main import build_parser, main

REPO_ROOT = Path(__file__).resolve().parents[2]


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


def _files(paths) -> dict[str, int]:
    """Every file under the run folders, with its modification time (ns)."""
    return {str(f): f.stat().st_mtime_ns for path in paths for f in path.rglob("*") if f.is_file()}


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["probe", "--draws", "0"], "argument --draws: must be an int >= 1, got '0'"),
        (["probe", "--draws", "2.5"], "argument --draws: must be an int >= 1, got '2.5'"),
        (["probe", "--sigmas", "0.01", "-0.1"], "argument --sigmas: must be a finite number >= 0, got '-0.1'"),
        (["probe", "--sigmas", "nan"], "argument --sigmas: must be a finite number >= 0, got 'nan'"),
        (["probe", "--eps=-1e-3"], "argument --eps: must be a finite number >= 0, got '-1e-3'"),
        (["probe", "--seed", "-1"], "argument --seed: must be an int in [0, 2**63 - 1], got '-1'"),
        (["probe", "--logit-scale", "0"], "argument --logit-scale: must be a finite number > 0, got '0'"),
        (["landscape", "--points", "0"], "argument --points: must be an int >= 1, got '0'"),
        (["landscape", "--span", "0"], "argument --span: must be a finite number > 0, got '0'"),
        (["landscape", "--span", "inf"], "argument --span: must be a finite number > 0, got 'inf'"),
        (["landscape", "--surface", "1"], "argument --surface: must be an int >= 2, got '1'"),
        (["landscape", "--seed", str(2**64)], "argument --seed: must be an int in [0, 2**63 - 1]"),
        (["sharpness", "--iterations", "-1"], "argument --iterations: must be an int >= 1, got '-1'"),
        (["sharpness", "--max-per-class", "0"], "argument --max-per-class: must be an int >= 1, got '0'"),
        (["sharpness", "--threads", "0"], "argument --threads: must be an int >= 1, got '0'"),
    ],
)
def test_bad_numeric_options_are_usage_errors_and_write_nothing(two_runs, argv, fragment, capsys):
    before = _files(two_runs)
    command, *options = argv
    assert main([command, *[str(p) for p in two_runs], "--force", *options]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ccsam: error: ") and fragment in err[0], err
    assert "a bug" not in err[0] and err[0].endswith(f"see `ccsam {command} --help`")
    assert _files(two_runs) == before


def _options_help(command: str, capsys) -> str:
    """The options part of ``ccsam COMMAND --help`` with its line breaks and indentation collapsed."""
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args([command, "--help"])
    assert stop.value.code == 0
    return " ".join(capsys.readouterr().out.split("options:", 1)[1].split())


@pytest.mark.parametrize(
    ("command", "option", "default"),
    [
        ("probe", "--sigmas SIGMA [SIGMA ...]", "0.001 0.005 0.01 0.05"),
        ("probe", "--draws DRAWS", "5"),
        ("probe", "--eps EPS", "0"),
        ("probe", "--seed SEED", "0"),
        ("probe", "--mode {isotropic,magnitude}", "isotropic"),
        ("landscape", "--points POINTS", "51"),
        ("landscape", "--span SPAN", "1"),
        ("landscape", "--seed SEED", "0"),
        ("sharpness", "--iterations ITERATIONS", "20"),
        ("sharpness", "--max-per-class MAX_PER_CLASS", "128"),
    ],
)
def test_help_shows_each_default(command, option, default, capsys):
    text = _options_help(command, capsys)
    entry = text.split(f"{option} ", 1)[1].split(" --", 1)[0]  # up to the next option
    assert f"(default: {default}" in entry, entry


def test_help_defaults_are_the_parsed_defaults_and_the_readme_quotes_them():
    parser = build_parser()
    probe = parser.parse_args(["probe", "RUN"])
    landscape = parser.parse_args(["landscape", "RUN"])
    sharpness = parser.parse_args(["sharpness", "RUN"])
    assert probe.sigmas == list(analysis_cmd.SIGMAS) and probe.draws == analysis_cmd.DRAWS == 5
    assert (landscape.points, landscape.span) == (analysis_cmd.POINTS, analysis_cmd.SPAN) == (51, 1.0)
    assert (sharpness.iterations, sharpness.max_per_class) == (analysis_cmd.ITERATIONS, analysis_cmd.MAX_PER_CLASS)
    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    sigmas = " ".join(f"{s:g}" for s in analysis_cmd.SIGMAS)
    assert f"sigma sweep # {sigmas}, {probe.draws} draws" in readme
    assert f"{landscape.points} points in [-{landscape.span:g}, {landscape.span:g}]" in readme
    assert f"({sharpness.iterations} power iterations, at most {sharpness.max_per_class} images per class)" in readme


def test_threads_option_sets_torch_threads_for_the_analysis(two_runs):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main(["sharpness", str(two_runs[0]), "--force", "--threads", "1", "--iterations", "1",
                     "--max-per-class", "2"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert json.loads((two_runs[0] / "analysis" / "sharpness.json").read_text())["head"]
