"""ccsam.method.stage2: the class weights and adversarial feature losses of CC-SAM stage 2 (ccsam-spec §2.2)
against the per-class loop of the official `train_sample`."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _method_reference import TOL, grads_of, leaves, make_batch, ref_adversarial_losses

from ccsam.method.stage2 import adversarial_class_weights, adversarial_feature_losses


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
