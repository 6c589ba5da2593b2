"""ImageNet-style ResNets built by torchvision, as feature extractors for the large long-tailed sets.

The networks are torchvision's own (``torchvision.models.ResNet`` and its builders), so their
parameter names are torchvision's and ImageNet weights saved from torchvision load without renaming
(see :mod:`ccsam.models.pretrained`). torchvision's classifier ``fc`` is replaced by ``nn.Identity``:
the backbone returns the pooled ``[B, d]`` features and the ccsam head (linear, cosine, tau-norm, LWS)
sits on top in :class:`ccsam.models.Classifier`.

=====================  ================================  ======  =========================================
name                   blocks                            ``d``   used by
=====================  ================================  ======  =========================================
``resnet10``           BasicBlock ``[1, 1, 1, 1]``        512    OLTR / decoupling ImageNet-LT baseline
``resnet50``           Bottleneck ``[3, 4, 6, 3]``       2048    ImageNet-LT, iNaturalist 2018
``resnext50_32x4d``    Bottleneck ``[3, 4, 6, 3]``, 32x4d  2048    ImageNet-LT
``resnet152``          Bottleneck ``[3, 8, 36, 3]``      2048    Places-LT (from ImageNet weights)
=====================  ================================  ======  =========================================
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision.models import resnet as tv_resnet

__all__ = ["TORCHVISION_RESNETS", "torchvision_resnet_backbone"]


def _resnet10(**kwargs: object) -> tv_resnet.ResNet:
    # torchvision has no ResNet-10 builder; the ResNet class with one BasicBlock per stage is the
    # network of Liu et al. (OLTR, 2019) and Kang et al. (decoupling, 2020).
    return tv_resnet.ResNet(tv_resnet.BasicBlock, [1, 1, 1, 1], **kwargs)  # type: ignore[arg-type]


#: name -> torchvision builder (called with ``weights=None``; ``resnet10`` takes no ``weights``).
TORCHVISION_RESNETS: dict[str, Callable[..., tv_resnet.ResNet]] = {
    "resnet10": _resnet10,
    "resnet50": tv_resnet.resnet50,
    "resnext50_32x4d": tv_resnet.resnext50_32x4d,
    "resnet152": tv_resnet.resnet152,
}


def torchvision_resnet_backbone(arch: str, in_channels: int = 3) -> tuple[tv_resnet.ResNet, int]:
    """Build torchvision's ``arch`` with random weights and ``fc = nn.Identity()``; return it and ``d``.

    The backbone maps ``[B, in_channels, H, W]`` images (any ``H, W >= 32``) to ``[B, d]`` features,
    ``d = fc.in_features`` of the torchvision network (512 for ``resnet10``, 2048 otherwise).
    For ``in_channels != 3`` the 7x7 stem convolution is rebuilt for that many channels (ImageNet
    weights then no longer fit it). Weights follow torchvision's initialisation (Kaiming-normal
    ``fan_out`` convs, BN weight 1 / bias 0); seed torch's global RNG for a reproducible draw.

    Example:
        >>> import torch
        >>> backbone, d = torchvision_resnet_backbone("resnet10")
        >>> backbone(torch.zeros(2, 3, 32, 32)).shape, d
        (torch.Size([2, 512]), 512)
    """
    if arch not in TORCHVISION_RESNETS:
        raise ValueError(f"unknown torchvision ResNet {arch!r} (valid: {', '.join(TORCHVISION_RESNETS)})")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
    builder = TORCHVISION_RESNETS[arch]
    net = builder() if arch == "resnet10" else builder(weights=None)
    if in_channels != 3:
        old = net.conv1
        net.conv1 = nn.Conv2d(in_channels, old.out_channels, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # torchvision's init
    feature_dim = net.fc.in_features
    net.fc = nn.Identity()  # type: ignore[assignment]
    return net, feature_dim
