"""Run folders people share: unstarted folders resume or are overwritten on request, stale temporary
files go, paths are stored absolute, data can be relocated (checked against the split manifest), the
report groups by config and names what it skipped; and the CLI habits around them."""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from ccsam import __version__
from ccsam.cli.main import build_parser, main, parse
from ccsam.config import resolve_config
from ccsam.reporting.collect import collect_runs
from ccsam.training.checkpoint import load_checkpoint, save_checkpoint
from ccsam.training.run_dir import RunDir
from ccsam.training.trainer import Trainer
from tests.reliability.faults import Base, tiny


def _main(argv: list[str]) -> tuple[int, str, list[str]]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), [line for line in err.getvalue().splitlines() if line.strip()]


def _unstarted(base: Base, tmp_path: Path) -> Path:
    """What a kill during the first epoch's checkpoint write leaves: set-up files and a temporary file."""
    run = tmp_path / "run"
    RunDir.create(run, resolve_config(None, tiny()), ["ccsam", "train"])
    shutil.copy(base.finished / "split_manifest.json", run / "split_manifest.json")
    (run / "metrics.jsonl").write_text('{"epoch": 0, "loss": 1.2}\n{"epo')
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / ".last.pt.k2j3").write_bytes(b"half a checkpoint")
    return run


def test_an_unstarted_run_folder_resumes_from_epoch_0_to_the_same_result(base, tmp_path):
    run = _unstarted(base, tmp_path)
    code, _, err = _main(["train", "--resume", str(run), "--no-progress"])
    assert code == 0, err
    assert not list((run / "checkpoints").glob(".last.pt.*"))
    results = json.loads((run / "results.json").read_text())
    assert results["test"] == json.loads((base.finished / "results.json").read_text())["test"]
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2]


def test_an_unstarted_run_folder_is_replaced_only_with_overwrite(base, tmp_path):
    run = _unstarted(base, tmp_path)
    code, _, err = _main(["train", "--out", str(run), "--no-progress", *tiny()])
    assert code == 2 and "--overwrite" in err[0] and "--resume" in err[0]
    code, _, err = _main(["train", "--out", str(run), "--no-progress", "--overwrite", *tiny(seed=1)])
    assert code == 0, err
    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == 1
    assert not list((run / "checkpoints").glob(".last.pt.*"))


def test_overwrite_never_touches_a_folder_that_is_not_an_unstarted_run(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    code, _, err = _main(["train", "--out", str(folder), "--overwrite", "--no-progress", *tiny()])
    assert code == 2 and (folder / "notes.txt").read_text() == "precious" and len(list(folder.iterdir())) == 1


def test_relative_paths_are_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, _ = _main(
        ["train", "--out", "run", "--data-root", "some/data", "--no-progress", *tiny(stage1__epochs=1)]
    )
    assert code == 0
    stored = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]["root"]
    assert stored == str((tmp_path / "some" / "data").resolve())


def _cifar(root: Path, labels_seed: int) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(labels_seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.permutation(np.arange(20) % 10).tolist()
        batch = {"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), "labels": labels}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    return root


def test_resume_relocates_the_data_and_checks_it_against_the_manifest(tmp_path):
    from ccsam.cli.train_cmd import with_absolute_paths

    data = _cifar(tmp_path / "data", labels_seed=0)
    overrides = tiny(
        data__dataset="cifar10",
        data__n_max=8,
        data__imbalance_ratio=2,
        data__val_per_class=1,
        data__batch_size=8,
        stage1__epochs=2,
        stage2__epochs=0,
    )
    cfg = with_absolute_paths(resolve_config(None, [*overrides, f"data.root={data}"]))
    run = tmp_path / "run"
    Trainer(cfg, RunDir.create(run, cfg, ["ccsam"]), progress=False).fit(stop_at=1)
    moved = tmp_path / "moved"
    data.rename(moved)
    code, _, err = _main(["train", "--resume", str(run), "--no-progress"])
    assert code == 2 and str(data) in err[0]  # the old place is named
    other = _cifar(tmp_path / "other", labels_seed=5)  # another data set: another split
    code, _, err = _main(["train", "--resume", str(run), "--data-root", str(other), "--no-progress"])
    assert code == 2 and "differs" in err[-1]
    code, out, err = _main(["train", "--resume", str(run), "--data-root", str(moved), "--no-progress"])
    assert code == 0, err


def test_ctrl_c_names_the_run_folder_to_resume(tmp_path, monkeypatch):
    import ccsam.training.trainer as trainer

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train_one_epoch", interrupt)
    code, _, err = _main(["train", "--out", str(tmp_path / "run"), "--no-progress", *tiny()])
    assert code == 130
    assert err == [f"ccsam: error: interrupted; continue with `ccsam train --resume {tmp_path / 'run'}`"]


def test_eval_of_an_interrupted_run_says_which_epoch(base):
    code, out, _ = _main(["eval", str(base.interrupted)])
    assert code == 0 and "checkpoint after epoch 2 of 3" in out
    code, out, _ = _main(["eval", str(base.finished)])
    assert code == 0 and "last epoch (3 of 3)" in out


def _variant(src: Path, dst: Path, seed: int | None = None, lr: float | None = None) -> Path:
    shutil.copytree(src, dst)
    cfg = yaml.safe_load((dst / "config.yaml").read_text())
    results = json.loads((dst / "results.json").read_text())
    if seed is not None:
        cfg["seed"] = results["seed"] = seed
    if lr is not None:
        cfg["stage1"]["lr"] = lr
    (dst / "config.yaml").write_text(yaml.safe_dump(cfg))
    (dst / "results.json").write_text(json.dumps(results))
    return dst


def test_report_groups_by_config_not_by_name_and_names_skipped_folders(base, tmp_path):
    seed1 = _variant(base.finished, tmp_path / "seed1", seed=1)
    other = _variant(base.finished, tmp_path / "other", lr=0.5)
    collected = collect_runs([base.finished, seed1, other, tmp_path / "typo", base.interrupted])
    assert sorted(len(runs) for runs in collected.groups.values()) == [1, 2]
    assert all(label.startswith("digits-lt [") for label in collected.groups)  # one name, two configs
    assert sorted(r["seed"] for runs in collected.groups.values() if len(runs) == 2 for r in runs) == [0, 1]
    reasons = dict(collected.skipped)
    assert reasons[str(tmp_path / "typo")] == "no such folder"
    assert "has not finished" in reasons[str(base.interrupted)]
    code, _, err = _main(
        ["report", str(base.finished), str(tmp_path / "typo"), "--out", str(tmp_path / "rep")]
    )
    assert code == 0 and err == [f"ccsam: skipped '{tmp_path / 'typo'}': no such folder"]
    assert "Skipped folders" in (tmp_path / "rep" / "report.md").read_text()


def test_overrides_may_come_after_options():
    parser = build_parser()
    args = parse(
        parser, ["train", "seed=1", "--no-progress", "stage1.epochs=1", "--out", "x", "stage2.epochs=0"]
    )
    assert args.overrides == ["seed=1", "stage1.epochs=1", "stage2.epochs=0"] and args.out == "x"
    assert parse(parser, ["eval", "RUN", "--split", "val", "eval.posthoc_tau=1"]).overrides == [
        "eval.posthoc_tau=1"
    ]


def test_version_debug_and_device_index(capsys, monkeypatch):
    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"ccsam {__version__}"
    assert resolve_config(None, ["device=cuda:1"]).device == "cuda:1"
    assert main(["--debug", "eval", "/nonexistent/run"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("ccsam: error:")
    monkeypatch.setenv("CCSAM_DEBUG", "1")
    assert main(["eval", "/nonexistent/run"]) == 2 and "Traceback" in capsys.readouterr().err


def test_an_unexpected_failure_is_exit_1_and_one_line(tmp_path, monkeypatch, capsys):
    import ccsam.training.trainer as trainer

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore detail")

    monkeypatch.setattr(trainer, "train_one_epoch", broken)
    assert main(["train", "--out", str(tmp_path / "run"), "--no-progress", *tiny()]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "ccsam: error: unexpected RuntimeError: CUDA error: an illegal memory access was encountered "
        "(a bug; rerun with --debug for the traceback and report it)"
    ]


def test_env_json_records_versions(base):
    env = json.loads((base.finished / "env.json").read_text())
    assert env["ccsam"] == __version__
    assert {"git_commit", "torch", "cuda", "cudnn", "python"} <= env.keys()
    if (Path(__file__).resolve().parents[2] / ".git").exists():
        assert env["git_commit"] and len(env["git_commit"].split("+")[0]) == 40


@pytest.mark.parametrize("bad", ["cuda:x", "gpu", "cuda:"])
def test_device_names_are_checked(bad):
    from ccsam.errors import ConfigError

    with pytest.raises(ConfigError, match="device"):
        resolve_config(None, [f"device={bad}"])


def test_overwrite_of_a_new_folder_and_of_a_half_made_one(tmp_path):
    code, _, err = _main(["train", "--out", str(tmp_path / "new"), "--overwrite", "--no-progress",
                          *tiny(stage1__epochs=1, stage2__epochs=0)])
    assert code == 0, err
    half = tmp_path / "half"  # killed while RunDir.create wrote config.yaml
    half.mkdir()
    (half / ".config.yaml.x81k").write_text("data:")
    one_epoch = tiny(stage1__epochs=1, stage2__epochs=0)
    code, _, err = _main(["train", "--out", str(half), "--no-progress", *one_epoch])
    assert code == 0, err
    assert not list(half.glob(".config.yaml.*"))


def test_resume_relocates_a_data_cache_and_checks_it_against_the_manifest(tmp_path):
    cache = tmp_path / "tiny.cache"
    assert main(["data", "export", "--out", str(cache), *tiny()]) == 0
    run = tmp_path / "run"
    code, _, err = _main(["train", "--out", str(run), "--data-cache", str(cache), "--no-progress",
                          *tiny(stage1__epochs=2)])
    assert code == 0, err
    (run / "results.json").unlink()  # turn it back into an interrupted run: one epoch to go
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    state["epoch"] = 1
    save_checkpoint(run / "checkpoints" / "last.pt", state)
    moved = tmp_path / "moved.cache"
    cache.rename(moved)
    code, _, err = _main(["train", "--resume", str(run), "--no-progress"])
    assert code == 2 and str(cache) in err[-1]  # the old place is named
    other = tmp_path / "other.cache"  # another split of the same data: refused by the manifest check
    assert main(["data", "export", "--out", str(other), *tiny(data__subset_seed=7)]) == 0
    code, _, err = _main(["train", "--resume", str(run), "--data-cache", str(other), "--no-progress"])
    assert code == 2 and len(err) == 1 and "subset_seed=7" in err[0], err
    code, _, err = _main(["train", "--resume", str(run), "--data-cache", str(moved), "--data-root", str(tmp_path),
                          "--no-progress"])
    assert code == 2 and "not both" in err[-1]
    code, _, err = _main(["train", "--resume", str(run), "--data-cache", str(moved), "--no-progress"])
    assert code == 0, err
    assert (run / "results.json").is_file()
