"""Flatness analyses of trained runs (``ccsam probe | landscape | sharpness``), written into the run folder.

Each writes ``RUN_DIR/analysis/<kind>.json``; an existing file is kept unless ``force`` is set.
``threads`` sets the run's ``runtime.threads`` for the analysis (speed only). Runs on
in-memory data sets and on image-file data sets (ImageNet-LT, Places-LT, iNat 2018, list files, image
folders) alike: file splits are decoded batch by batch with the test transform.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

from torch import Tensor, nn

from ccsam import strict_json
from ccsam.analysis import loss_curve_1d, loss_surface_2d, per_class_sharpness, weight_perturbation_probe
from ccsam.atomic_io import atomic_write_text, check_writable
from ccsam.data.long_tail import Split
from ccsam.errors import RunDirError
from ccsam.models.heads import CosineHead, LWSHead
from ccsam.training.evaluate_run import TrainedRun, load_trained
from ccsam.training.run_dir import RunDir

_logger = logging.getLogger(__name__)


class _ScaledLogits(nn.Module):
    """``s * head(f)``: the head's parameters (the same tensors) with its logits multiplied by ``s``."""

    def __init__(self, head: nn.Module, scale: float) -> None:
        super().__init__()
        self.inner, self.scale = head, float(scale)
        self.in_features, self.out_features = head.in_features, head.out_features

    def forward(self, features: Tensor) -> Tensor:
        return self.inner(features) * self.scale


def _load(run: RunDir, data_root: str | None, logit_scale: float | None, threads: int | None) -> TrainedRun:
    """The trained run (on ``threads`` torch CPU threads if given) whose logits are the ones evaluation
    scores: the head's logits times the run's ``eval.logit_scale`` (or the ``logit_scale`` given). LDAM /
    GCL train cosine heads whose losses scale the logits, so their raw cosines would make every loss near
    ln(C) and every landscape flat. A cosine head's own scale is multiplied (its parameters keep their
    names); another head is wrapped (its parameters become ``head.inner.*``). The prediction rules
    ``eval.posthoc_tau`` and ``eval.tau_norm`` are not applied: the analyses measure the trained weights.
    An LWS head (``stage2.method=lws``) keeps its linear weights in buffers, so only its per-class scales
    are perturbed or differentiated (a warning says so); MiSLAS's joint one (``retrain`` with ``lws=true``)
    trains both, and both are."""
    trained = load_trained(run, data_root=data_root, threads=threads)
    scale = logit_scale if logit_scale is not None else trained.cfg.eval.logit_scale
    head = trained.model.head
    if isinstance(head, CosineHead):
        head.scale = float(head.scale) * float(scale)
    elif scale != 1.0:
        trained.model.head = _ScaledLogits(head, scale)  # type: ignore[assignment]
    if isinstance(head, LWSHead) and not head.train_linear:
        _logger.warning("'%s' has an LWS head: its linear weights are fixed buffers, so the analyses perturb "
                        "and differentiate only its per-class scales (not comparable with a trained head's)",
                        run.path)
    return trained


def _target(run: RunDir, kind: str, force: bool) -> Path:
    path = run.path / "analysis" / f"{kind}.json"
    if path.exists() and not force:
        raise RunDirError(f"'{path}' exists; pass --force to replace it")
    check_writable(path.parent)  # before loading the model and the data
    return path


class _Common(TypedDict):
    """The keyword arguments every analysis of a run takes from its data and its config."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_counts: Tensor
    many_threshold: int
    few_threshold: int


def _splits(trained: TrainedRun, names: Sequence[str]) -> dict[str, Split]:
    """The named splits (``train``, ``val``, ``test``) of the run's data."""
    data = trained.data
    known: dict[str, Split] = {"train": data.train, "val": data.val, "test": data.test}
    return {name: known[name] for name in names}


def _common(trained: TrainedRun) -> _Common:
    """Normalisation, training class counts and shot-group thresholds of the run."""
    data, evaluation = trained.data, trained.cfg.eval
    return {"mean": data.mean, "std": data.std, "class_counts": data.class_counts,
            "many_threshold": evaluation.many_threshold, "few_threshold": evaluation.few_threshold}


def probe_run(run: RunDir, *, sigmas: Sequence[float], draws: int, mode: str, seed: int,
              splits: Sequence[str] = ("train", "test"), eps: float = 0.0, force: bool = False,
              data_root: str | None = None, logit_scale: float | None = None, threads: int | None = None) -> Path:
    """Loss change under random weight noise (same draws for every run with the same ``seed``)."""
    path = _target(run, "probe", force)
    trained = _load(run, data_root, logit_scale, threads)
    out = {split: weight_perturbation_probe(trained.model, arrays, **_common(trained), sigmas=tuple(sigmas),
                                            draws=draws, mode=mode, eps=eps, seed=seed)
           for split, arrays in _splits(trained, splits).items()}
    atomic_write_text(path, strict_json.dumps(out) + "\n")
    return path


def landscape_run(run: RunDir, *, points: int, span: float, seed: int, splits: Sequence[str] = ("train",),
                  surface_points: int | None = None, force: bool = False, data_root: str | None = None,
                  logit_scale: float | None = None, threads: int | None = None) -> Path:
    """1-D loss curve along a filter-normalised random direction (same direction seed for every run), and
    optionally the 2-D surface over two such directions (``surface_points`` x ``surface_points``)."""
    path = _target(run, "landscape", force)
    trained = _load(run, data_root, logit_scale, threads)
    out = {split: loss_curve_1d(trained.model, arrays, **_common(trained), points=points, span=span, seed=seed)
           for split, arrays in _splits(trained, splits).items()}
    if surface_points:
        for split, arrays in _splits(trained, splits).items():
            out[split]["surface"] = loss_surface_2d(trained.model, arrays, trained.data.mean, trained.data.std,
                                                    points=surface_points, span=span, seed=seed)
    atomic_write_text(path, strict_json.dumps(out) + "\n")
    return path


def sharpness_run(run: RunDir, *, scopes: Sequence[str] = ("head", "all"), iterations: int = 20,
                  max_per_class: int = 128, force: bool = False, data_root: str | None = None,
                  logit_scale: float | None = None, threads: int | None = None) -> Path:
    """Top Hessian eigenvalue of each class's training loss, for the head alone and the whole model."""
    path = _target(run, "sharpness", force)
    trained = _load(run, data_root, logit_scale, threads)
    data = trained.data
    out: dict[str, Any] = {"class_counts": data.class_counts.tolist()}
    for scope in scopes:
        out[scope] = per_class_sharpness(trained.model, data.train, data.mean, data.std, data.num_classes,
                                         scope=scope, iterations=iterations, max_per_class=max_per_class)
    atomic_write_text(path, strict_json.dumps(out) + "\n")
    return path
