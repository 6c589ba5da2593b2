"""ImbSAM (Zhou et al., ICCV 2023) against its update written out here with autograd on a tiny model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ccsam.models.bn import bn_stats_frozen
from ccsam.optim.imbsam import ImbSAM, split_head_tail_loss
from ccsam.optim.sam import SAM

# Classes 0, 1 are head (n_c >= 20), classes 2, 3 tail (n_c < 20) at the paper's eta = 20.
COUNTS = torch.tensor([100, 20, 12, 3])  # n_1 = 20 = eta sits on the boundary: head


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 4)).double()


def _batch(labels: list[int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(len(labels), 3, generator=gen, dtype=torch.float64), torch.tensor(labels)


MIXED = [0, 2, 1, 3, 0, 0, 2, 1]


def _part_losses(model, w, x, y, tail_classes):
    """Oracle split: (1/B) sum over head samples, (1/B) sum over tail samples (written out, not imported)."""
    losses = F.cross_entropy(functional_call(model, w, (x,)), y, reduction="none")
    tail = torch.tensor([int(c) in tail_classes for c in y])
    return losses[~tail].sum() / len(y), losses[tail].sum() / len(y)


def _grads(loss, w, retain_graph=False):
    grads = torch.autograd.grad(loss, list(w.values()), retain_graph=retain_graph, materialize_grads=True)
    return dict(zip(w, grads, strict=False))


def _imbsam_gradient(model, x, y, rho, tail_classes, tail_weight=1.0):
    """g = grad L_head(w) + lambda grad L_tail(w + rho g_t / ||g_t||), g_t = grad L_tail(w) (paper, Alg. 1:
    lambda = 1; the authors' code: 2)."""
    w = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    head, tail = _part_losses(model, w, x, y, tail_classes)
    g_head, g_tail = _grads(head, w, retain_graph=True), _grads(tail, w)
    norm = torch.sqrt(sum((g**2).sum() for g in g_tail.values()))
    w_eps = {n: (w[n] + rho * g_tail[n] / norm).detach().requires_grad_() for n in w}
    g_tail_eps = _grads(_part_losses(model, w_eps, x, y, tail_classes)[1], w_eps)
    return {n: g_head[n] + tail_weight * g_tail_eps[n] for n in w}


def _imbsam_step(model, opt, x, y):
    """The call sequence documented in ImbSAM's docstring."""
    head, tail = opt.split_loss(F.cross_entropy(model(x), y, reduction="none"), y)
    head.backward(retain_graph=True)
    opt.store_head_grad()
    tail.backward()
    opt.first_step(zero_grad=True)
    with bn_stats_frozen(model):
        opt.split_loss(F.cross_entropy(model(x), y, reduction="none"), y)[1].backward()
    opt.second_step(zero_grad=True)


@pytest.mark.parametrize("tail_weight", [1.0, 2.0])
def test_one_imbsam_step_equals_the_update_written_out(tail_weight):
    model, (x, y) = _model(), _batch(MIXED)
    rho, lr = 0.2, 0.1
    # BN in train mode: the oracle's functional call sees the same batch statistics (buffers aside).
    g = _imbsam_gradient(_model(), x, y, rho, {2, 3}, tail_weight)
    expected = {n: p.detach() - lr * g[n] for n, p in model.named_parameters()}
    opt = ImbSAM(model.parameters(), torch.optim.SGD, COUNTS, rho=rho, lr=lr, tail_weight=tail_weight)
    _imbsam_step(model, opt, x, y)
    for n, p in model.named_parameters():
        assert torch.allclose(p, expected[n], rtol=1e-12, atol=1e-14), n


MOMENTUM_CASES = [{"momentum": 0.9, "weight_decay": 1e-3}, {"momentum": 0.9, "nesterov": True}]


@pytest.mark.parametrize("kwargs", MOMENTUM_CASES)
def test_imbsam_with_momentum_equals_sgd_stepped_with_the_imbsam_gradient(kwargs):
    model, reference, (x, y) = _model(), _model(), _batch(MIXED)
    opt = ImbSAM(model.parameters(), torch.optim.SGD, COUNTS, rho=0.1, lr=0.1, **kwargs)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1, **kwargs)
    for _ in range(3):
        g = _imbsam_gradient(reference, x, y, 0.1, {2, 3})
        for n, p in reference.named_parameters():
            p.grad = g[n]
        ref_opt.step()
        _imbsam_step(model, opt, x, y)
    for p, q in zip(model.parameters(), reference.parameters(), strict=False):
        assert torch.allclose(p, q, rtol=1e-12, atol=1e-14)


def test_without_tail_samples_imbsam_equals_sgd_on_the_mean_loss():
    model, reference, (x, y) = _model(), _model(), _batch([0, 1, 1, 0, 0, 1])
    opt = ImbSAM(model.parameters(), torch.optim.SGD, COUNTS, rho=0.5, lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        _imbsam_step(model, opt, x, y)
        F.cross_entropy(reference(x), y).backward()
        ref_opt.step()
        ref_opt.zero_grad()
    for p, q in zip(model.parameters(), reference.parameters(), strict=False):
        assert torch.allclose(p, q, rtol=1e-12, atol=1e-14)


def test_with_eta_above_every_count_imbsam_equals_sam_on_the_whole_loss():
    model, reference, (x, y) = _model(), _model(), _batch(MIXED)
    opt = ImbSAM(model.parameters(), torch.optim.SGD, COUNTS, rho=0.3, tail_threshold=1000, lr=0.1)
    ref_opt = SAM(reference.parameters(), torch.optim.SGD, rho=0.3, lr=0.1)
    for _ in range(2):
        _imbsam_step(model, opt, x, y)
        F.cross_entropy(reference(x), y).backward()
        ref_opt.first_step(zero_grad=True)
        with bn_stats_frozen(reference):
            F.cross_entropy(reference(x), y).backward()
        ref_opt.second_step(zero_grad=True)
    for p, q in zip(model.parameters(), reference.parameters(), strict=False):
        assert torch.allclose(p, q, rtol=1e-12, atol=1e-14)
    # ...and the perturbation did something: plain SGD ends elsewhere.
    sgd_model = _model()
    sgd = torch.optim.SGD(sgd_model.parameters(), lr=0.1)
    for _ in range(2):
        F.cross_entropy(sgd_model(x), y).backward()
        sgd.step()
        sgd.zero_grad()
    assert not torch.allclose(sgd_model[0].weight, model[0].weight, rtol=1e-6, atol=0)


def test_split_head_tail_loss_golden_values():
    losses = torch.tensor([1.0, 2.0, 4.0, 8.0], requires_grad=True)
    labels = torch.tensor([0, 3, 1, 2])
    head, tail = split_head_tail_loss(losses, labels, COUNTS)
    assert head.item() == (1.0 + 4.0) / 4 and tail.item() == (2.0 + 8.0) / 4
    assert (head + tail).item() == losses.mean().item()
    head, tail = split_head_tail_loss(losses, labels, COUNTS, tail_threshold=0)  # no tail class at all
    assert tail.item() == 0.0 and tail.requires_grad
    # A non-finite loss on a head sample does not leak into the tail part.
    head, tail = split_head_tail_loss(torch.tensor([float("inf"), 2.0]), torch.tensor([0, 3]), COUNTS)
    assert float(tail) == 1.0


def test_contract_and_bad_input():
    model, (x, y) = _model(), _batch(MIXED)
    opt = ImbSAM(model.parameters(), torch.optim.SGD, COUNTS, lr=0.1)
    assert opt.tail_classes.tolist() == [False, False, True, True]
    assert opt.base_optimizer.param_groups is opt.param_groups
    with pytest.raises(ValueError):
        split_head_tail_loss(torch.ones(3), torch.zeros(2, dtype=torch.long), COUNTS)
    with pytest.raises(ValueError):
        ImbSAM(model.parameters(), torch.optim.SGD, torch.tensor([[1, 2]]), lr=0.1)
    with pytest.raises(ValueError):
        ImbSAM(model.parameters(), torch.optim.SGD, COUNTS, eta=20, lr=0.1)
    with pytest.raises(ValueError):
        ImbSAM(model.parameters(), torch.optim.SGD, COUNTS, tail_threshold=-1, lr=0.1)
    F.cross_entropy(model(x), y).backward()
    opt.first_step()
    with pytest.raises(RuntimeError):
        opt.store_head_grad()
