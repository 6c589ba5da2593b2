"""CCSAM for users' own loops: the stage-1 loss written out, base-optimiser semantics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ccsam.functional import class_conditional_logits
from ccsam.models import build_model
from ccsam.optim import CCSAM

COUNTS = torch.tensor([40.0, 12.0, 3.0])


def _setup():
    torch.manual_seed(0)
    model = build_model("small_cnn", in_channels=1, num_classes=3, width=4).double()
    x = torch.randn(10, 1, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 0, 1])
    return model, x, y


def test_loss_is_the_written_out_stage1_objective_with_and_without_mixup():
    model, x, y = _setup()
    beta, s = 0.4, 0.05
    opt = CCSAM(model.parameters(), torch.optim.SGD, head=model.head, class_counts=COUNTS, noise_scale=s,
                flat_ratio=beta, lr=0.1)
    z = model.features(x)
    soft = 0.3 * F.one_hot(y, 3).double() + 0.7 * F.one_hot(y.roll(2), 3).double()
    for targets in (None, soft):
        clean = F.cross_entropy(model.head(z), y if targets is None else targets)
        perturbed = class_conditional_logits(z, model.head.weight, model.head.bias, y, COUNTS, noise_scale=s,
                                             soft_targets=targets)
        expected = (1 - beta) * clean + beta * F.cross_entropy(perturbed, y)
        torch.testing.assert_close(opt.loss(z, y, soft_targets=targets), expected)
        assert not torch.allclose(perturbed, model.head(z))  # the perturbation is visible at this scale


def test_step_is_the_base_optimiser_step_and_state_is_shared():
    model, x, y = _setup()
    twin = build_model("small_cnn", in_channels=1, num_classes=3, width=4).double()
    twin.load_state_dict(model.state_dict())
    opt = CCSAM(model.parameters(), torch.optim.SGD, head=model.head, class_counts=COUNTS, lr=0.1, momentum=0.9)
    sgd = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    twin_obj = CCSAM(twin.parameters(), torch.optim.SGD, head=twin.head, class_counts=COUNTS, lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        opt.loss(model.features(x), y).backward()
        opt.step()
        sgd.zero_grad()
        twin_obj.loss(twin.features(x), y).backward()
        sgd.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=False):
        torch.testing.assert_close(a, b)
    assert opt.param_groups is opt.base_optimizer.param_groups
    state = opt.state_dict()
    fresh = CCSAM(model.parameters(), torch.optim.SGD, head=model.head, class_counts=COUNTS, lr=0.5, momentum=0.9)
    fresh.load_state_dict(state)
    assert fresh.param_groups[0]["lr"] == 0.1 and fresh.param_groups is fresh.base_optimizer.param_groups


def test_bad_arguments_raise_value_errors():
    model, _, _ = _setup()
    with pytest.raises(ValueError, match="flat_ratio"):
        CCSAM(model.parameters(), torch.optim.SGD, head=model.head, class_counts=COUNTS, flat_ratio=2.0, lr=0.1)
    with pytest.raises(ValueError, match="linear classifier"):
        CCSAM(model.parameters(), torch.optim.SGD, head=torch.nn.ReLU(), class_counts=COUNTS, lr=0.1)
