"""Heads: cosine formula and bound, tau-normalisation, LWS trainable scales, factory, drop-in use."""

import pytest
import torch
from torch import nn

from ccsam.models import Classifier
from ccsam.models.heads import CosineHead, LWSHead, TauNormHead, build_head, tau_normalized_weight


def test_cosine_head_matches_hand_formula_and_is_bounded() -> None:
    torch.manual_seed(0)
    head = CosineHead(5, 4, scale=16.0)
    f = torch.randn(6, 5) * 10
    out = head(f)
    w = head.weight.detach()
    expected = torch.empty(6, 4)
    for i in range(6):
        for c in range(4):
            expected[i, c] = 16.0 * (f[i] @ w[c]) / (f[i].norm() * w[c].norm())
    assert torch.allclose(out, expected, atol=1e-4)
    assert out.abs().max() <= 16.0 + 1e-4
    assert head.bias is None and head.out_features == 4 and head.in_features == 5
    assert [name for name, _ in head.named_parameters()] == ["weight"]


def test_cosine_head_is_a_drop_in_classifier_head() -> None:
    model = Classifier(nn.Flatten(), feature_dim=6, num_classes=3)
    model.head = build_head("cosine", 6, 3, scale=1.0)
    out = model(torch.randn(2, 2, 3))
    assert out.shape == (2, 3) and out.abs().max() <= 1.0 + 1e-6 and model.num_classes == 3


def test_tau_normalized_weight() -> None:
    w = torch.tensor([[3.0, 4.0], [0.5, 0.0], [0.0, 0.0]])
    assert torch.equal(tau_normalized_weight(w, 0.0), w)
    unit = tau_normalized_weight(w[:2], 1.0)
    assert torch.allclose(unit.norm(dim=1), torch.ones(2))
    half = tau_normalized_weight(w, 0.5)  # ||(3, 4)|| = 5 -> divide by sqrt(5)
    assert torch.allclose(half[0], torch.tensor([3.0, 4.0]) / 5**0.5)
    assert torch.equal(half[2], torch.zeros(2))


def test_tau_norm_head_from_linear() -> None:
    torch.manual_seed(1)
    linear = nn.Linear(5, 3)
    before = linear.weight.detach().clone()
    f = torch.randn(4, 5)
    head = TauNormHead.from_linear(linear, tau=0.7)
    w = linear.weight.detach()
    w_tau = w / w.norm(dim=1, keepdim=True) ** 0.7
    assert torch.allclose(head(f), f @ w_tau.T + linear.bias.detach(), atol=1e-6)
    assert list(head.parameters()) == [] and torch.equal(linear.weight, before)
    no_bias = TauNormHead.from_linear(linear, tau=0.7, keep_bias=False)
    assert no_bias.bias is None and torch.allclose(no_bias(f), f @ w_tau.T, atol=1e-6)
    assert head.weight.shape == (3, 5) and head.out_features == 3


def test_lws_only_scales_train() -> None:
    torch.manual_seed(2)
    linear = nn.Linear(5, 3)
    head = LWSHead(linear)
    f = torch.randn(4, 5)
    base = (f @ linear.weight.T + linear.bias).detach()
    assert torch.allclose(head(f), base, atol=1e-6)
    assert [name for name, _ in head.named_parameters()] == ["scales"]
    head(f).sum().backward()
    assert torch.allclose(head.scales.grad, base.sum(0), atol=1e-5)  # d/df_c sum_i f_c z_ic
    assert linear.weight.grad is None and not head.linear_weight.requires_grad
    with torch.no_grad():
        head.scales.copy_(torch.tensor([2.0, 0.5, 1.0]))
    assert torch.allclose(head(f), base * torch.tensor([2.0, 0.5, 1.0]), atol=1e-6)
    assert torch.allclose(head(f), nn.functional.linear(f, head.weight, head.bias), atol=1e-5)


def test_joint_lws_trains_weights_and_scales_by_value_and_gradient() -> None:
    torch.manual_seed(3)
    linear = nn.Linear(5, 3)
    head = LWSHead(linear, train_linear=True)
    assert [name for name, _ in head.named_parameters()] == ["linear_weight", "linear_bias", "scales"]
    assert head.state_dict().keys() == LWSHead(linear).state_dict().keys()  # checkpoints of either load alike
    with torch.no_grad():
        head.scales.copy_(torch.tensor([1.5, 0.5, 2.0]))
    f, target = torch.randn(4, 5), torch.randn(4, 3)
    loss = ((head(f) - target) ** 2).sum()
    loss.backward()
    # by hand: z = f W^T + b, logits = s * z, dL/dlogits = 2 (logits - t)
    w, b, s = linear.weight.detach(), linear.bias.detach(), torch.tensor([1.5, 0.5, 2.0])
    z = f @ w.T + b
    upstream = 2 * (s * z - target)
    torch.testing.assert_close(loss.detach(), ((s * z - target) ** 2).sum())
    torch.testing.assert_close(head.scales.grad, (upstream * z).sum(0))
    torch.testing.assert_close(head.linear_weight.grad, (upstream * s).T @ f)
    torch.testing.assert_close(head.linear_bias.grad, (upstream * s).sum(0))
    assert linear.weight.grad is None  # a copy: the wrapped layer is left as it was
    torch.testing.assert_close(head.weight, s[:, None] * head.linear_weight.detach())


def test_build_head_and_validation() -> None:
    linear = build_head("linear", 4, 2, bias=False)
    assert isinstance(linear, nn.Linear) and linear.bias is None
    with pytest.raises(ValueError, match="did you mean cosine"):
        build_head("cosin", 4, 2)
    with pytest.raises(ValueError, match="unknown options scale"):
        build_head("linear", 4, 2, scale=2.0)
    with pytest.raises(ValueError, match="scale"):
        CosineHead(4, 2, scale=0.0)
    with pytest.raises(ValueError, match="nn.Linear"):
        LWSHead(CosineHead(4, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tau"):
        tau_normalized_weight(torch.ones(2, 2), float("inf"))
