"""SAM / ASAM perturbation math against formulas written out here (Foret et al. 2021; Kwon et al. 2021)."""

from __future__ import annotations

import math

import pytest
import torch

from ccsam.optim.perturbation import global_grad_norm, sam_epsilon


def _params_with_grads(seed: int = 0, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(3, 4), (4,), (2, 2, 2)]
    params = [torch.randn(shape, generator=gen, dtype=dtype).requires_grad_() for shape in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen, dtype=dtype)
    return params


def test_global_grad_norm_is_the_norm_of_all_gradients_concatenated():
    params = _params_with_grads()
    no_grad = torch.ones(5, dtype=torch.float64, requires_grad=True)  # skipped: .grad is None
    expected = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params]))
    assert torch.allclose(global_grad_norm([*params, no_grad]), expected, rtol=1e-14, atol=0)


def test_adaptive_global_grad_norm_scales_each_gradient_by_abs_w_plus_eta():
    params = _params_with_grads()
    eta = 0.01
    scaled = [((p.detach().abs() + eta) * p.grad).flatten() for p in params]
    expected = torch.linalg.vector_norm(torch.cat(scaled))
    assert torch.allclose(global_grad_norm(params, adaptive=True, eta=eta), expected, rtol=1e-14, atol=0)


def test_grad_norm_of_fp16_gradients_is_accumulated_in_fp32():
    p = torch.zeros(1000, dtype=torch.float16, requires_grad=True)
    p.grad = torch.full((1000,), 300.0, dtype=torch.float16)  # sum of squares 9e7 overflows fp16 (65504)
    norm = global_grad_norm([p])
    assert norm.dtype == torch.float32
    assert math.isclose(float(norm), 300.0 * math.sqrt(1000), rel_tol=1e-6)


def test_sam_epsilon_has_norm_rho_and_the_direction_of_the_gradient():
    params = _params_with_grads(seed=1)
    rho = 0.07
    eps = sam_epsilon(params, rho)
    flat_eps = torch.cat([e.flatten() for e in eps])
    flat_g = torch.cat([p.grad.flatten() for p in params])
    assert math.isclose(float(torch.linalg.vector_norm(flat_eps)), rho, rel_tol=1e-13)
    cosine = torch.nn.functional.cosine_similarity(flat_eps, flat_g, dim=0)
    assert math.isclose(float(cosine), 1.0, rel_tol=1e-13)
    assert torch.allclose(flat_eps, rho * flat_g / torch.linalg.vector_norm(flat_g), rtol=1e-13, atol=0)


def test_sam_epsilon_is_none_where_there_is_no_gradient_and_keeps_dtypes():
    p = torch.ones(3, dtype=torch.float32, requires_grad=True)
    p.grad = torch.tensor([1.0, 2.0, 2.0])
    q = torch.ones(2, requires_grad=True)
    eps = sam_epsilon([p, q], rho=0.3)
    assert eps[1] is None
    assert eps[0].dtype == torch.float32
    assert torch.allclose(eps[0], torch.tensor([0.1, 0.2, 0.2]))  # 0.3 * g / 3


def test_asam_epsilon_matches_the_formula_on_a_hand_example():
    # T_w = |w| + eta; eps = rho * T_w^2 g / ||T_w g||, the norm over both tensors.
    w1 = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    w1.grad = torch.tensor([3.0, 4.0], dtype=torch.float64)
    w2 = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
    w2.grad = torch.tensor([-2.0], dtype=torch.float64)
    rho, eta = 0.1, 0.5
    # T = [1.5, 2.5], [1.0]; T g = [4.5, 10.0], [-2.0]; ||T g||^2 = 20.25 + 100 + 4 = 124.25
    # T^2 g = [2.25 * 3, 6.25 * 4], [1.0 * -2.0] = [6.75, 25.0], [-2.0]
    norm = math.sqrt(124.25)
    e1, e2 = sam_epsilon([w1, w2], rho, adaptive=True, eta=eta)
    expected_e1 = torch.tensor([0.675 / norm, 2.5 / norm], dtype=torch.float64)
    assert torch.allclose(e1, expected_e1, rtol=1e-14, atol=0)
    assert torch.allclose(e2, torch.tensor([-0.2 / norm], dtype=torch.float64), rtol=1e-14, atol=0)
    # ...which lies on the ASAM sphere ||T_w^{-1} eps|| = rho
    scaled = torch.cat([e1 / torch.tensor([1.5, 2.5], dtype=torch.float64), e2 / 1.0])
    assert math.isclose(float(torch.linalg.vector_norm(scaled)), rho, rel_tol=1e-14)


def test_sam_epsilon_is_invariant_to_a_loss_scale():
    params = _params_with_grads(seed=2, dtype=torch.float32)
    eps = sam_epsilon(params, 0.05, adaptive=True, eta=0.01)
    for p in params:
        p.grad.mul_(2.0**16)  # what GradScaler does to gradients
    scaled_eps = sam_epsilon(params, 0.05, adaptive=True, eta=0.01)
    assert all(torch.equal(a, b) for a, b in zip(eps, scaled_eps, strict=False))


def test_non_finite_or_zero_gradients_give_a_zero_perturbation():
    params = _params_with_grads(seed=3, dtype=torch.float32)
    params[0].grad[0, 0] = float("inf")
    params[1].grad[1] = float("nan")
    assert all(torch.equal(e, torch.zeros_like(e)) for e in sam_epsilon(params, 0.05))
    z = torch.ones(3, requires_grad=True)
    z.grad = torch.zeros(3)
    assert torch.equal(sam_epsilon([z], 0.05)[0], torch.zeros(3))


def test_shared_grad_norm_argument_is_used_as_the_denominator():
    params = _params_with_grads(seed=4)
    eps = sam_epsilon(params[:1], 0.5, grad_norm=torch.tensor(2.0, dtype=torch.float64))
    assert torch.allclose(eps[0], 0.25 * params[0].grad, rtol=1e-15, atol=0)


@pytest.mark.parametrize("kwargs", [{"rho": -0.1}, {"rho": float("nan")}, {"rho": 0.1, "eta": -1.0}])
def test_bad_hyper_parameters_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        sam_epsilon(_params_with_grads(), **kwargs)
    if "eta" in kwargs:
        with pytest.raises(ValueError):
            global_grad_norm(_params_with_grads(), adaptive=True, eta=kwargs["eta"])
