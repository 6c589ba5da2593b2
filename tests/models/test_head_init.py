"""``model.head_init``: nn.Linear's default vs LDAM-DRW's Kaiming-normal head, and the per-preset choice."""

from __future__ import annotations

import math

import pytest
import torch

from ccsam.config import resolve_config
from ccsam.config.schema import ModelConfig
from ccsam.models import build_model
from ccsam.training.assembly import install_head


def _head_weight(init: str, head: str = "linear", d: int = 64) -> torch.Tensor:
    torch.manual_seed(0)
    model = build_model("small_cnn", in_channels=1, num_classes=1000, width=d // 4)
    assert model.head.in_features == d
    return install_head(model, ModelConfig(arch="small_cnn", head=head, head_init=init)).head.weight.detach()


def test_kaiming_normal_has_std_sqrt_2_over_d() -> None:
    w = _head_weight("kaiming_normal")
    assert w.std().item() == pytest.approx(math.sqrt(2 / 64), rel=0.02)  # 0.177, LDAM-DRW's head
    assert abs(w.mean().item()) < 0.005
    default = _head_weight("default")
    assert default.abs().max().item() <= 1 / math.sqrt(64) + 1e-7  # nn.Linear: U(+-1/sqrt(d)), std 0.072
    assert default.std().item() == pytest.approx(1 / math.sqrt(3 * 64), rel=0.02)


def test_presets_pick_the_reference_init() -> None:
    assert resolve_config("cifar10-lt-ce").model.head_init == "kaiming_normal"
    assert resolve_config("cifar100-lt-balanced-softmax").model.head_init == "kaiming_normal"
    assert resolve_config("cifar10-lt-ccsam-official").model.head_init == "default"
    assert resolve_config("cifar10-lt-ldam-drw").model.head_init == "default"  # cosine head
    assert resolve_config("fmnist-lt-ce").model.head_init == "default"
