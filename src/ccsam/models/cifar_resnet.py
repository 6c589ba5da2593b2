"""CIFAR ResNet-(6n+2) of He et al. (CVPR 2016, section 4.2), as used by LDAM-DRW (Cao et al. 2019).

Layout: 3x3 conv (16) -> BN -> ReLU -> three stages of ``n`` BasicBlocks with 16 / 32 / 64 channels and
strides 1 / 2 / 2 -> global average pooling -> 64-d features. ResNet-32 has ``n = 5``; with a
``Linear(64, 10)`` head it has 464,154 parameters.

Shortcuts are option A of He et al.: parameter-free, the input is subsampled with ``[:, :, ::2, ::2]``
and zero-padded along channels. The padding is split evenly before and after the input channels
(16 -> 8 zeros | 16 channels | 8 zeros), the layout of the LDAM-DRW ResNet, so the channel order of
the later convolutions matches checkpoints trained with that code.

Note: the released CC-SAM code uses a BBN-style 30-layer variant (last stage with 4 blocks); see
``ccsam-spec.md`` section 6 item 2. This module builds the standard network only.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ccsam.checks import check_int

__all__ = ["BasicBlock", "CifarResNet", "PadShortcut", "cifar_resnet_backbone", "kaiming_conv_bn_init_"]


def kaiming_conv_bn_init_(module: nn.Module) -> None:
    """Kaiming-normal (He et al. 2015) convs, ``std = sqrt(2 / fan_in)``; BN weight 1, bias 0; in place.

    ``fan_in`` (not torchvision's ``fan_out``) follows the LDAM-DRW CIFAR ResNet.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class PadShortcut(nn.Module):
    """Option-A shortcut: ``pad_c(x[:, :, ::s, ::s])`` with zero channels split around the input.

    For ``in_channels = c_in`` and ``out_channels = c_out`` the output has ``(c_out - c_in) // 2`` zero
    channels, then the subsampled input, then the remaining zero channels. It has no parameters.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"option-A shortcut cannot shrink channels ({in_channels} -> {out_channels})")
        self.stride = stride
        self.pad_before = (out_channels - in_channels) // 2
        self.pad_after = out_channels - in_channels - self.pad_before

    def forward(self, x: Tensor) -> Tensor:
        """Subsample spatially by ``stride`` and zero-pad channels to ``out_channels``."""
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        # F.pad pads the last dimensions first: (W_left, W_right, H_top, H_bottom, C_before, C_after).
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad=({self.pad_before}, {self.pad_after})"


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` with 3x3 convolutions, no conv bias."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = PadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """Residual block output, see the class docstring."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Feature extractor of the CIFAR ResNet: images ``[B, C, H, W]`` -> features ``[B, 64]``.

    Args:
        blocks_per_stage: ``n`` in ``depth = 6n + 2``.
        in_channels: channels of the input images.
    """

    feature_dim: int = 64

    def __init__(self, blocks_per_stage: int, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, blocks_per_stage, stride=1)
        self.layer2 = self._stage(16, 32, blocks_per_stage, stride=2)
        self.layer3 = self._stage(32, 64, blocks_per_stage, stride=2)
        self.reset_parameters()

    @staticmethod
    def _stage(in_channels: int, out_channels: int, num_blocks: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(in_channels, out_channels, stride)]
        blocks += [BasicBlock(out_channels, out_channels, 1) for _ in range(num_blocks - 1)]
        return nn.Sequential(*blocks)

    def reset_parameters(self) -> None:
        """:func:`kaiming_conv_bn_init_` (the LDAM-DRW CIFAR ResNet's initialisation)."""
        kaiming_conv_bn_init_(self)

    def forward(self, x: Tensor) -> Tensor:
        """Features ``mean_{h,w} layer3(layer2(layer1(relu(bn1(conv1(x))))))``, shape ``[B, 64]``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return out.mean(dim=(2, 3))


def cifar_resnet_backbone(depth: int = 32, in_channels: int = 3) -> nn.Module:
    """Build the CIFAR ResNet-``depth`` feature extractor (features ``[B, 64]``, no classifier).

    ``depth = 6n + 2`` counts the ``6n + 1`` convolutions plus the classifier; ``n`` BasicBlocks per
    stage. Common depths: 20, 32 (the long-tailed CIFAR standard), 44, 56, 110.

    Example:
        >>> import torch
        >>> backbone = cifar_resnet_backbone(32)
        >>> backbone(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 64])
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (e.g. 20, 32, 44, 56), got {depth!r}")
    check_int("in_channels", in_channels, low=1)
    return CifarResNet((depth - 2) // 6, in_channels)
