"""mixup_loss with a row mask (ImbSAM's head / tail split): the parts of a class-weighted loss are split by
weight share, so part(m) + part(~m) is the whole batch loss in value and gradient."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F

from ccsam.data.augment import MixedBatch
from ccsam.losses import (
    BalancedSoftmaxLoss,
    CrossEntropyLoss,
    DeferredReweighting,
    FocalLoss,
    LDAMLoss,
)
from ccsam.training.objectives import ErmObjective, mixup_loss

COUNTS = [50, 20, 8, 3]
STATIC = [1.0, 2.0, 0.5, 4.0]
BETA = 0.99  # visibly non-uniform effective-number weights at these counts
SCALE = 10.0


def _drw_weights() -> torch.Tensor:
    """w_c = (1 - beta) / (1 - beta^{n_c}), rescaled to sum to C (written out, float64)."""
    raw = [(1 - BETA) / (1 - BETA**n) for n in COUNTS]
    return torch.tensor([r * len(COUNTS) / sum(raw) for r in raw], dtype=torch.float64)


def _margins() -> torch.Tensor:
    return torch.tensor([0.5 * (min(COUNTS) / n) ** 0.25 for n in COUNTS], dtype=torch.float64)


def _drw_ce():
    loss = DeferredReweighting(CrossEntropyLoss(), COUNTS, start_epoch=2, beta=BETA)
    loss.set_epoch(3)
    return loss


def _ldam_drw():
    loss = LDAMLoss(COUNTS, scale=SCALE, drw_start_epoch=2, beta=BETA)
    loss.set_epoch(2)
    return loss


def _drw_weighted_ce():
    loss = DeferredReweighting(CrossEntropyLoss(weight=STATIC), COUNTS, start_epoch=0, beta=BETA)
    loss.set_epoch(0)
    return loss


def _nll(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-log softmax(z)_y per row (float64, explicit log-sum-exp)."""
    z = z.double()
    top = z.max(dim=1, keepdim=True).values
    log_p = z - top - (z - top).exp().sum(dim=1, keepdim=True).log()
    return -log_p[torch.arange(len(y)), y]


def _ce_rows(z, y):
    return _nll(z, y)


def _ldam_rows(z, y):  # LDAM on cosine logits: CE of s * (z - m_y e_y)
    return _nll(SCALE * (z.double() - F.one_hot(y, len(COUNTS)) * _margins()), y)


#: name -> (criterion factory, per-row loss l_i, class weights w_c of the weighted mean)
WEIGHTED = {
    "drw(ce)": (_drw_ce, _ce_rows, _drw_weights),
    "ldam-drw": (_ldam_drw, _ldam_rows, _drw_weights),
    "ce(weight)": (lambda: CrossEntropyLoss(weight=STATIC), _ce_rows,
                   lambda: torch.tensor(STATIC, dtype=torch.float64)),
    "drw(ce(weight))": (_drw_weighted_ce, _ce_rows, lambda: torch.tensor(STATIC, dtype=torch.float64) * _drw_weights()),
}

Y_A = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3, 0, 1, 0, 3])
Y_B = torch.tensor([3, 0, 1, 2, 0, 0, 0, 1, 2, 1, 0, 0])  # a partner labelling with other class mixes per part
TAIL = torch.tensor(COUNTS)[Y_A] < 10
MASKS = {
    "tail": TAIL,
    "scattered": torch.tensor([1, 0, 1, 1, 0, 0, 1, 0, 0, 1, 1, 0], dtype=torch.bool),
    "none": torch.zeros(12, dtype=torch.bool),
    "all": torch.ones(12, dtype=torch.bool),
}


def _logits() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.rand(12, 4, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_()  # cosine range


def _batch(lam: float) -> MixedBatch:
    return MixedBatch(torch.zeros(12, 1), Y_A, Y_A if lam == 1.0 else Y_B, lam)


def _reference_part(rows, weights, z, batch, mask):
    """sum_{i in m} [lam w_{ya_i} l(z_i, ya_i) / sum_j w_{ya_j} + (1 - lam) w_{yb_i} l(z_i, yb_i) / sum_j w_{yb_j}]."""
    w = weights()
    keep = mask.double()

    def term(y):
        return (keep * w[y] * rows(z, y)).sum() / w[y].sum()

    return batch.lam * term(batch.targets_a) + (1 - batch.lam) * term(batch.targets_b)


@pytest.mark.parametrize("mask_name", list(MASKS))
@pytest.mark.parametrize("lam", [1.0, 0.6])
@pytest.mark.parametrize("name", list(WEIGHTED))
def test_weighted_parts_are_weight_shares_and_add_up_to_the_batch_loss(name, lam, mask_name):
    make, rows, weights = WEIGHTED[name]
    criterion, z, batch, mask = make(), _logits(), _batch(lam), MASKS[mask_name]

    part, rest = mixup_loss(criterion, z, batch, mask), mixup_loss(criterion, z, batch, ~mask)
    whole = mixup_loss(criterion, z, batch)
    want_part = _reference_part(rows, weights, z, batch, mask)
    want_rest = _reference_part(rows, weights, z, batch, ~mask)

    # each part is its weight share of the weighted mean (independent formula), value and gradient
    for got, want in ((part, want_part), (rest, want_rest)):
        torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-7)
        (g_got,) = torch.autograd.grad(got, z, retain_graph=True, allow_unused=True)
        (g_want,) = torch.autograd.grad(want, z, retain_graph=True)
        g_got = torch.zeros_like(z) if g_got is None else g_got
        torch.testing.assert_close(g_got, g_want, rtol=1e-6, atol=1e-7)
    # and the parts add up to the criterion on the whole batch
    torch.testing.assert_close((part + rest).double(), whole.double(), rtol=1e-6, atol=1e-7)
    (g_sum,) = torch.autograd.grad(part + rest, z, retain_graph=True)
    (g_whole,) = torch.autograd.grad(whole, z)
    torch.testing.assert_close(g_sum, g_whole, rtol=1e-6, atol=1e-7)
    if mask_name == "none":
        assert part.grad_fn is not None and part.item() == 0.0  # an empty part is a zero with a graph


def test_the_weight_share_is_visibly_not_the_count_share():
    """The tests above can fail: under DRW the count share |m| / B (the old split) gives another tail part."""
    criterion, z, batch = _drw_ce(), _logits(), _batch(1.0)
    count_share = criterion(z[TAIL], Y_A[TAIL]) * (TAIL.sum() / TAIL.numel())
    weight_share = mixup_loss(criterion, z, batch, TAIL)
    assert not torch.allclose(count_share, weight_share, rtol=1e-2)


@pytest.mark.parametrize("lam", [1.0, 0.6])
@pytest.mark.parametrize("criterion", [
    CrossEntropyLoss(label_smoothing=0.1, weight=STATIC),  # smoothing keeps the denominator sum_i w_{y_i}
    torch.nn.CrossEntropyLoss(weight=torch.tensor(STATIC, dtype=torch.float64)),
    CrossEntropyLoss(),
    FocalLoss(gamma=1.0, alpha=STATIC),  # alpha scales each l_i; the mean is plain (count share)
    BalancedSoftmaxLoss(COUNTS),
], ids=["ce-smoothed-weighted", "torch-ce-weighted", "ce", "focal-alpha", "balanced-softmax"])
def test_parts_add_up_for_other_criteria(criterion, lam):
    z, batch = _logits(), _batch(lam)
    for mask in MASKS.values():
        parts = mixup_loss(criterion, z, batch, mask) + mixup_loss(criterion, z, batch, ~mask)
        whole = mixup_loss(criterion, z, batch)
        torch.testing.assert_close(parts.double(), whole.double(), rtol=1e-6, atol=1e-7)
        (g_parts,) = torch.autograd.grad(parts, z)
        (g_whole,) = torch.autograd.grad(whole, z)
        torch.testing.assert_close(g_parts, g_whole, rtol=1e-6, atol=1e-7)


def test_a_part_of_zero_weight_is_a_zero_with_a_graph_not_nan():
    criterion = CrossEntropyLoss(weight=[1.0, 1.0, 1.0, 0.0])  # class 3 weighs nothing
    z, batch = _logits(), _batch(1.0)
    only_3 = Y_A == 3
    part = mixup_loss(criterion, z, batch, only_3)
    assert part.item() == 0.0 and part.grad_fn is not None
    (grad,) = torch.autograd.grad(part + mixup_loss(criterion, z, batch, ~only_3), z)
    (want,) = torch.autograd.grad(criterion(z, Y_A), z)
    torch.testing.assert_close(grad, want, rtol=1e-6, atol=1e-7)


def test_unweighted_masked_part_is_the_count_share_bit_for_bit():
    criterion, z = torch.nn.CrossEntropyLoss(), _logits()
    for lam in (1.0, 0.6):
        batch = _batch(lam)
        ya, yb = Y_A[TAIL], batch.targets_b[TAIL]
        loss = criterion(z[TAIL], ya)
        if lam < 1.0:
            loss = lam * loss + (1.0 - lam) * criterion(z[TAIL], yb)
        assert torch.equal(mixup_loss(criterion, z, batch, TAIL), loss * (TAIL.sum() / TAIL.numel()))


def test_imbsam_with_rho_zero_under_drw_is_the_sgd_step_of_the_drw_loss(tmp_path, tiny_overrides):
    """Through the engine: with rho = 0 the perturbation vanishes and ImbSAM's update
    grad L_head(w) + grad L_tail(w) must be SGD on the DRW-weighted batch loss (before the fix the
    head / tail parts were count shares and this step was not the DRW one)."""
    from ccsam.config import resolve_config
    from ccsam.training.run_dir import RunDir
    from ccsam.training.trainer import Trainer

    overrides = tiny_overrides(**{
        "stage1.mixup_alpha": 0.0,
        "stage1.method": "erm",
        "stage1.optimizer": "imbsam",
        "stage1.optimizer.tail_threshold": 10,
        "stage1.optimizer.rho": 0.0,
        "stage1.loss.drw.start_epoch": 0,
    })
    cfg = resolve_config("digits-lt", overrides)
    trainer = Trainer(cfg, RunDir.create(tmp_path / "run", cfg, []), progress=False)
    stage = trainer.enter_stage(1)
    criterion = stage.criterion
    assert isinstance(criterion, DeferredReweighting)
    criterion.set_epoch(0)
    tail_of = trainer.counts < 10
    batch = next(b for b in stage.loader.epoch() if 0 < int(tail_of[b.targets_a].sum()) < len(b.targets_a))
    model, lr, wd = trainer.model, cfg.stage1.lr, cfg.stage1.weight_decay

    twin = copy.deepcopy(model)
    params = list(twin.parameters())
    grads = torch.autograd.grad(criterion(twin(batch.inputs), batch.targets_a), params)
    with torch.no_grad():
        expected = [p - lr * (g + wd * p) for p, g in zip(params, grads, strict=True)]  # first SGD step

    stage.update(model, ErmObjective(criterion), batch, stage.optimizer, contextlib.nullcontext)
    for (name, p), want in zip(model.named_parameters(), expected, strict=True):
        torch.testing.assert_close(p.detach(), want, msg=name)
