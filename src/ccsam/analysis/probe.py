"""Loss under random weight perturbation: the "sharper minima" probe of ccsam-spec §5.1.

The CC-SAM slides perturb each trained model 5 times at random and compare the rise of the training
loss across methods (ERM, LDAM-DRW, MiSLAS, GCL). The noise law is not given anywhere; following the
reconstruction in the spec ([RECON]) we use the sharpness measures of Keskar et al. (ICLR 2017, "On
large-batch training ...") in their random-perturbation form and the PAC-Bayes *magnitude-aware*
flatness of Jiang et al. (ICLR 2020, "Fantastic Generalization Measures and Where to Find Them",
§C "sharpness / PAC-Bayes mag"):

    w'_j = w + u_j,   u_j,i = s_i * z_j,i,   z_j ~ N(0, I),
    isotropic:        s_i = sigma
    magnitude-aware:  s_i = sqrt(sigma^2 w_i^2 + eps^2)   (Jiang et al.: variance sigma'^2 |w_i|^2 + eps^2,
                                                           eps = 1e-3; here eps defaults to 0, s_i = sigma |w_i|)

and report, per ``sigma``, the mean and standard deviation over draws ``j`` of the loss change
``L(w'_j) - L(w)`` (training split, eval-mode BatchNorm), overall and per shot group.

The standard-normal draws ``z_j`` come from a CPU generator seeded by ``(seed, j)``
(:func:`probe_generator`), one tensor per parameter in ``model.named_parameters()`` order; they are the
same for every ``sigma`` and for every model with the same parameter names and shapes, so methods are
compared on identical noise directions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
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
from ccsam.analysis.directions import gaussian_like, perturbed
from ccsam.checks import check_int
from ccsam.data.long_tail import Split

__all__ = [
    "GROUPS",
    "NOISE_MODES",
    "ProbeResult",
    "loss_per_class",
    "probe_generator",
    "probe_seed",
    "weight_noise",
    "weight_perturbation_probe",
]

NOISE_MODES = ("isotropic", "magnitude")
_KEYS = ("overall", *GROUPS)


def loss_per_class(
    model: nn.Module,
    arrays: Split,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    batch_size: int = 512,
) -> Tensor:
    """Mean cross-entropy of each class, ``L_c = (1/n_c) sum_{i: y_i = c} -log softmax(f(x_i))_c``.

    Eval-mode BatchNorm (each module's train/eval flag is restored afterwards), no autograd, un-augmented
    inputs normalised with ``mean`` / ``std`` (:func:`ccsam.data.memory_loader.eval_batches`).

    Args:
        model: Maps ``[B, C, H, W]`` inputs to ``[B, num_classes]`` logits.
        arrays: The evaluated images; ``C = arrays.num_classes``.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation std.
        batch_size: Images per forward pass.

    Returns:
        float64 ``[C]`` on the model's device; NaN for a class with no image in ``arrays``.
    """
    sums, counts = class_loss_sums(model, arrays, mean, std, batch_size)
    return sums / counts


def probe_seed(seed: int, draw: int) -> int:
    """The 32-bit seed of draw ``draw`` for a probe seeded with ``seed``.

    Mixed with ``numpy.random.SeedSequence([seed, draw])`` (PyTorch's CPU generator keeps only the low 32
    bits of a seed, so a plain ``seed * 2**32 + draw`` would collide across seeds).
    """
    check_int("seed", seed, low=0)
    check_int("draw", draw, low=0)
    return int(np.random.SeedSequence([seed, draw]).generate_state(1)[0])


def probe_generator(seed: int, draw: int) -> torch.Generator:
    """A fresh CPU ``torch.Generator`` seeded with :func:`probe_seed` ``(seed, draw)``."""
    return torch.Generator().manual_seed(probe_seed(seed, draw))


def _standard_normal(model: nn.Module, generator: torch.Generator) -> dict[str, Tensor]:
    return {name: gaussian_like(p, generator) for name, p in model.named_parameters()}


def _scale(model: nn.Module, z: dict[str, Tensor], sigma: float, mode: str, eps: float) -> dict[str, Tensor]:
    if mode == "isotropic":
        return {name: sigma * t for name, t in z.items()}
    params = dict(model.named_parameters())
    return {name: torch.sqrt((sigma * params[name].detach()).square() + eps**2) * t for name, t in z.items()}


def _check_noise(sigma: float, mode: str, eps: float) -> None:
    if mode not in NOISE_MODES:
        raise ValueError(f"mode must be one of {', '.join(NOISE_MODES)}, got {mode!r}")
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")


def weight_noise(
    model: nn.Module,
    sigma: float,
    generator: torch.Generator,
    *,
    mode: str = "isotropic",
    eps: float = 0.0,
) -> dict[str, Tensor]:
    """One noise draw ``u`` over every parameter: ``u_i = s_i z_i``, ``z ~ N(0, I)`` from ``generator``.

    ``s_i = sigma`` (``mode="isotropic"``, Keskar et al. 2017 random-perturbation sharpness) or
    ``s_i = sqrt(sigma^2 w_i^2 + eps^2)`` (``mode="magnitude"``, Jiang et al. 2020 magnitude-aware
    PAC-Bayes flatness, their variance ``sigma'^2 |w_i|^2 + eps^2``; they use ``eps = 1e-3``). ``eps``
    is unused in isotropic mode. ``z`` is drawn one tensor per parameter in ``model.named_parameters()``
    order on the generator's device (see
    :func:`ccsam.analysis.directions.gaussian_like`), so the same generator state gives the same ``z``
    for every model with the same parameter shapes.

    Returns:
        ``{name: u}`` with the parameters' shapes, dtypes and devices.
    """
    _check_noise(sigma, mode, eps)
    return _scale(model, _standard_normal(model, generator), float(sigma), mode, float(eps))


@dataclass(frozen=True)
class ProbeResult:
    """The probe's numbers at one ``sigma``; every dict has keys ``overall``, ``many``, ``medium``, ``few``.

    Attributes:
        sigma: Noise scale.
        clean: Unperturbed loss ``L(w)``.
        loss_mean: Mean over draws of the perturbed loss ``L(w + u_j)``.
        loss_std: Sample standard deviation (``n - 1``) over draws of the perturbed loss (None with one draw).
        delta_mean: Mean over draws of ``L(w + u_j) - L(w)``.
        delta_std: Sample standard deviation over draws of the change (equal to ``loss_std``).
        delta_draws: The change for each draw, in draw order.
        delta_mean_per_class: Mean change of each class loss ``L_c`` (None for classes without images).

    Group values are None when no class of the group has an image; non-finite values are None too.
    """

    sigma: float
    clean: dict[str, float | None]
    loss_mean: dict[str, float | None]
    loss_std: dict[str, float | None]
    delta_mean: dict[str, float | None]
    delta_std: dict[str, float | None]
    delta_draws: dict[str, list[float | None] | None]
    delta_mean_per_class: list[float | None]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (floats, lists, None)."""
        return dataclasses.asdict(self)


def _summarise(
    sigma: float,
    clean: dict[str, Tensor],
    clean_pc: Tensor,
    perturbed_rows: list[dict[str, Tensor]],
    perturbed_pc: list[Tensor],
) -> ProbeResult:
    n = len(perturbed_rows)
    fields: dict[str, dict[str, Any]] = {k: {} for k in ("loss_mean", "loss_std", "delta_mean", "delta_std")}
    delta_draws: dict[str, list[float | None] | None] = {}
    for key in _KEYS:
        values = torch.stack([row[key] for row in perturbed_rows])
        delta = values - clean[key]
        if key != "overall" and bool(torch.isnan(clean[key])):  # no evaluated class in the group
            for field in fields.values():
                field[key] = None
            delta_draws[key] = None
            continue
        fields["loss_mean"][key] = json_float(values.mean())
        fields["loss_std"][key] = json_float(values.std(correction=1)) if n >= 2 else None
        fields["delta_mean"][key] = json_float(delta.mean())
        fields["delta_std"][key] = json_float(delta.std(correction=1)) if n >= 2 else None
        delta_draws[key] = [json_float(v) for v in delta]
    per_class = (torch.stack(perturbed_pc) - clean_pc).mean(dim=0)
    return ProbeResult(
        sigma=float(sigma),
        clean={k: json_float(v) for k, v in clean.items()},
        delta_draws=delta_draws,
        delta_mean_per_class=[json_float(v) for v in per_class],
        **fields,
    )


def weight_perturbation_probe(
    model: nn.Module,
    arrays: Split,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    class_counts: Tensor | Sequence[int],
    *,
    sigmas: Sequence[float] = (1e-3, 5e-3, 1e-2, 5e-2),
    draws: int = 5,
    mode: str = "isotropic",
    eps: float = 0.0,
    seed: int = 0,
    many_threshold: int = 100,
    few_threshold: int = 20,
    batch_size: int = 512,
) -> dict[str, Any]:
    """Loss change under random weight noise, per ``sigma``, over ``draws`` draws (ccsam-spec §5.1).

    For each draw ``j`` the standard-normal ``z_j`` comes from :func:`probe_generator` ``(seed, j)`` and
    for each ``sigma`` the weights are set to ``w + u_j`` with ``u_j = sigma z_j`` (isotropic) or
    ``u_j = sqrt(sigma^2 w^2 + eps^2) z_j`` (magnitude-aware, Jiang et al. 2020); see :func:`weight_noise`. Every
    parameter is perturbed (BatchNorm affine parameters and biases included); the BN running statistics
    are buffers and stay as they are. The weights are restored bit-exactly after each evaluation. The
    loss is the mean cross-entropy in eval mode: ``overall`` is the mean over all images, a group's loss
    is the mean of the per-class losses ``L_c`` of its classes that have images (shot groups from the
    *training* counts ``class_counts``, :func:`ccsam.evaluation.shot_groups`).

    Args:
        model: The trained network (restored on return).
        arrays: Evaluation images (the training split in the paper's protocol).
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation std.
        class_counts: Training images per class, ``[C]`` with ``C = arrays.num_classes``.
        sigmas: Noise scales (each finite and >= 0); ``sigma = 0`` gives a change of exactly 0.
        draws: Draws per sigma (the slides use 5).
        mode: ``"isotropic"`` or ``"magnitude"``.
        eps: Noise floor of the magnitude-aware mode, std ``eps`` where ``w = 0`` (Jiang et al.: 1e-3).
        seed: Non-negative probe seed, shared across models to compare them on the same draws.
        many_threshold: Many-shot: count > this.
        few_threshold: Few-shot: count < this.
        batch_size: Images per forward pass.

    Returns:
        A JSON-ready dict::

            {"mode", "eps", "seed", "draws", "sigmas": [...], "num_samples", "num_classes",
             "groups": {"many": [class ids], "medium": [...], "few": [...]},
             "clean_per_class": [L_c or None, ...],
             "results": [ProbeResult.to_dict() for each sigma, in order]}

        where each result is ``{"sigma", "clean", "loss_mean", "loss_std", "delta_mean", "delta_std",
        "delta_draws", "delta_mean_per_class"}`` and the dicts inside are keyed ``overall`` / ``many`` /
        ``medium`` / ``few`` (None for a group with no evaluated class).
    """
    sigmas = [float(s) for s in sigmas] if not isinstance(sigmas, (int, float)) else [float(sigmas)]
    if not sigmas:
        raise ValueError("sigmas is empty; pass at least one noise scale")
    for sigma in sigmas:
        _check_noise(sigma, mode, eps)
    check_int("draws", draws, low=1)
    probe_seed(seed, 0)  # validates the seed
    masks = group_masks(class_counts, arrays.num_classes, many_threshold, few_threshold)

    sums, counts = class_loss_sums(model, arrays, mean, std, batch_size)
    clean = group_losses(sums, counts, masks)
    clean_pc = sums / counts
    rows: list[list[dict[str, Tensor]]] = [[] for _ in sigmas]
    rows_pc: list[list[Tensor]] = [[] for _ in sigmas]
    for j in range(draws):
        z = _standard_normal(model, probe_generator(seed, j))
        for i, sigma in enumerate(sigmas):
            with perturbed(model, _scale(model, z, sigma, mode, float(eps)), 1.0):
                s, c = class_loss_sums(model, arrays, mean, std, batch_size)
            rows[i].append(group_losses(s, c, masks))
            rows_pc[i].append(s / c)
    results = [
        _summarise(sigma, clean, clean_pc, rows[i], rows_pc[i]).to_dict() for i, sigma in enumerate(sigmas)
    ]
    return {
        "mode": mode,
        "eps": float(eps),
        "seed": seed,
        "draws": draws,
        "sigmas": sigmas,
        "num_samples": len(arrays),
        "num_classes": arrays.num_classes,
        "groups": group_members(masks),
        "clean_per_class": [json_float(v) for v in clean_pc],
        "results": results,
    }
