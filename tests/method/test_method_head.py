"""ccsam.functional against plain per-class loops written the way the official code does it."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ccsam.functional import (
    adversarial_class_weights,
    adversarial_feature_losses,
    ccsam_radius,
    class_conditional_logits,
)

TOL = {"rtol": 1e-8, "atol": 1e-10}
DIM = 12


# ----------------------------------------------------------------------------- reference loops


def _assemble(rows: list[torch.Tensor], index: list[torch.Tensor], batch: int) -> torch.Tensor:
    """Put per-class row blocks back in batch order (differentiably)."""
    order = torch.cat(index)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(batch)
    return torch.cat(rows)[inverse]


def ref_class_conditional_logits(f, w, b, y, counts, noise_scale, soft_targets=None):
    """One autograd.grad per class, eps by the code's formula, F.linear at the perturbed head."""
    num_classes = w.shape[0]
    q = F.one_hot(y, num_classes).to(f.dtype) if soft_targets is None else soft_targets
    params = [w] if b is None else [w, b]
    k = sum(p.numel() for p in params)
    theta_norm = torch.sqrt(sum(p.detach().square().sum() for p in params)) + 1e-12
    rows, index = [], []
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().squeeze(1)
        clean = F.linear(f[idx], w, b)
        loss_c = (-(q[idx] * F.log_softmax(clean, dim=1)).sum(1)).mean()
        grads = torch.autograd.grad(loss_c, params, retain_graph=True)
        n = max(float(counts[c]) - 1.0, 1.0)
        eps = []
        for g in grads:
            gn = torch.clamp(g.norm(), min=1e-12)
            eps.append(
                (
                    noise_scale * torch.sqrt(theta_norm) / torch.sqrt(gn) / math.sqrt(2) / n**0.25
                    / k**0.25 * math.sqrt(k) * g / gn
                ).detach()
            )
        b_pert = None if b is None else b + eps[1]
        rows.append(F.linear(f[idx], w + eps[0], b_pert))
        index.append(idx)
    return _assemble(rows, index, y.shape[0])


def ref_adversarial_losses(z, w, b, y, counts, div=2.0, step=1.0):
    """One autograd.grad w.r.t. the whole feature matrix per class, as in `train_sample`."""
    counts = torch.as_tensor(counts, dtype=z.dtype)
    weights = torch.log(counts.max() / counts + 0.01) / div
    rows, index = [], []
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().squeeze(1)
        loss_c = F.cross_entropy(F.linear(z, w, b)[idx], y[idx])
        (grad_z,) = torch.autograd.grad(loss_c, z, retain_graph=True)
        z_adv = z + (step * weights[c] * grad_z / torch.clamp(grad_z.norm(), min=1e-12)).detach()
        rows.append(weights[c] * F.cross_entropy(F.linear(z_adv[idx], w, b), y[idx], reduction="none"))
        index.append(idx)
    return _assemble(rows, index, y.shape[0])


# ----------------------------------------------------------------------------- fixtures


def make_batch(num_classes: int, seed: int, *, bias: bool = True, dtype=torch.float64):
    """Batch with a singleton class, a repeated class and an absent class; LT counts with n_0 = 1."""
    gen = torch.Generator().manual_seed(seed)
    batch = 40 if num_classes == 100 else 24
    rest = torch.randint(2, num_classes - 1, (batch - 4,), generator=gen)
    y = torch.cat([torch.tensor([0, 1, 1, 1]), rest])[torch.randperm(batch, generator=gen)]
    f = torch.randn(batch, DIM, generator=gen, dtype=dtype).requires_grad_()
    w = (0.5 * torch.randn(num_classes, DIM, generator=gen, dtype=dtype)).requires_grad_()
    b = (0.3 * torch.randn(num_classes, generator=gen, dtype=dtype)).requires_grad_() if bias else None
    counts = torch.floor(5000 * 0.01 ** (torch.arange(num_classes, dtype=torch.float64) / (num_classes - 1)))
    counts[0] = 1.0  # a class with a single training sample: max(n - 1, 1) branch
    counts[2] = 2.0
    counts = counts.to(torch.int64)
    present = torch.bincount(y, minlength=num_classes)
    assert (present == 1).any() and (present == 0).any() and (present > 1).any()
    return f, w, b, y, counts


def mixup_targets(y: torch.Tensor, num_classes: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + 1)
    lam = float(torch.rand((), generator=gen))
    y_b = y[torch.randperm(y.shape[0], generator=gen)]
    return lam * F.one_hot(y, num_classes).to(dtype) + (1 - lam) * F.one_hot(y_b, num_classes).to(dtype)


def leaves(f, w, b):
    return [f, w] if b is None else [f, w, b]


def grads_of(out: torch.Tensor, tensors, seed: int):
    probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return torch.autograd.grad((out * probe).sum(), tensors)


# ----------------------------------------------------------------------------- class_conditional_logits


@pytest.mark.parametrize("mixup", [False, True], ids=["hard", "mixup"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("noise_scale", [1e-2, 1.0])
@pytest.mark.parametrize("num_classes", [7, 10, 100])
def test_cc_logits_match_per_class_loop(num_classes, noise_scale, bias, mixup):
    f, w, b, y, counts = make_batch(num_classes, seed=num_classes, bias=bias)
    q = mixup_targets(y, num_classes, seed=num_classes) if mixup else None

    out = class_conditional_logits(f, w, b, y, counts, noise_scale=noise_scale, soft_targets=q)
    ref = ref_class_conditional_logits(f, w, b, y, counts, noise_scale, soft_targets=q)
    assert out.dtype == torch.float64 and out.shape == (y.shape[0], num_classes)
    torch.testing.assert_close(out, ref, **TOL)
    # The perturbation is not negligible at these scales, so the parity above is not vacuous.
    assert (out - F.linear(f, w, b)).abs().max() > 1e-3
    for got, want in zip(grads_of(out, leaves(f, w, b), 7), grads_of(ref, leaves(f, w, b), 7), strict=False):
        torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("num_classes", [7, 100])
def test_cc_logits_zero_noise_is_clean(num_classes, bias):
    f, w, b, y, counts = make_batch(num_classes, seed=3, bias=bias)
    out = class_conditional_logits(f, w, b, y, counts, noise_scale=0.0)
    clean = F.linear(f, w, b)
    assert torch.equal(out, clean)
    for got, want in zip(grads_of(out, leaves(f, w, b), 1), grads_of(clean, leaves(f, w, b), 1), strict=False):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_cc_logits_single_class_radius_by_hand():
    """||eps_W|| recovered from the output equals s k^(1/4) sqrt(||theta|| / (2||g||)) max(n-1,1)^(-1/4)."""
    gen = torch.Generator().manual_seed(11)
    num_classes, batch, s, n = 5, 32, 0.1, 37
    f = torch.randn(batch, DIM, generator=gen, dtype=torch.float64)
    w = torch.randn(num_classes, DIM, generator=gen, dtype=torch.float64).requires_grad_()
    y = torch.full((batch,), 2)
    counts = torch.full((num_classes,), 100)
    counts[2] = n

    out = class_conditional_logits(f, w, None, y, counts, noise_scale=s)
    eps_t = torch.linalg.lstsq(f, (out - f @ w.T).detach()).solution  # f eps^T = delta, f full rank
    (g,) = torch.autograd.grad(F.cross_entropy(f @ w.T, y), w)
    k, theta = w.numel(), w.detach().norm() + 1e-12
    radius = s * k**0.25 * torch.sqrt(theta / (2 * g.norm())) * (n - 1) ** -0.25
    torch.testing.assert_close(eps_t.T.norm(), radius, **TOL)
    torch.testing.assert_close(eps_t.T / radius, g / g.norm(), **TOL)  # along the class gradient
    torch.testing.assert_close(ccsam_radius(theta, g.norm(), n, k, s), radius, **TOL)


def test_ccsam_radius_guards():
    # n = 1 and n = 2 share max(n - 1, 1) = 1; zero gradient is floored at 1e-12.
    assert float(ccsam_radius(2.0, 1.0, 1, 16, 1.0)) == pytest.approx(2.0)
    assert float(ccsam_radius(2.0, 1.0, 2, 16, 1.0)) == pytest.approx(2.0)
    assert float(ccsam_radius(2.0, 0.0, 5, 16, 1.0)) == pytest.approx(2 * math.sqrt(1e12) * 4**-0.25)
    with pytest.raises(ValueError, match="noise_scale"):
        ccsam_radius(1.0, 1.0, 5, 16, -1.0)


def test_rarer_class_gets_larger_radius():
    """Two classes with mirrored data have equal gradient norms; the rarer one is pushed further."""
    gen = torch.Generator().manual_seed(5)
    f0 = torch.randn(6, DIM, generator=gen, dtype=torch.float64)
    f = torch.cat([f0, f0])
    y = torch.tensor([0] * 6 + [1] * 6)
    w = torch.randn(4, DIM, generator=gen, dtype=torch.float64)
    w[1] = w[0]  # rows 0 and 1 equal -> the class-1 problem is the class-0 problem with rows swapped
    b = torch.randn(4, generator=gen, dtype=torch.float64)
    b[1] = b[0]
    counts = [5000, 50, 100, 100]
    delta = class_conditional_logits(f, w, b, y, counts, noise_scale=1e-2) - F.linear(f, w, b)
    head, tail = delta[:6].norm(), delta[6:].norm()
    assert tail > 2 * head
    torch.testing.assert_close(tail / head, torch.tensor((4999 / 49) ** 0.25, dtype=torch.float64), **TOL)


def test_cc_logits_float32_and_bfloat16():
    f64, w64, b64, y, counts = make_batch(10, seed=2)
    ref = class_conditional_logits(f64, w64, b64, y, counts, noise_scale=1e-2).detach()
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 5e-2)):
        f = f64.detach().to(dtype).requires_grad_()
        w = w64.detach().to(dtype).requires_grad_()
        b = b64.detach().to(dtype).requires_grad_()
        out = class_conditional_logits(f, w, b, y, counts.tolist(), noise_scale=1e-2)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)
        out.sum().backward()
        assert f.grad.dtype == dtype and torch.isfinite(w.grad.float()).all()


def test_cc_logits_ignore_autocast():
    f, w, b, y, counts = make_batch(10, seed=4, dtype=torch.float32)
    plain = class_conditional_logits(f, w, b, y, counts, noise_scale=1e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = class_conditional_logits(f, w, b, y, counts, noise_scale=1e-2)
    assert under.dtype == torch.float32
    torch.testing.assert_close(under, plain, rtol=0, atol=0)


def test_cc_logits_empty_batch():
    out = class_conditional_logits(
        torch.zeros(0, 3), torch.ones(4, 3), torch.zeros(4), torch.zeros(0, dtype=torch.long), [1, 2, 3, 4],
        noise_scale=1.0,
    )
    assert out.shape == (0, 4)


def _good_args():
    return {
        "features": torch.randn(4, 3),
        "weight": torch.randn(5, 3),
        "bias": torch.randn(5),
        "labels": torch.tensor([0, 1, 4, 4]),
        "class_counts": [10, 9, 8, 7, 6],
    }


BAD_INPUTS = {
    "features_1d": ({"features": torch.randn(4)}, "features"),
    "weight_dim": ({"weight": torch.randn(5, 2)}, "weight"),
    "bias_shape": ({"bias": torch.randn(4)}, "bias"),
    "labels_len": ({"labels": torch.tensor([0, 1, 2])}, "labels"),
    "labels_high": ({"labels": torch.tensor([0, 1, 5, 4])}, "labels"),
    "labels_negative": ({"labels": torch.tensor([0, -1, 2, 4])}, "labels"),
    "labels_float": ({"labels": torch.tensor([0.0, 1.0, 2.0, 4.0])}, "labels"),
    "counts_len": ({"class_counts": [1, 2, 3]}, "class_counts"),
    "counts_negative": ({"class_counts": [10, 9, -8, 7, 6]}, "class_counts"),
    "int_features": ({"features": torch.ones(4, 3, dtype=torch.long)}, "features"),
}


@pytest.mark.parametrize("bad", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_inputs_raise(bad):
    change, word = BAD_INPUTS[bad]
    args = {**_good_args(), **change}
    with pytest.raises(ValueError, match=word):
        class_conditional_logits(**args, noise_scale=1e-2)
    with pytest.raises(ValueError, match=word):
        adversarial_feature_losses(**args)


def test_bad_scalars_raise():
    args = _good_args()
    class_conditional_logits(**args, noise_scale=1e-2)  # the good arguments are accepted
    adversarial_feature_losses(**args)
    with pytest.raises(ValueError, match="noise_scale"):
        class_conditional_logits(**args, noise_scale=-1e-2)
    with pytest.raises(ValueError, match="noise_scale"):
        class_conditional_logits(**args, noise_scale=float("nan"))
    with pytest.raises(ValueError, match="soft_targets"):
        class_conditional_logits(**args, noise_scale=1e-2, soft_targets=torch.rand(4, 4))
    with pytest.raises(ValueError, match="step"):
        adversarial_feature_losses(**args, step=-1.0)
    with pytest.raises(ValueError, match="div"):
        adversarial_feature_losses(**args, div=0.0)
    with pytest.raises(ValueError, match="class_counts"):
        adversarial_feature_losses(**{**args, "class_counts": [10, 9, 0, 7, 6]})


# ----------------------------------------------------------------------------- stage 2


def test_adversarial_class_weights_by_hand():
    weights = adversarial_class_weights([5000, 50])
    assert weights.dtype == torch.float32
    assert weights.tolist() == pytest.approx([math.log(1.01) / 2, math.log(100.01) / 2], rel=1e-6)
    assert weights[1].item() == pytest.approx(2.3026, abs=1e-4)
    # CIFAR-10 IR200 tail (n = 25) and a float64 input that keeps its dtype; div = 1.
    w64 = adversarial_class_weights(torch.tensor([5000.0, 500.0, 25.0], dtype=torch.float64), div=1.0)
    assert w64.dtype == torch.float64
    assert w64.tolist() == pytest.approx([math.log(1.01), math.log(10.01), math.log(200.01)], rel=1e-12)


@pytest.mark.parametrize("step", [1.0, 3.0])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("num_classes", [7, 10, 100])
def test_adversarial_losses_match_per_class_loop(num_classes, bias, step):
    f, w, b, y, counts = make_batch(num_classes, seed=20 + num_classes, bias=bias)
    out = adversarial_feature_losses(f, w, b, y, counts, div=2.0, step=step)
    ref = ref_adversarial_losses(f, w, b, y, counts, div=2.0, step=step)
    assert out.dtype == torch.float64 and out.shape == y.shape
    torch.testing.assert_close(out, ref, **TOL)
    # The feature step matters: the adversarial loss is not the weighted clean loss.
    weights = adversarial_class_weights(counts.double())[y]
    clean = weights * F.cross_entropy(F.linear(f, w, b), y, reduction="none")
    assert (out - clean).abs().max() > 1e-3
    for got, want in zip(grads_of(out, leaves(f, w, b), 9), grads_of(ref, leaves(f, w, b), 9), strict=False):
        torch.testing.assert_close(got, want, **TOL)


def test_adversarial_losses_zero_step_is_weighted_clean_loss():
    f, w, b, y, counts = make_batch(10, seed=8)
    out = adversarial_feature_losses(f, w, b, y, counts, step=0.0)
    weights = adversarial_class_weights(counts.double())[y]
    torch.testing.assert_close(out, weights * F.cross_entropy(F.linear(f, w, b), y, reduction="none"), **TOL)


def test_adversarial_losses_float32_and_bfloat16():
    f64, w64, b64, y, counts = make_batch(10, seed=6)
    ref = adversarial_feature_losses(f64, w64, b64, y, counts).detach()
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 5e-2)):
        f = f64.detach().to(dtype).requires_grad_()
        w = w64.detach().to(dtype).requires_grad_()
        out = adversarial_feature_losses(f, w, b64.detach().to(dtype), y, counts)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)
        out.sum().backward()
        assert f.grad.dtype == dtype and torch.isfinite(w.grad.float()).all()
