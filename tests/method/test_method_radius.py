"""ccsam.method.radius: the class-conditional radius rho_c (ccsam-spec §1.1), by hand and through the head
closed form (a rarer class is pushed further)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _method_reference import DIM, TOL

from ccsam.method.head import class_conditional_logits
from ccsam.method.radius import ccsam_radius


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
