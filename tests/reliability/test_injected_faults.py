"""Faults inside a run: a NaN loss (stop: exit 3, last good checkpoint untouched; skip: the step is not
applied), a real divergence written as strict JSON, and a full disk during a checkpoint write."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path

import pytest

from ccsam.cli.main import main
from ccsam.training.checkpoint import load_checkpoint
from tests.reliability.faults import disk_full_at, nan_loss_at, tiny

STEPS = 5  # steps per epoch of the tiny run (85 images, batch 16)


def _main(argv: list[str]) -> tuple[int, list[str]]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, [line for line in err.getvalue().splitlines() if line.strip()]


def _strict(text: str) -> object:
    def refuse(token: str) -> None:
        raise ValueError(f"not strict JSON: {token}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ref") / "run"
    assert _main(["train", "--out", str(out), "--no-progress", *tiny(stage2__epochs=0)])[0] == 0
    return json.loads((out / "results.json").read_text())


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, reference):
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.pt"
    with nan_loss_at(STEPS + 3, checkpoint=last) as injected:
        code, err = _main(["train", "--out", str(run), "--no-progress", *tiny(stage2__epochs=0)])
    assert code == 3
    assert len(err) == 2 and err[0].startswith("stage1   1/2")  # the epoch log line, then the error line
    assert (
        err[1].startswith("ccsam: error:")
        and "stage 1, epoch 2/2, step 3/5" in err[1]
        and "last.pt" in err[1]
    )
    assert hashlib.md5(last.read_bytes()).hexdigest() == injected["last_pt_md5"]  # untouched since epoch 1
    assert load_checkpoint(last)["epoch"] == 1
    assert not (run / "results.json").exists()
    assert [_strict(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [0]
    # the run continues from the good checkpoint to the uninterrupted result
    assert _main(["train", "--resume", str(run), "--no-progress"])[0] == 0
    assert json.loads((run / "results.json").read_text())["test"] == reference["test"]


def test_skip_mode_leaves_out_the_nan_step_and_finishes(tmp_path):
    run = tmp_path / "run"
    with nan_loss_at(STEPS + 3):
        code, _ = _main(
            [
                "train",
                "--out",
                str(run),
                "--no-progress",
                *tiny(stage2__epochs=0),
                "runtime.on_nonfinite=skip",
            ]
        )
    assert code == 0
    records = [_strict(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_steps"] for r in records] == [0, 1]
    assert all(isinstance(r["loss"], float) for r in records)
    assert isinstance(_strict((run / "results.json").read_text())["test"]["top1"], float)


def test_a_real_divergence_is_exit_3_and_every_file_is_strict_json(tmp_path):
    run = tmp_path / "run"
    code, err = _main(["train", "--out", str(run), "--no-progress", *tiny(stage2__epochs=0), "stage1.lr=1e9"])
    assert code == 3 and "stage1.lr" in err[-1] and "runtime.on_nonfinite=skip" in err[-1]
    skipped = tmp_path / "skipped"
    code, _ = _main(
        [
            "train",
            "--out",
            str(skipped),
            "--no-progress",
            *tiny(stage2__epochs=0),
            "stage1.lr=1e9",
            "runtime.on_nonfinite=skip",
        ]
    )
    assert code == 0
    for name in ("results.json", "env.json", "split_manifest.json"):
        _strict((skipped / name).read_text())
    for line in (skipped / "metrics.jsonl").read_text().splitlines():
        _strict(line)


def test_a_full_disk_during_a_checkpoint_write_keeps_the_previous_one(tmp_path):
    run = tmp_path / "run"
    with disk_full_at(write=2):
        code, err = _main(["train", "--out", str(run), "--no-progress", *tiny()])
    assert code == 1
    assert err[-1].startswith("ccsam: error:") and "last.pt" in err[-1] and "no space left" in err[-1]
    assert sum(line.startswith("ccsam:") for line in err) == 1 and not any("Traceback" in x for x in err)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1
    assert not list((run / "checkpoints").glob(".last.pt.*"))
    assert _main(["train", "--resume", str(run), "--no-progress"])[0] == 0


def test_the_fault_helpers_fire(tmp_path):
    """The injections are real: without them the same runs succeed with nothing skipped."""
    run = tmp_path / "run"
    assert (
        _main(
            [
                "train",
                "--out",
                str(run),
                "--no-progress",
                *tiny(stage2__epochs=0),
                "runtime.on_nonfinite=skip",
            ]
        )[0]
        == 0
    )
    assert [_strict(x)["skipped_steps"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [0, 0]
    assert Path(run / "checkpoints" / "last.pt").is_file()
