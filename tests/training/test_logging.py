"""Logging for long runs: throughput and data-wait per epoch, optional TensorBoard scalars."""

from __future__ import annotations

import logging
import sys

import pytest

from ccsam.config import resolve_config
from ccsam.errors import CcsamError
from ccsam.training.run_dir import RunDir
from ccsam.training.tensorboard import scalars_of
from ccsam.training.trainer import Trainer, train


def test_epoch_records_and_log_line_carry_throughput_and_data_wait(tmp_path, tiny_overrides, caplog) -> None:
    config = resolve_config("digits-lt", tiny_overrides(**{"stage2.epochs": 0}))
    run = RunDir.create(tmp_path / "run", config, [])
    with caplog.at_level(logging.INFO, logger="ccsam.training.trainer"):
        train(config, run, progress=False)
    records = run.read_metrics()
    assert len(records) == 2
    for record in records:
        assert record["images"] > 0 and record["img_per_s"] > 0
        assert 0 <= record["data_wait_s"] <= record["time_s"]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stage1")]
    assert len(lines) == 2 and all(" img/s, data wait " in line for line in lines)


def test_scalars_of_groups_training_and_nested_fields() -> None:
    record = {"epoch": 4, "stage": 2, "stage_epoch": 0, "loss": 1.5, "img_per_s": 300, "alpha": 0.5,
              "val": {"top1": 0.5, "few": None, "balanced": float("nan")}, "note": "x", "flag": True}
    expected = {"train/loss": 1.5, "train/img_per_s": 300.0, "train/alpha": 0.5, "val/top1": 0.5}
    assert scalars_of(record) == expected


def test_tensorboard_event_file_holds_the_run_scalars(tmp_path, tiny_overrides) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'ccsam[tb]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = resolve_config("digits-lt", tiny_overrides(**{"logging.tensorboard": "true"}))
    run = RunDir.create(tmp_path / "run", config, [])
    results = train(config, run, progress=False)
    events = list((run.path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    accumulator = EventAccumulator(str(run.path / "tensorboard")).Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"train/loss", "train/img_per_s", "train/data_wait_s", "val/balanced", "train/alpha"} <= tags
    assert [e.step for e in accumulator.Scalars("train/loss")] == [0, 1, 2, 3]
    losses = [r["loss"] for r in run.read_metrics()]
    assert [e.value for e in accumulator.Scalars("train/loss")] == pytest.approx(losses)
    (test_top1,) = accumulator.Scalars("test/top1")
    assert test_top1.step == 4 and test_top1.value == pytest.approx(results["test"]["top1"])


def test_missing_tensorboard_is_one_line_before_training(tmp_path, tiny_overrides, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    config = resolve_config("digits-lt", tiny_overrides(**{"logging.tensorboard": "true"}))
    run = RunDir.create(tmp_path / "run", config, [])
    with pytest.raises(CcsamError, match=r"pip install 'ccsam\[tb\]'") as info:
        Trainer(config, run, progress=False)
    assert "\n" not in str(info.value)
    assert not run.metrics_path.exists()
