"""Rebuild a finished (or interrupted) run from its folder alone, and re-evaluate it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ccsam.config.io import apply_overrides, config_from_tree
from ccsam.config.schema import RunConfig
from ccsam.data.build import LongTailData, build_data
from ccsam.errors import ConfigError, RunDirError
from ccsam.evaluation.predict import evaluate_split, split_logits
from ccsam.models import Classifier
from ccsam.training.assembly import build_run_model, select_device
from ccsam.training.checkpoint import load_checkpoint, load_model_state
from ccsam.training.precision import Runtime
from ccsam.training.run_dir import RunDir
from ccsam.training.trainer import open_set_metrics


@dataclass
class TrainedRun:
    """A run's config, its last-checkpoint model (eval-ready, on its device) and its data splits."""

    cfg: RunConfig
    model: Classifier
    data: LongTailData
    runtime: Runtime
    epochs_trained: int


#: Override keys ``ccsam eval`` accepts besides ``eval.*``: they change the speed, not the prediction rule.
SPEED_KEYS = ("runtime.threads",)


def check_eval_overrides(overrides: Sequence[str]) -> None:
    """Raise ``ConfigError`` unless every ``KEY=VALUE`` sets an ``eval.*`` key or a speed-only key
    (``runtime.threads``): nothing else may change after training."""
    bad = [o for o in overrides
           if not (o.startswith("eval.") or o.partition("=")[0].strip() in SPEED_KEYS)]
    if bad:
        raise ConfigError(f"only eval.* settings and {', '.join(SPEED_KEYS)} can change after training, "
                          f"not {', '.join(bad)}")


def load_trained(run: RunDir, *, data_root: str | None = None, eval_overrides: Sequence[str] = (),
                 threads: int | None = None) -> TrainedRun:
    """Model and data of a run folder, after checking the rebuilt split matches the run's manifest.

    ``eval_overrides`` (``eval.*`` keys, and ``runtime.threads``) change the prediction rule, e.g.
    ``eval.posthoc_tau=1``, or the number of torch CPU threads; ``threads`` (if given) sets
    ``runtime.threads`` too."""
    cfg: RunConfig = run.load_config()
    if threads is not None:
        eval_overrides = [*eval_overrides, f"runtime.threads={threads}"]
    if eval_overrides:
        check_eval_overrides(eval_overrides)
        tree = apply_overrides(cfg.model_dump(mode="json"), eval_overrides)
        cfg = config_from_tree(tree)
    if data_root is not None:
        root = str(Path(data_root).expanduser().resolve())
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"root": root, "cache": None})})
    state = load_checkpoint(run.last_checkpoint, required=("epoch", "stage", "model", "manifest_sha256"))
    data = build_data(cfg.data)
    if state["manifest_sha256"] != data.manifest.sha256():
        raise RunDirError(f"'{run.path}': the rebuilt data split differs from the run's (sha256 mismatch); "
                          "pass --data-root with the data set this run was trained on")
    device = select_device(cfg.device)
    data = data.to(device)
    runtime = Runtime.resolve(cfg.runtime, device)
    model = build_run_model(cfg, data.in_channels, data.num_classes, runtime, stage=state["stage"],
                            compile_backbone=False)
    load_model_state(model, state, run.last_checkpoint)
    model.eval()
    return TrainedRun(cfg, model, data, runtime, state["epoch"])


def evaluate_run(run: RunDir, *, split: str = "test", data_root: str | None = None,
                 eval_overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Metrics of the run's last checkpoint on ``split`` (``test`` or ``val``); on the test split with
    ``eval.open_set`` also the OLTR open-set metrics (``open_set``, as in ``results.json``) at the
    (possibly overridden) ``eval.open_threshold`` and ``eval.open_f_measure``."""
    trained = load_trained(run, data_root=data_root, eval_overrides=eval_overrides)
    cfg, data = trained.cfg, trained.data
    arrays = data.test if split == "test" else data.val
    with torch.no_grad():
        logits = split_logits(trained.model, arrays, data, cfg, trained.runtime)  # predicted once, used twice
        report = evaluate_split(trained.model, arrays, data, cfg, trained.runtime, details=True, logits=logits)
        results: dict[str, Any] = {
            "name": cfg.name,
            "seed": cfg.seed,
            "epochs_trained": trained.epochs_trained,
            "epochs": cfg.total_epochs,
            "many_threshold": cfg.eval.many_threshold,
            "few_threshold": cfg.eval.few_threshold,
            split: report,
        }
        if split == "test" and cfg.eval.open_set:
            results["open_set"] = open_set_metrics(trained.model, data, cfg, trained.runtime, test_logits=logits)
    return results
