"""ccsam.method.head (the head closed form of CC-SAM stage 1) and the input checks of ccsam.method against
plain per-class loops written the way the official code does it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _method_reference import DIM, TOL, grads_of, leaves, make_batch, mixup_targets, ref_class_conditional_logits

from ccsam.method.head import class_conditional_logits
from ccsam.method.radius import ccsam_radius
from ccsam.method.stage2 import adversarial_feature_losses


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
