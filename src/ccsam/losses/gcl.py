"""Gaussian-clouded logit (GCL) loss (Li, Cheung, Lu, "Long-tailed Visual Recognition via Gaussian
Clouded Logit Adjustment", CVPR 2022)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ccsam.losses._common import (
    ClassCounts,
    as_class_counts,
    check_logits_targets,
    check_real,
    class_weighted_mean,
    subtract_at_targets,
)
from ccsam.losses.focal import focal_term

__all__ = ["GCLLoss", "gcl_cloud_sizes"]

_NOISE_STD = 1.0 / 3.0  # N(0, 1/3) read as standard deviation 1/3: ~3 sigma inside the [-1, 1] clip


def gcl_cloud_sizes(class_counts: ClassCounts) -> Tensor:
    """``a_j = (ln n_max - ln n_j) / max_k (ln n_max - ln n_k)``: 0 for the largest class, 1 for the
    rarest; all zeros when every class has the same size. Returns float32 ``[C]``.

    Example:
        >>> gcl_cloud_sizes([100, 10, 1]).tolist()
        [0.0, 0.5, 1.0]
    """
    return _cloud_sizes(as_class_counts(class_counts))


def _cloud_sizes(counts: Tensor) -> Tensor:
    """Kernel of :func:`gcl_cloud_sizes`: when all gaps are 0, ``0 / tiny = 0`` (no branch, no sync)."""
    log_n = torch.log(counts)
    gap = log_n.max() - log_n
    return gap / gap.max().clamp_min(torch.finfo(gap.dtype).tiny)


class GCLLoss(nn.Module):
    """``L = mean_i sg[(1 - p_t)^gamma] (-log p_t)``, ``p = softmax(s (z - noise_mul |delta| a - m e_y))``.

    ``z`` are *cosine* logits (build the head as ``CosineHead(d, C, scale=1.0)``), ``a`` is
    :func:`gcl_cloud_sizes`, and ``delta_ij ~ N(0, std 1/3)`` clipped to ``[-1, 1]`` is drawn afresh for
    every sample and class on each call, so rarer classes get larger "clouds" of lowered logits. Noise is
    applied only in training mode: ``loss.eval()`` (or ``noise_mul = 0``) gives the deterministic loss
    ``CE(s * (z - m e_y))`` (with the focal factor when ``gamma > 0``). ``sg`` = stop-gradient: the
    factor weights each sample's CE and is not differentiated (official GCL code). GCL recipe (spec §7):
    stage 1 ``m = 0, s = 30, noise_mul = 0.5``; stage 2 ``m = 0.1, s = 20, noise_mul = 0.5, gamma = 1``.

    Args:
        class_counts: training-set size per class ``[C]``, kept in a buffer.
        scale: ``s > 0``.
        margin: ``m >= 0``, subtracted from the true-class cosine.
        noise_mul: cloud amplitude, ``>= 0``.
        gamma: focal exponent, ``>= 0`` (0 = plain CE).
        generator: ``torch.Generator`` for the noise; ``None`` uses the global RNG. Noise is drawn on the
            generator's device and moved to the logits' device.

    Example:
        >>> import torch
        >>> loss = GCLLoss([100, 10], generator=torch.Generator().manual_seed(0))
        >>> loss(torch.zeros(2, 2), torch.tensor([0, 1])).shape
        torch.Size([])
    """

    class_counts: Tensor

    def __init__(
        self,
        class_counts: ClassCounts,
        scale: float = 30.0,
        margin: float = 0.0,
        noise_mul: float = 0.5,
        gamma: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("class_counts", as_class_counts(class_counts))
        self.scale = check_real("scale", scale, low=0.0, low_open=True)
        self.margin = check_real("margin", margin, low=0.0)
        self.noise_mul = check_real("noise_mul", noise_mul, low=0.0)
        self.gamma = check_real("gamma", gamma, low=0.0)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.generator = generator

    def _noise(self, shape: torch.Size, like: Tensor) -> Tensor:
        gen = self.generator
        device = like.device if gen is None else gen.device
        draw = torch.randn(shape, generator=gen, device=device, dtype=like.dtype)
        return (draw * _NOISE_STD).clamp(-1.0, 1.0).abs().to(like.device)

    def adjusted_logits(self, logits: Tensor, targets: Tensor) -> Tensor:
        """``s * (z - noise_mul |delta| a - m e_y)``, the logits fed to the CE (noise only in training)."""
        dtype = check_logits_targets(logits, targets, self.class_counts.numel())
        z = logits.to(dtype)
        if self.training and self.noise_mul > 0.0:
            clouds = _cloud_sizes(self.class_counts).to(dtype)
            z = z - self.noise_mul * self._noise(z.shape, z) * clouds
        margins = torch.full_like(self.class_counts, self.margin)
        return self.scale * subtract_at_targets(z, targets, margins)

    def forward(self, logits: Tensor, targets: Tensor, class_weight: Tensor | None = None) -> Tensor:
        """Mean (with ``class_weight``: class-weighted mean) GCL loss of cosine ``logits [B, C]``."""
        adjusted = self.adjusted_logits(logits, targets)
        log_pt = F.log_softmax(adjusted, dim=1).gather(1, targets.unsqueeze(1)).squeeze(1)
        # The official GCL weights each sample's CE by (1 - p)^gamma with p detached: a re-weighting,
        # not Lin et al.'s focal gradient (same value, different gradient).
        return class_weighted_mean(focal_term(log_pt, self.gamma, detach_weight=True), targets, class_weight)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.class_counts.numel()}, scale={self.scale}, margin={self.margin}, "
            f"noise_mul={self.noise_mul}, gamma={self.gamma}"
        )
