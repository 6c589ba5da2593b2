"""Small CNN backbone: shapes for 8x8 / 28x28 / 32x32 inputs, parameter count, validation."""

import pytest
import torch
from torch import nn

from ccsam.models.small_cnn import small_cnn_backbone


@pytest.mark.parametrize(("in_channels", "size"), [(1, 8), (1, 28), (3, 32), (3, 28), (1, 4)])
@pytest.mark.parametrize("width", [4, 8])
def test_feature_shape(in_channels: int, size: int, width: int) -> None:
    backbone = small_cnn_backbone(in_channels, width)
    z = backbone(torch.randn(5, in_channels, size, size))
    assert z.shape == (5, 4 * width)
    assert backbone.feature_dim == 4 * width


def test_default_width_is_32() -> None:
    assert small_cnn_backbone()(torch.randn(2, 1, 28, 28)).shape == (2, 128)


def test_parameter_count_by_hand() -> None:
    # convs (no bias): 9 * (1*8 + 8*16 + 16*32) = 5,832; BN: 2 * (8 + 16 + 32) = 112
    backbone = small_cnn_backbone(1, width=8)
    assert sum(p.numel() for p in backbone.parameters()) == 5_944
    assert sum(isinstance(m, nn.MaxPool2d) for m in backbone.modules()) == 2


def test_backward_reaches_every_parameter() -> None:
    backbone = small_cnn_backbone(1, width=4)
    backbone(torch.randn(4, 1, 8, 8)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone.parameters())


@pytest.mark.parametrize(("in_channels", "width"), [(0, 8), (1, 0), (1, 2.0), (True, 8)])
def test_invalid_arguments_raise(in_channels: object, width: object) -> None:
    with pytest.raises(ValueError, match="positive int"):
        small_cnn_backbone(in_channels, width)  # type: ignore[arg-type]


def test_too_small_input_raises() -> None:
    with pytest.raises(ValueError, match="H, W >= 4"):
        small_cnn_backbone(1, 4)(torch.randn(2, 1, 3, 3))
