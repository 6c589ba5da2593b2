"""A small convolutional backbone for fast CPU runs (sklearn digits 8x8, Fashion-MNIST 28x28, 32x32).

Three ``conv3x3 -> BN -> ReLU`` blocks of widths ``w, 2w, 4w`` with 2x2 max-pooling between them and
global average pooling at the end, so any input of at least 4x4 pixels gives ``4w`` features
(8x8 -> 8, 4, 2; 28x28 -> 28, 14, 7; 32x32 -> 32, 16, 8).
"""

from __future__ import annotations

from torch import Tensor, nn

from ccsam.checks import check_int
from ccsam.models.cifar_resnet import kaiming_conv_bn_init_

__all__ = ["SmallCNN", "small_cnn_backbone"]


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(nn.Module):
    """Images ``[B, in_channels, H, W]`` (``H, W >= 4``) -> features ``[B, 4 * width]``."""

    def __init__(self, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        self.feature_dim = 4 * width
        self.layers = nn.Sequential(
            *_conv_bn_relu(in_channels, width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(width, 2 * width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(2 * width, 4 * width),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal convs with ``std = sqrt(2 / fan_in)``; BN weight 1, bias 0 (as the CIFAR ResNets)."""
        kaiming_conv_bn_init_(self)

    def forward(self, x: Tensor) -> Tensor:
        """Features ``mean_{h,w} layers(x)``, shape ``[B, 4 * width]``."""
        if x.dim() != 4 or x.shape[-1] < 4 or x.shape[-2] < 4:
            raise ValueError(f"SmallCNN expects [B, C, H, W] with H, W >= 4, got {tuple(x.shape)}")
        return self.layers(x).mean(dim=(2, 3))


def small_cnn_backbone(in_channels: int = 1, width: int = 32) -> nn.Module:
    """Build the small CNN feature extractor; its ``feature_dim`` attribute is ``4 * width``.

    Example:
        >>> import torch
        >>> small_cnn_backbone(1, width=8)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 32])
    """
    for name, value in (("in_channels", in_channels), ("width", width)):
        check_int(name, value, low=1)
    return SmallCNN(in_channels, width)
