"""1-D and 2-D local loss landscapes along filter-normalised random directions (ccsam-spec §5.2).

Li, Xu, Taylor, Studer, Goldstein, "Visualizing the Loss Landscape of Neural Nets" (NeurIPS 2018):

    f(a)    = L(w + a d),             a in [-span, span]          (1-D, §4, "filter-wise normalisation")
    f(a, b) = L(w + a d_1 + b d_2)                                   (2-D contour plots)

with ``d`` Gaussian directions rescaled filter by filter to the weights
(:func:`ccsam.analysis.directions.random_direction`). ``L`` is the mean cross-entropy in eval mode
(BatchNorm running statistics, which are buffers and not moved). The directions come from a CPU
generator seeded with ``seed``, so every model with the same parameter shapes is cut along the same
direction (the slides' "1D local loss landscape" compares methods this way).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ccsam.analysis.class_losses import (
    GROUPS,
    class_loss_sums,
    group_losses,
    group_masks,
    group_members,
    json_float,
)
from ccsam.analysis.directions import IGNORE_MODES, perturbed, random_direction
from ccsam.checks import check_int
from ccsam.data.long_tail import Split

__all__ = ["grid", "loss_curve_1d", "loss_surface_2d"]


def grid(points: int, span: float) -> list[float]:
    """``points`` evenly spaced values ``a_i = span (2i - (points - 1)) / (points - 1)`` in ``[-span, span]``.

    Computed in Python floats so the grid is exactly symmetric and, for odd ``points``, its middle value
    is exactly 0 (``torch.linspace`` may give ``+-1e-17`` there). ``points = 1`` gives ``[0.0]``.
    """
    check_int("points", points, low=1)
    if not (isinstance(span, (int, float)) and span > 0 and span != float("inf")):
        raise ValueError(f"span must be a finite number > 0, got {span!r}")
    if points == 1:
        return [0.0]
    return [span * (2 * i - (points - 1)) / (points - 1) for i in range(points)]


def _check_direction_args(seed: int, ignore: str) -> None:
    check_int("seed", seed)
    if ignore not in IGNORE_MODES:
        raise ValueError(f"ignore must be one of {', '.join(IGNORE_MODES)}, got {ignore!r}")


def loss_curve_1d(
    model: nn.Module,
    arrays: Split,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    class_counts: Tensor | Sequence[int],
    *,
    points: int = 51,
    span: float = 1.0,
    seed: int = 0,
    filter_normalize: bool = True,
    ignore: str = "bn_and_bias",
    many_threshold: int = 100,
    few_threshold: int = 20,
    batch_size: int = 512,
) -> dict[str, Any]:
    """``f(a) = L(w + a d)`` on ``points`` values of ``a`` in ``[-span, span]``, overall and per shot group.

    ``d = random_direction(model, Generator().manual_seed(seed), filter_normalize=..., ignore=...)``
    (Li et al., NeurIPS 2018). ``overall`` is the mean cross-entropy over all images; a group's value is
    the mean of the per-class losses of its classes that have images (groups from the training counts
    ``class_counts``). The weights are restored bit-exactly after each point.

    Args:
        model: The trained network (restored on return).
        arrays: Evaluation images.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation std.
        class_counts: Training images per class, ``[C]``.
        points: Number of values of ``a`` (spec: 51).
        span: ``a`` runs over ``[-span, span]`` (spec: 1).
        seed: Direction seed, shared across models.
        filter_normalize: Filter-normalise the direction.
        ignore: ``"bn_and_bias"`` (zero BN parameters and biases) or ``"none"``.
        many_threshold: Many-shot: count > this.
        few_threshold: Few-shot: count < this.
        batch_size: Images per forward pass.

    Returns:
        A JSON-ready dict::

            {"seed", "span", "points", "filter_normalize", "ignore",
             "alphas": [a_0, ..., a_{points-1}],
             "loss": {"overall": [f(a_i)], "many": [...] or None, "medium": ..., "few": ...},
             "clean": {"overall": L(w), "many": ..., "medium": ..., "few": ...},
             "groups": {"many": [class ids], "medium": [...], "few": [...]}}

        A group with no evaluated class has ``None`` instead of a list (and in ``clean``).
    """
    alphas = grid(points, span)
    _check_direction_args(seed, ignore)
    masks = group_masks(class_counts, arrays.num_classes, many_threshold, few_threshold)
    direction = random_direction(
        model, torch.Generator().manual_seed(seed), filter_normalize=filter_normalize, ignore=ignore
    )
    clean = group_losses(*class_loss_sums(model, arrays, mean, std, batch_size), masks)
    series: dict[str, list[float | None]] = {k: [] for k in ("overall", *GROUPS)}
    for a in alphas:
        with perturbed(model, direction, a):
            losses = group_losses(*class_loss_sums(model, arrays, mean, std, batch_size), masks)
        for key, value in losses.items():
            series[key].append(json_float(value))
    loss: dict[str, list[float | None] | None] = {
        key: None if key != "overall" and bool(torch.isnan(clean[key])) else values
        for key, values in series.items()
    }
    return {
        "seed": seed,
        "span": float(span),
        "points": points,
        "filter_normalize": bool(filter_normalize),
        "ignore": ignore,
        "alphas": alphas,
        "loss": loss,
        "clean": {k: json_float(v) for k, v in clean.items()},
        "groups": group_members(masks),
    }


def loss_surface_2d(
    model: nn.Module,
    arrays: Split,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    *,
    points: int = 21,
    span: float = 1.0,
    seed: int = 0,
    filter_normalize: bool = True,
    ignore: str = "bn_and_bias",
    batch_size: int = 512,
) -> dict[str, Any]:
    """``f(a, b) = L(w + a d_1 + b d_2)`` on a ``points x points`` grid in ``[-span, span]^2`` (overall).

    ``d_1`` then ``d_2`` are drawn, in that order, from one CPU generator seeded with ``seed``
    (:func:`ccsam.analysis.directions.random_direction`, Li et al. 2018); ``d_1`` is therefore the
    direction of :func:`loss_curve_1d` with the same seed and options, and ``f(a, 0)`` its curve. The
    weights are restored bit-exactly after each point. Cost: ``points^2`` passes over ``arrays``.

    Returns:
        A JSON-ready dict ``{"seed", "span", "points", "filter_normalize", "ignore", "alphas", "betas",
        "loss"}`` with ``loss[i][j] = f(alphas[i], betas[j])`` (None where not finite).
    """
    alphas = grid(points, span)
    _check_direction_args(seed, ignore)
    generator = torch.Generator().manual_seed(seed)
    d1 = random_direction(model, generator, filter_normalize=filter_normalize, ignore=ignore)
    d2 = random_direction(model, generator, filter_normalize=filter_normalize, ignore=ignore)
    surface: list[list[float | None]] = []
    for a in alphas:
        row: list[float | None] = []
        with perturbed(model, d1, a):
            for b in alphas:
                with perturbed(model, d2, b):
                    sums, counts = class_loss_sums(model, arrays, mean, std, batch_size)
                row.append(json_float(sums.sum() / counts.sum()))
        surface.append(row)
    return {
        "seed": seed,
        "span": float(span),
        "points": points,
        "filter_normalize": bool(filter_normalize),
        "ignore": ignore,
        "alphas": alphas,
        "betas": list(alphas),
        "loss": surface,
    }
