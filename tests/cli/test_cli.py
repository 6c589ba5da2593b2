"""The command line: one-line errors instead of tracebacks, the table, presets, eval."""

from __future__ import annotations

import json

import pytest
import torch

from ccsam.cli.main import main


def test_presets_lists_the_shipped_presets(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("digits-lt", "fmnist-lt-ce", "fmnist-lt-ccsam", "cifar10-lt-ce", "cifar10-lt-ccsam-official",
                 "cifar100-lt-ccsam-official"):
        assert name in out


def test_presets_show_prints_every_key(capsys):
    assert main(["presets", "--show", "cifar10-lt-ccsam-official"]) == 0
    out = capsys.readouterr().out
    assert "noise_scale: 1.0e-06" in out and "up_limit: 1.0" in out and "many_threshold: 100" in out


def test_train_prints_the_group_table_and_eval_agrees(tmp_path, capsys, tiny_overrides):
    out_dir = tmp_path / "run"
    assert main(["train", "--out", str(out_dir), "--no-progress", *tiny_overrides()]) == 0
    printed = capsys.readouterr().out
    assert "overall" in printed and "many (1)" in printed and "medium (2)" in printed and "few (2)" in printed
    results = json.loads((out_dir / "results.json").read_text())
    assert f"{100 * results['test']['top1']:.1f}" in printed
    assert main(["eval", str(out_dir)]) == 0
    assert f"{100 * results['test']['top1']:.1f}" in capsys.readouterr().out
    assert (out_dir / "argv.txt").read_text().startswith("ccsam train --out")


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["train", "stage1.flat_ration=0.5"], "did you mean stage1.flat_ratio"),
        (["train", "stage1.lr=-0.1"], "stage1.lr"),
        (["train", "--preset", "nope"], "unknown preset 'nope'"),
        (["train", "--preset", "cifar10-lt-ce", "--data-root", "/nonexistent/data"], "/nonexistent/data"),
        (["train", "--resume", "/nonexistent/run"], "not a ccsam run folder"),
        (["eval", "/nonexistent/run"], "not a ccsam run folder"),
        (["probe", "runtime.threads=1"], "take no config overrides, only the options in their --help (use --threads"),
    ],
)
def test_bad_input_is_one_error_line(argv, fragment, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ccsam: error:") and fragment in err[0]
    assert "Traceback" not in err[0]


def test_analysis_checks_every_run_folder_before_the_first_analysis(tmp_path, capsys):
    first = tmp_path / "first"
    first.mkdir()
    (first / "config.yaml").write_text("not: [a valid config")  # analysing it would fail differently
    assert main(["sharpness", str(first), str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "missing' is not a ccsam run folder" in err
    assert not (first / "analysis").exists()


def test_train_refuses_an_existing_folder_and_keeps_its_files(tmp_path, capsys, tiny_overrides):
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("precious")
    assert main(["train", "--out", str(out_dir), *tiny_overrides()]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out_dir / "keep.txt").read_text() == "precious" and len(list(out_dir.iterdir())) == 1


def test_resume_refuses_new_overrides(tmp_path, capsys, tiny_overrides):
    out_dir = tmp_path / "run"
    assert main(["train", "--out", str(out_dir), "--no-progress", *tiny_overrides()]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out_dir), "seed=3"]) == 2
    assert "--resume takes the run folder's own config" in capsys.readouterr().err


def test_eval_accepts_only_prediction_rule_overrides(tmp_path, capsys, tiny_overrides):
    out_dir = tmp_path / "run"
    assert main(["train", "--out", str(out_dir), "--no-progress", *tiny_overrides()]) == 0
    results = json.loads((out_dir / "results.json").read_text())
    capsys.readouterr()
    assert main(["eval", str(out_dir), "eval.logit_scale=2.0"]) == 0
    printed = capsys.readouterr().out
    assert f"{100 * results['test']['top1']:.1f}" in printed  # a temperature never changes the argmax
    assert f"{results['test']['nll']:.3f}" not in printed  # but it changes the NLL
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main(["eval", str(out_dir), "runtime.threads=1"]) == 0  # speed only, so allowed
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert f"{100 * results['test']['top1']:.1f}" in capsys.readouterr().out
    files = {f: f.stat().st_mtime_ns for f in out_dir.rglob("*") if f.is_file()}
    for refused in ("stage1.lr=0.5", "runtime.compile=true", "runtime.precision=fp32", "runtime.threads.x=1",
                    "seed=1"):
        assert main(["eval", str(out_dir), "runtime.threads=1", refused]) == 2, refused
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"ccsam: error: only eval.* settings and runtime.threads can change after training, "
                       f"not {refused}"]
    assert main(["eval", str(out_dir), "runtime.threads=0"]) == 2  # the schema's own range check
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "runtime.threads" in err[0] and "a bug" not in err[0]
    assert {f: f.stat().st_mtime_ns for f in out_dir.rglob("*") if f.is_file()} == files


def test_overwrite_without_out_is_one_line_and_trains_nothing(tmp_path, capsys, monkeypatch, tiny_overrides):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--overwrite", *tiny_overrides()]) == 2
    assert "drop --overwrite or add --out FOLDER" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
