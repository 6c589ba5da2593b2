"""Batched AutoAugment with the CIFAR-10 policy and per-sample randomness.

AutoAugment: Cubuk, Zoph, Mane, Vasudevan, Le, "AutoAugment: Learning Augmentation Strategies from
Data", CVPR 2019 (arXiv:1805.09501). :data:`CIFAR10_POLICY` holds the 25 sub-policies found on reduced
CIFAR-10 (the same table as torchvision's ``AutoAugmentPolicy.CIFAR10`` and the ``CIFAR10Policy`` used
by the CC-SAM and ResLT code bases).

How one batch is augmented (:func:`autoaugment_cifar10`):

* every sample draws one of the 25 sub-policies uniformly at random;
* each of that sub-policy's two operations is applied, in order, with its own probability;
* signed operations (ShearX/Y, TranslateX/Y, Rotate, Brightness, Color, Contrast, Sharpness) get a
  random sign per sample and per operation (+ or - with probability 1/2 each), as in torchvision.

There is no per-sample Python loop: samples that need the same operation with the same magnitude and
sign are gathered (``images[idx]``), transformed together with one ``torchvision.transforms.v2.functional``
call and written back. All random numbers come from the generator passed in, so the same seed gives the
same output, and the code runs unchanged on CPU and CUDA.

One image (the DataLoader path, where each worker augments one sample with its own generator):
:func:`autoaugment_single` makes exactly the draws of :func:`autoaugment` on a batch of one, in the same
order, and applies the two operations directly, without the grouping; its output is bit-identical and it
is 1.7x faster per sample, and 1.13x faster than ``torchvision.transforms.v2.AutoAugment``
(``benchmarks/autoaugment_per_sample.py``). torchvision's transform is not used because it draws from the
global RNG (a data-dependent number of draws), so a sample's augmentation would not follow from its
own seed (resume relies on that), and it computes the magnitude bins in float32 (see Solarize below).

Magnitude convention (torchvision's 10 bins, ``bin`` in 0..9, value = low + (high - low) * bin / 9):

=================  ===========================  ============================================
operation          value range over bins 0..9   how it is applied (``v`` = signed value)
=================  ===========================  ============================================
ShearX / ShearY    0 .. 0.3                     affine shear of ``degrees(atan(v))`` about
                                                the top-left corner (0, 0)
TranslateX         0 .. 150/331 * W pixels      affine shift by ``int(v)`` pixels
TranslateY         0 .. 150/331 * H pixels      affine shift by ``int(v)`` pixels
Rotate             0 .. 30 degrees              rotation about the image centre
Brightness         0 .. 0.9                     ``adjust_brightness(1 + v)``
Color              0 .. 0.9                     ``adjust_saturation(1 + v)`` (no-op on C = 1)
Contrast           0 .. 0.9                     ``adjust_contrast(1 + v)``
Sharpness          0 .. 0.9                     ``adjust_sharpness(1 + v)``
Posterize          8 .. 4 bits                  ``round(8 - 4 * bin / 9)`` bits kept
Solarize           threshold 255 .. 0           ``255 * (9 - bin) / 9``; pixels >= threshold
                                                are inverted
AutoContrast       no magnitude                 per image and channel min-max stretch
Equalize           no magnitude                 per image and channel histogram equalization
Invert             no magnitude                 ``255 - x``
=================  ===========================  ============================================

Magnitudes are computed in double precision, so a threshold that is a whole number is exact: Solarize
bin 3 inverts pixels >= 170 (torchvision computes the bins in float32, 170.000005, and inverts >= 171).

Geometric operations use nearest-neighbour interpolation (torchvision's AutoAugment default) and fill
the uncovered area with ``fill`` (default 0, black, as torchvision; the original TensorFlow code and the
``CIFAR10Policy`` port fill with 128 -- pass ``fill=128`` to get that).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms.v2 import InterpolationMode

__all__ = [
    "CIFAR10_POLICY",
    "OPERATIONS",
    "SIGNED_OPERATIONS",
    "NUM_MAGNITUDE_BINS",
    "SubPolicy",
    "autoaugment",
    "autoaugment_cifar10",
    "autoaugment_single",
    "magnitude_value",
]

#: One operation of a sub-policy: (name, probability, magnitude bin in 0..9 or None).
Operation = tuple[str, float, int | None]
#: A sub-policy: two operations applied in order.
SubPolicy = tuple[Operation, Operation]

NUM_MAGNITUDE_BINS = 10

#: The 25 CIFAR-10 sub-policies of Cubuk et al. (CVPR 2019), Appendix Table 7 / torchvision's
#: ``AutoAugmentPolicy.CIFAR10``: ((op, probability, magnitude bin), (op, probability, magnitude bin)).
CIFAR10_POLICY: tuple[SubPolicy, ...] = (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
    (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
    (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
)

#: Operations whose magnitude gets a random sign per sample.
SIGNED_OPERATIONS = frozenset(
    {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast", "Sharpness"}
)
_MAGNITUDE_FREE = frozenset({"AutoContrast", "Equalize", "Invert"})
#: Every operation name a policy may use.
OPERATIONS = SIGNED_OPERATIONS | _MAGNITUDE_FREE | {"Posterize", "Solarize"}

_LINEAR_RANGES: dict[str, tuple[float, float]] = {
    "ShearX": (0.0, 0.3),
    "ShearY": (0.0, 0.3),
    "Rotate": (0.0, 30.0),
    "Brightness": (0.0, 0.9),
    "Color": (0.0, 0.9),
    "Contrast": (0.0, 0.9),
    "Sharpness": (0.0, 0.9),
}


def magnitude_value(op: str, magnitude_bin: int | None, height: int, width: int) -> float | None:
    """The unsigned magnitude of ``op`` at ``magnitude_bin`` (0..9) for an ``height`` x ``width`` image.

    Returns None for AutoContrast, Equalize and Invert; Posterize returns the number of bits kept and
    Solarize the threshold in 0..255. See the module docstring for the table.
    """
    if op not in OPERATIONS:
        raise ValueError(f"unknown AutoAugment operation {op!r}")
    if op in _MAGNITUDE_FREE:
        return None
    if magnitude_bin is None or not 0 <= int(magnitude_bin) < NUM_MAGNITUDE_BINS:
        raise ValueError(f"{op} needs a magnitude bin in 0..{NUM_MAGNITUDE_BINS - 1}, got {magnitude_bin!r}")
    b = int(magnitude_bin)
    last = NUM_MAGNITUDE_BINS - 1
    t = b / last
    # Products before the division keep values that are whole numbers exact (e.g. 255 * 6 / 9 = 170.0).
    if op == "TranslateX":
        return 150.0 * width * b / (331.0 * last)
    if op == "TranslateY":
        return 150.0 * height * b / (331.0 * last)
    if op == "Posterize":
        return float(round(8.0 - 4.0 * t))
    if op == "Solarize":
        return 255.0 * (last - b) / last
    low, high = _LINEAR_RANGES[op]
    return low + (high - low) * t


def _apply_op(images: torch.Tensor, op: str, value: float | None, fill: list[float]) -> torch.Tensor:
    """Apply one operation with the signed ``value`` (from :func:`magnitude_value`) to every image of
    the uint8 batch ``images`` [N, C, H, W]; the same parameters for all N images."""
    if value is None:
        return _apply_free_op(images, op)
    nearest = InterpolationMode.NEAREST
    if op == "ShearX":
        shear = [math.degrees(math.atan(value)), 0.0]
        return TF.affine(images, angle=0.0, translate=[0, 0], scale=1.0, shear=shear,
                         interpolation=nearest, fill=fill, center=[0, 0])
    if op == "ShearY":
        shear = [0.0, math.degrees(math.atan(value))]
        return TF.affine(images, angle=0.0, translate=[0, 0], scale=1.0, shear=shear,
                         interpolation=nearest, fill=fill, center=[0, 0])
    if op == "TranslateX":
        return TF.affine(images, angle=0.0, translate=[int(value), 0], scale=1.0, shear=[0.0, 0.0],
                         interpolation=nearest, fill=fill)
    if op == "TranslateY":
        return TF.affine(images, angle=0.0, translate=[0, int(value)], scale=1.0, shear=[0.0, 0.0],
                         interpolation=nearest, fill=fill)
    if op == "Rotate":
        return TF.rotate(images, angle=value, interpolation=nearest, fill=fill)
    if op == "Brightness":
        return TF.adjust_brightness(images, brightness_factor=1.0 + value)
    if op == "Color":
        return TF.adjust_saturation(images, saturation_factor=1.0 + value)
    if op == "Contrast":
        return TF.adjust_contrast(images, contrast_factor=1.0 + value)
    if op == "Sharpness":
        return TF.adjust_sharpness(images, sharpness_factor=1.0 + value)
    if op == "Posterize":
        return TF.posterize(images, bits=int(value))
    if op == "Solarize":
        return TF.solarize(images, threshold=value)
    raise ValueError(f"AutoAugment operation {op!r} takes no magnitude" if op in _MAGNITUDE_FREE
                     else f"unknown AutoAugment operation {op!r}")


def _apply_free_op(images: torch.Tensor, op: str) -> torch.Tensor:
    """Apply one of the operations without a magnitude (AutoContrast, Equalize, Invert) to every image."""
    if op == "AutoContrast":
        return TF.autocontrast(images)
    if op == "Equalize":
        return TF.equalize(images)
    if op == "Invert":
        return TF.invert(images)
    raise ValueError(f"AutoAugment operation {op!r} needs a magnitude" if op in OPERATIONS
                     else f"unknown AutoAugment operation {op!r}")


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type == "cuda":
        current = torch.cuda.current_device() if torch.cuda.is_available() else 0
        return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)
    return a.index == b.index or a.index is None or b.index is None


def _check_inputs(images: torch.Tensor, generator: torch.Generator, fill: int | Sequence[int]) -> list[float]:
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 in 0..255, got dtype {images.dtype}")
    if images.dim() != 4:
        raise ValueError(f"images must be [B, C, H, W], got shape {tuple(images.shape)}")
    channels = images.shape[1]
    if channels not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {channels}")
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if not _same_device(generator.device, images.device):
        raise ValueError(f"generator is on {generator.device} but images are on {images.device}")
    values = [fill] if isinstance(fill, (int, float)) else list(fill)
    if len(values) not in (1, channels) or not all(0 <= v <= 255 for v in values):
        raise ValueError(f"fill must be one value or {channels} values in 0..255, got {fill!r}")
    return [float(v) for v in values]


def _check_policy(policy: Sequence[SubPolicy]) -> None:
    if len(policy) == 0:
        raise ValueError("policy must hold at least one sub-policy")
    for k, sub in enumerate(policy):
        if len(sub) != 2:
            raise ValueError(f"sub-policy {k} must hold 2 operations, got {len(sub)}")
        for op, prob, magnitude_bin in sub:
            if not 0.0 <= prob <= 1.0:
                raise ValueError(f"sub-policy {k}: probability of {op} must be in [0, 1], got {prob}")
            magnitude_value(op, magnitude_bin, 1, 1)  # raises ValueError on a bad name or bin


def autoaugment(
    images: torch.Tensor,
    generator: torch.Generator,
    policy: Sequence[SubPolicy] = CIFAR10_POLICY,
    *,
    fill: int | Sequence[int] = 0,
) -> torch.Tensor:
    """AutoAugment (Cubuk et al., CVPR 2019) of a uint8 batch with an arbitrary sub-policy table.

    Each sample draws a sub-policy uniformly from ``policy``, applies its two operations in order, each
    with its probability, and draws the sign of signed operations per sample. See
    :func:`autoaugment_cifar10` for the arguments; ``policy`` is a sequence of
    ``((op, probability, bin), (op, probability, bin))`` as :data:`CIFAR10_POLICY`.
    """
    fill_values = _check_inputs(images, generator, fill)
    _check_policy(policy)
    batch, _, height, width = images.shape
    out = images.clone()
    if batch == 0 or height == 0 or width == 0:
        return out
    device = images.device

    # All draws up front, a fixed number per sample: which sub-policy, apply-or-skip per stage, sign.
    choice = torch.randint(len(policy), (batch,), generator=generator, device=device)
    uniform = torch.rand((batch, 2), generator=generator, device=device)
    negative = torch.rand((batch, 2), generator=generator, device=device) < 0.5

    # Stage j applies operation j of every sample's sub-policy. Samples sharing (op, bin) across
    # sub-policies form one group; signed groups split by sign. Code per sample and stage:
    # 2 * group + is_negative, or the sentinel 2 * n_groups for "skipped".
    groups: list[tuple[str, int | None]] = sorted({(op, b) for sub in policy for op, _, b in sub},
                                                  key=lambda g: (g[0], -1 if g[1] is None else g[1]))
    group_of = {g: i for i, g in enumerate(groups)}
    n_codes = 2 * len(groups) + 1
    probs = torch.tensor([[sub[j][1] for j in range(2)] for sub in policy], dtype=uniform.dtype,
                         device=device)
    group_ids = torch.tensor([[group_of[(sub[j][0], sub[j][2])] for j in range(2)] for sub in policy],
                             dtype=torch.long, device=device)
    signed = torch.tensor([g[0] in SIGNED_OPERATIONS for g in groups], dtype=torch.bool, device=device)

    applied = uniform < probs[choice]  # [B, 2]
    gid = group_ids[choice]  # [B, 2]
    code = 2 * gid + (negative & signed[gid]).long()
    code = torch.where(applied, code, torch.full_like(code, n_codes - 1))
    order = torch.argsort(code, dim=0, stable=True)  # [B, 2]: samples sorted by code, per stage
    counts = torch.stack([torch.bincount(code[:, j], minlength=n_codes) for j in range(2)]).tolist()

    for stage in range(2):
        start = 0
        for c, count in enumerate(counts[stage][:-1]):
            if count:
                idx = order[start:start + count, stage]
                op, magnitude_bin = groups[c // 2]
                value = magnitude_value(op, magnitude_bin, height, width)
                if value is not None and c % 2 == 1:
                    value = -value
                out[idx] = _apply_op(out[idx], op, value, fill_values)
            start += count
    return out


def autoaugment_cifar10(
    images: torch.Tensor,
    generator: torch.Generator,
    *,
    fill: int | Sequence[int] = 0,
) -> torch.Tensor:
    """AutoAugment with the CIFAR-10 policy (Cubuk et al., CVPR 2019), per-sample random, batched.

    Args:
        images: uint8 [B, C, H, W] with C = 3 (C = 1 works too; Color is then a no-op), any device.
        generator: a ``torch.Generator`` on ``images.device``; the only source of randomness.
        fill: value (or one per channel) for the area uncovered by shear, translate and rotate.

    Returns:
        A new uint8 tensor of the same shape and device; ``images`` is not modified.

    Raises:
        ValueError: ``images`` not a uint8 4-D tensor with 1 or 3 channels, generator not a
            ``torch.Generator`` on the images' device, or a bad ``fill``.
    """
    return autoaugment(images, generator, CIFAR10_POLICY, fill=fill)


def autoaugment_single(
    images: torch.Tensor,
    generator: torch.Generator,
    policy: Sequence[SubPolicy] = CIFAR10_POLICY,
    *,
    fill: int | Sequence[int] = 0,
) -> torch.Tensor:
    """:func:`autoaugment` of a batch of one image, without the per-group gathering.

    Draws the same random numbers as :func:`autoaugment` does for ``images`` of shape [1, C, H, W], in the
    same order (sub-policy, two apply-or-skip uniforms, two signs), so the output and the generator's
    state afterwards are identical; only the work per sample is smaller. Arguments as :func:`autoaugment`.

    Raises:
        ValueError: as :func:`autoaugment`, or ``images`` not a batch of exactly one image.
    """
    fill_values = _check_inputs(images, generator, fill)
    if images.shape[0] != 1:
        raise ValueError(f"autoaugment_single takes one image [1, C, H, W], got {tuple(images.shape)}; "
                         "use autoaugment for batches")
    _check_policy(policy)
    _, _, height, width = images.shape
    out = images.clone()
    if height == 0 or width == 0:
        return out
    device = images.device
    choice = torch.randint(len(policy), (1,), generator=generator, device=device)
    uniform = torch.rand((1, 2), generator=generator, device=device)
    negative = (torch.rand((1, 2), generator=generator, device=device) < 0.5)[0].tolist()
    sub = policy[int(choice)]
    # compared in the uniforms' dtype (float32), as the batched path does
    applied = (uniform[0] < torch.tensor([sub[0][1], sub[1][1]], dtype=uniform.dtype, device=device)).tolist()
    for (op, _, magnitude_bin), apply, flip_sign in zip(sub, applied, negative, strict=True):
        if apply:
            value = magnitude_value(op, magnitude_bin, height, width)
            if value is not None and flip_sign and op in SIGNED_OPERATIONS:
                value = -value
            out = _apply_op(out, op, value, fill_values)
    return out
