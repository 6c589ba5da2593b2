"""CIFAR ResNet: parameter counts, depth semantics, option-A shortcuts, init, block algebra, golden logits."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ccsam.models.cifar_resnet import BasicBlock, PadShortcut, cifar_resnet_backbone


def _num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _resnet_params_by_hand(n: int, num_classes: int = 10) -> int:
    """Count written out from the architecture (3x3 convs without bias, BN = 2 params per channel).

    stem: 3*16*9 + 2*16 = 464
    stage 1, each block: 2*(16*16*9) + 2*(2*16) = 4,672
    stage 2: first block 16*32*9 + 32*32*9 + 2*(2*32) = 13,952; others 2*(32*32*9) + 128 = 18,560
    stage 3: first block 32*64*9 + 64*64*9 + 2*(2*64) = 55,552; others 2*(64*64*9) + 256 = 73,984
    head: 64*C + C
    """
    return 464 + 4_672 * n + 13_952 + 18_560 * (n - 1) + 55_552 + 73_984 * (n - 1) + 65 * num_classes


@pytest.mark.parametrize(
    ("depth", "expected"),
    # 464,154 is the published ResNet-32 (+ Linear(64, 10)) count; the others are the 0.27M / 0.66M /
    # 0.85M of He et al. Table 6.
    [(20, 269_722), (32, 464_154), (44, 658_586), (56, 853_018)],
)
def test_parameter_count_with_10_class_head(depth: int, expected: int) -> None:
    backbone = cifar_resnet_backbone(depth)
    n = (depth - 2) // 6
    assert _resnet_params_by_hand(n) == expected
    assert _num_params(backbone) + 64 * 10 + 10 == expected


@pytest.mark.parametrize("depth", [8, 20, 32, 44, 56])
def test_depth_counts_weight_layers(depth: int) -> None:
    backbone = cifar_resnet_backbone(depth)
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    blocks = [m for m in backbone.modules() if isinstance(m, BasicBlock)]
    assert len(convs) + 1 == depth  # + the linear classifier
    assert len(blocks) == 3 * (depth - 2) // 6


@pytest.mark.parametrize("depth", [30, 33, 2, 0, -4, 32.0, "32", True])
def test_invalid_depth_raises(depth: object) -> None:
    with pytest.raises(ValueError, match="6n\\+2"):
        cifar_resnet_backbone(depth)  # type: ignore[arg-type]


@pytest.mark.parametrize("in_channels", [0, -1, 2.5])
def test_invalid_in_channels_raises(in_channels: object) -> None:
    with pytest.raises(ValueError, match="in_channels"):
        cifar_resnet_backbone(32, in_channels)  # type: ignore[arg-type]


@pytest.mark.parametrize(("in_channels", "size"), [(3, 32), (1, 28), (3, 16)])
def test_feature_shape(in_channels: int, size: int) -> None:
    backbone = cifar_resnet_backbone(20, in_channels=in_channels)
    z = backbone(torch.randn(3, in_channels, size, size))
    assert z.shape == (3, 64)


def test_option_a_shortcut_is_parameter_free_and_zero_pads() -> None:
    block = BasicBlock(16, 32, stride=2)
    assert isinstance(block.shortcut, PadShortcut)
    assert _num_params(block.shortcut) == 0 and len(list(block.shortcut.buffers())) == 0
    x = torch.arange(16 * 4 * 4, dtype=torch.float32).reshape(1, 16, 4, 4)
    out = block.shortcut(x)
    assert out.shape == (1, 32, 2, 2)
    # 16 missing channels split 8 before / 8 after; x[c, h, w] = 16c + 4h + w, kept at even h, w.
    assert torch.equal(out[0, :8], torch.zeros(8, 2, 2))
    assert torch.equal(out[0, 24:], torch.zeros(8, 2, 2))
    expected = torch.tensor([[[16.0 * c + 4 * h + w for w in (0, 2)] for h in (0, 2)] for c in range(16)])
    assert torch.equal(out[0, 8:24], expected)


def test_same_shape_blocks_use_identity_shortcut() -> None:
    backbone = cifar_resnet_backbone(32)
    pads = [m for m in backbone.modules() if isinstance(m, PadShortcut)]
    blocks = [m for m in backbone.modules() if isinstance(m, BasicBlock)]
    identities = [b for b in blocks if isinstance(b.shortcut, nn.Identity)]
    assert len(pads) == 2  # only the first block of stages 2 and 3 changes shape
    assert len(identities) == 13


def test_basic_block_matches_written_out_formula() -> None:
    torch.manual_seed(0)
    block = BasicBlock(16, 32, stride=2)
    for bn in (block.bn1, block.bn2):  # non-trivial BN statistics so eval mode is not the identity
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    block.eval()
    x = torch.randn(2, 16, 8, 8)

    def bn(t: torch.Tensor, m: nn.BatchNorm2d) -> torch.Tensor:
        shape = (1, -1, 1, 1)
        scale = m.weight.view(shape) / torch.sqrt(m.running_var.view(shape) + m.eps)
        return (t - m.running_mean.view(shape)) * scale + m.bias.view(shape)

    h = torch.relu(bn(F.conv2d(x, block.conv1.weight, stride=2, padding=1), block.bn1))
    h = bn(F.conv2d(h, block.conv2.weight, padding=1), block.bn2)
    shortcut = torch.cat([torch.zeros(2, 8, 4, 4), x[:, :, ::2, ::2], torch.zeros(2, 8, 4, 4)], dim=1)
    expected = torch.relu(h + shortcut)
    with torch.no_grad():
        assert torch.allclose(block(x), expected, atol=1e-5)


def test_init_is_kaiming_normal_fan_in_and_bn_is_identity() -> None:
    torch.manual_seed(0)
    backbone = cifar_resnet_backbone(32)
    conv = backbone.layer2[0].conv1  # 16 -> 32: fan_in = 144 (std 0.118) differs from fan_out = 288 (0.083)
    std = conv.weight.std().item()
    assert std == pytest.approx(math.sqrt(2 / 144), rel=0.05)
    assert conv.weight.mean().abs().item() < 0.01
    for m in backbone.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
        if isinstance(m, nn.Conv2d):
            assert m.bias is None


def test_golden_logits_on_seeded_input() -> None:
    """Regression guard: values recorded from this implementation (torch 2.14, CPU), eval mode."""
    from ccsam.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet32", in_channels=3, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    expected = torch.tensor(
        [
            [-183.8208, -18.4704, -172.0909, -81.8654, -37.7622],
            [76.5965, -109.5093, 71.0056, 72.7738, -125.2883],
            [-175.5009, -14.1801, -170.5209, -72.4327, -40.3213],
            [69.7171, -98.6801, 66.7998, 69.992, -116.4485],
        ]
    ).reshape(2, 10)
    with torch.no_grad():
        assert torch.allclose(model(x), expected, rtol=1e-4, atol=1e-3)
