"""Reference implementations for the tests of :mod:`ccsam.method`: plain per-class loops written the way
the official code does it, and the batches they run on."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

TOL = {"rtol": 1e-8, "atol": 1e-10}
DIM = 12


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
