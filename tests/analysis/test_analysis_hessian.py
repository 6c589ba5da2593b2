"""Hessian-vector products, power iteration and per-class sharpness against explicit Hessians (float64)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _analysis_models import MEAN, STD, onehot_arrays, onehot_classifier
from torch import nn
from torch.func import functional_call

from ccsam.analysis import (
    hessian_vector_product,
    largest_hessian_eigenvalue,
    per_class_sharpness,
    top_hessian_eigenvalue,
)
from ccsam.models import Classifier


def _mlp_problem(seed: int = 0):
    """A 3-4-2 tanh MLP with CE on 6 fixed samples; returns model, loss_fn, params, flat-loss function."""
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    x = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    names = [n for n, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]

    def loss_fn():
        return F.cross_entropy(model(x), y)

    def flat_loss(theta):
        chunks = torch.split(theta, [p.numel() for p in params])
        state = {n: c.view(p.shape) for n, c, p in zip(names, chunks, params, strict=False)}
        return F.cross_entropy(functional_call(model, state, (x,)), y)

    return model, loss_fn, params, flat_loss


def _explicit_hessian(flat_loss, params):
    theta = torch.cat([p.detach().flatten() for p in params])
    return torch.autograd.functional.hessian(flat_loss, theta)


def test_hvp_equals_the_explicit_hessian_times_v():
    _, loss_fn, params, flat_loss = _mlp_problem()
    hessian = _explicit_hessian(flat_loss, params)
    gen = torch.Generator().manual_seed(1)
    v = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
    hv = hessian_vector_product(loss_fn, params, v)
    assert [t.shape for t in hv] == [p.shape for p in params]
    expected = hessian @ torch.cat([t.flatten() for t in v])
    torch.testing.assert_close(torch.cat([t.flatten() for t in hv]), expected, rtol=1e-10, atol=1e-12)


def test_hvp_of_a_loss_linear_in_a_parameter_is_zero_there():
    w = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    u = torch.tensor([3.0], dtype=torch.float64, requires_grad=True)
    hv = hessian_vector_product(lambda: (w**2).sum() + 5 * u.sum(), [w, u], [torch.ones(2), torch.ones(1)])
    assert torch.equal(hv[0], torch.tensor([2.0, 2.0], dtype=torch.float64))
    assert torch.equal(hv[1], torch.zeros(1, dtype=torch.float64))


def test_power_iteration_finds_the_largest_magnitude_eigenvalue_of_an_mlp_hessian():
    _, loss_fn, params, flat_loss = _mlp_problem()
    eigenvalues = torch.linalg.eigvalsh(_explicit_hessian(flat_loss, params))
    expected = float(eigenvalues[eigenvalues.abs().argmax()])
    gen = torch.Generator().manual_seed(0)
    got = top_hessian_eigenvalue(loss_fn, params, iterations=500, tol=1e-12, generator=gen)
    assert got == pytest.approx(expected, rel=1e-4)


def test_power_iteration_keeps_the_sign_of_a_negative_dominant_eigenvalue():
    w = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    coeffs = torch.tensor([-3.0, 1.0, 0.5], dtype=torch.float64)  # H = diag(-6, 2, 1)
    got = top_hessian_eigenvalue(lambda: (coeffs * w**2).sum(), [w], iterations=200, tol=1e-12)
    assert got == pytest.approx(-6.0, rel=1e-6)


def test_largest_eigenvalue_is_algebraic_even_when_a_negative_one_dominates():
    w = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    coeffs = torch.tensor([-3.0, 1.0, 0.5], dtype=torch.float64)  # H = diag(-6, 2, 1): lambda_max = 2
    got = largest_hessian_eigenvalue(lambda: (coeffs * w**2).sum(), [w], iterations=300, tol=0)
    assert got == pytest.approx(2.0, rel=1e-6)
    psd = largest_hessian_eigenvalue(lambda: (coeffs.abs() * w**2).sum(), [w], iterations=300, tol=0)
    assert psd == pytest.approx(6.0, rel=1e-6)  # no negative eigenvalue: one run, the dominant one


def test_largest_eigenvalue_of_an_indefinite_mlp_hessian():
    for seed in range(6):
        _, loss_fn, params, flat_loss = _mlp_problem(seed)
        eigenvalues = torch.linalg.eigvalsh(_explicit_hessian(flat_loss, params))
        got = largest_hessian_eigenvalue(loss_fn, params, iterations=3000, tol=0)
        assert got == pytest.approx(float(eigenvalues.max()), rel=1e-3, abs=1e-6), seed


def test_power_iteration_of_a_linear_loss_is_zero_and_bad_arguments_raise():
    w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    assert top_hessian_eigenvalue(lambda: (2 * w).sum(), [w]) == 0.0
    with pytest.raises(ValueError, match="iterations"):
        top_hessian_eigenvalue(lambda: (w**2).sum(), [w], iterations=0)
    with pytest.raises(ValueError, match="scalar"):
        top_hessian_eigenvalue(lambda: w**2, [w])
    with pytest.raises(ValueError, match="require grad"):
        top_hessian_eigenvalue(lambda: (w**2).sum(), [w.detach()])


def _class_head_eigenvalue(model: Classifier, positions: list[int], c: int) -> float:
    """lambda_max of d^2/d(W, b)^2 of mean CE(W[:, k] + b, c) over the images of class c, explicitly."""
    w, b = model.head.weight.detach(), model.head.bias.detach()
    k = torch.tensor(positions)

    def loss(theta):
        ww = theta[: w.numel()].view(w.shape)
        bb = theta[w.numel() :]
        logits = ww[:, k].T + bb
        return F.cross_entropy(logits, torch.full((len(positions),), c))

    h = torch.autograd.functional.hessian(loss, torch.cat([w.flatten(), b]))
    eig = torch.linalg.eigvalsh(h)
    return float(eig[eig.abs().argmax()])


def test_per_class_sharpness_matches_the_explicit_head_hessian_and_is_none_for_absent_classes():
    model = onehot_classifier(4, 4, seed=2)
    model.train()
    model.backbone.requires_grad_(False)
    model.head.weight.requires_grad_(False)  # switched on for the computation, then back off
    # class 0: images at positions 0, 1, 2; class 1: 3, 0; class 2: none; class 3: 1
    data = onehot_arrays([0, 3, 1, 0, 2, 1], [0, 1, 0, 1, 0, 3], width=4, num_classes=4)
    got = per_class_sharpness(model, data, MEAN, STD, 4, iterations=200, tol=1e-10)
    assert got[2] is None
    for c, positions in ((0, [0, 1, 2]), (1, [3, 0]), (3, [1])):
        assert got[c] > 0  # CE is convex in the logits, which are linear in (W, b): PSD Hessian
        assert got[c] == pytest.approx(_class_head_eigenvalue(model, positions, c), rel=1e-4)
    assert model.training and not model.head.weight.requires_grad and model.head.bias.requires_grad
    # max_per_class keeps the first images of the class, in data order
    first = per_class_sharpness(model, data, MEAN, STD, 4, iterations=200, tol=1e-10, max_per_class=2)
    assert first[0] == pytest.approx(_class_head_eigenvalue(model, [0, 1], 0), rel=1e-4)


def test_per_class_sharpness_over_all_parameters():
    gen = torch.Generator().manual_seed(3)
    model = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Tanh()), 3, 2).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    data = onehot_arrays([0, 1, 2, 3], [0, 0, 0, 0], width=4, num_classes=2)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    head = per_class_sharpness(model, data, MEAN, STD, 2, scope="head", iterations=100)
    full = per_class_sharpness(model, data, MEAN, STD, 2, scope="all", iterations=100)
    assert head[1] is None and full[1] is None
    assert head[0] > 0 and full[0] is not None and abs(full[0]) >= head[0] * (1 - 1e-3)  # head block <= |H|
    assert all(torch.equal(p, before[k]) for k, p in model.named_parameters())
    with pytest.raises(ValueError, match="scope"):
        per_class_sharpness(model, data, MEAN, STD, 2, scope="backbone")
