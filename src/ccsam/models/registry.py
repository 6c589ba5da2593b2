"""Model registry: a plain dict of frozen entries, one per architecture the CLI can name (STYLE G7).

CIFAR ResNets (``resnet20`` .. ``resnet56``, 64-d), ``small_cnn``, and torchvision's ImageNet ResNets
(``resnet10``, ``resnet50``, ``resnext50_32x4d``, ``resnet152``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ccsam.checks import check_int
from ccsam.models.cifar_resnet import cifar_resnet_backbone
from ccsam.models.classifier import Classifier
from ccsam.models.small_cnn import small_cnn_backbone
from ccsam.models.torchvision_resnet import torchvision_resnet_backbone

__all__ = ["MODELS", "ModelEntry", "build_model", "list_models"]

BackboneBuilder = Callable[[int, int], tuple[nn.Module, int]]
"""``(in_channels, width) -> (backbone, feature_dim)``."""


@dataclass(frozen=True)
class ModelEntry:
    """One registered architecture.

    Attributes:
        name: the key used on the command line and in configs.
        builder: ``(in_channels, width) -> (backbone, feature_dim)``.
        description: one line for ``--help`` and ``list_models()``.
        uses_width: whether ``width`` changes the network (the CIFAR ResNets ignore it).
    """

    name: str
    builder: BackboneBuilder
    description: str
    uses_width: bool = False


def _resnet(depth: int) -> BackboneBuilder:
    def build(in_channels: int, width: int) -> tuple[nn.Module, int]:
        del width  # fixed 16/32/64 channels, as in He et al. 2016
        return cifar_resnet_backbone(depth, in_channels), 64

    return build


def _small_cnn(in_channels: int, width: int) -> tuple[nn.Module, int]:
    return small_cnn_backbone(in_channels, width), 4 * width


def _torchvision(arch: str) -> BackboneBuilder:
    def build(in_channels: int, width: int) -> tuple[nn.Module, int]:
        del width  # torchvision's fixed widths
        return torchvision_resnet_backbone(arch, in_channels)

    return build


_TORCHVISION_DESCRIPTIONS = {
    "resnet10": "ImageNet ResNet-10 (torchvision ResNet, BasicBlock [1,1,1,1]), 512-d; OLTR baseline",
    "resnet50": "ImageNet ResNet-50 (torchvision), 2048-d features; ImageNet-LT, iNaturalist 2018",
    "resnext50_32x4d": "ImageNet ResNeXt-50 32x4d (torchvision), 2048-d features; ImageNet-LT",
    "resnet152": "ImageNet ResNet-152 (torchvision), 2048-d features; Places-LT from ImageNet weights",
}


def _resnet_entry(depth: int) -> ModelEntry:
    n = (depth - 2) // 6
    description = f"CIFAR ResNet-{depth}: 3x{n} BasicBlocks, option-A shortcuts, 64-d features"
    return ModelEntry(f"resnet{depth}", _resnet(depth), description)


MODELS: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in (
        *(_resnet_entry(depth) for depth in (20, 32, 44, 56)),
        ModelEntry(
            "small_cnn",
            _small_cnn,
            "3 conv-BN-ReLU blocks (w, 2w, 4w) with max-pooling, 4w-d features; for 8x8-32x32 CPU runs",
            uses_width=True,
        ),
        *(ModelEntry(arch, _torchvision(arch), text) for arch, text in _TORCHVISION_DESCRIPTIONS.items()),
    )
}


def list_models() -> list[tuple[str, str]]:
    """Return ``(name, description)`` for every registered architecture, sorted by name."""
    return [(name, MODELS[name].description) for name in sorted(MODELS)]


def build_model(
    arch: str, *, in_channels: int, num_classes: int, width: int = 32, bias: bool = True
) -> Classifier:
    """Build ``Classifier(backbone, feature_dim, num_classes)`` for a registered architecture.

    Weights are drawn from torch's global RNG: seed it (``torch.manual_seed``) for reproducible init.

    Args:
        arch: a name from ``list_models()``.
        in_channels: channels of the input images (1 for grayscale, 3 for RGB).
        num_classes: number of logits.
        width: base width for architectures with ``uses_width`` (``small_cnn``); ignored otherwise.
            The torchvision ResNets (``resnet10``, ``resnet50``, ``resnext50_32x4d``, ``resnet152``)
            are built with random weights; load ImageNet weights with
            :func:`ccsam.models.pretrained.load_pretrained`.
        bias: whether the linear head has a bias.

    Example:
        >>> model = build_model("small_cnn", in_channels=1, num_classes=10, width=16)
        >>> model.feature_dim
        64
    """
    entry = MODELS.get(arch) if isinstance(arch, str) else None
    if entry is None:
        close = difflib.get_close_matches(str(arch), list(MODELS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {arch!r}{hint} (valid: {', '.join(sorted(MODELS))})")
    checked = [("in_channels", in_channels), ("num_classes", num_classes)]
    if entry.uses_width:  # the others ignore width
        checked.append(("width", width))
    for name, value in checked:
        check_int(name, value, low=1)
    backbone, feature_dim = entry.builder(in_channels, width)
    return Classifier(backbone, feature_dim, num_classes, bias=bias)
