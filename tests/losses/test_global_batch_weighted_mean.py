"""GlobalBatchWeightedMean: the processes' shares of a class-weighted mean average to the global batch's.

The process group is simulated: the batch is cut into two slices ("ranks") and ``rank_mean`` returns the
mean of the slices' weight sums, computed here independently. DDP averages the ranks' gradients, so the
mean of the two slices' losses is what must equal the single-process loss, in value and gradient.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ccsam.data.augment import MixedBatch
from ccsam.losses import CrossEntropyLoss, DeferredReweighting, GlobalBatchWeightedMean, LDAMLoss
from ccsam.training.objectives import mixup_loss

COUNTS = [40, 22, 12, 7, 4]


def _drw(loss: torch.nn.Module) -> DeferredReweighting:
    criterion = DeferredReweighting(loss, COUNTS, start_epoch=0, beta=0.99)
    criterion.set_epoch(0)
    return criterion


class SimulatedRanks:
    """``rank_mean`` of a group whose ranks' weight sums are known in advance, one list per call in turn
    (cycling); counts its calls."""

    def __init__(self, *weight_sums: list[torch.Tensor]) -> None:
        self.means = [torch.stack(sums).mean().reshape(1) for sums in weight_sums]
        self.calls = 0

    def __call__(self, local: torch.Tensor) -> torch.Tensor:
        mean = self.means[self.calls % len(self.means)]
        self.calls += 1
        return mean.clone()


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 5, generator=g, dtype=torch.float64, requires_grad=True)
    targets_a = torch.tensor([0, 0, 0, 1, 0, 2, 0, 1, 3, 4, 4, 2])  # rank 0's half is head-heavy
    targets_b = torch.randint(0, 5, (12,), generator=g)
    return logits, targets_a, targets_b


@pytest.mark.parametrize("make", [lambda: _drw(CrossEntropyLoss()), lambda: LDAMLoss(COUNTS, drw_start_epoch=0)])
def test_rank_shares_average_to_the_global_weighted_mean_by_value_and_gradient(make) -> None:
    criterion = make()
    if isinstance(criterion, LDAMLoss):
        criterion.set_epoch(0)
    weights = criterion.class_weights().double()
    logits, targets, _ = _batch()
    # independent reference: sum_i w_{y_i} l_i / sum_i w_{y_i} over the whole batch
    if isinstance(criterion, LDAMLoss):
        reference = criterion(logits, targets)
    else:
        per_sample = F.cross_entropy(logits, targets, reduction="none")
        reference = (weights[targets] * per_sample).sum() / weights[targets].sum()
    (grad_ref,) = torch.autograd.grad(reference, logits)
    halves = [slice(0, 6), slice(6, 12)]
    ranks = SimulatedRanks([weights[targets[h]].sum() for h in halves])
    shared = GlobalBatchWeightedMean(criterion, ranks)
    averaged = sum(shared(logits[h], targets[h]) for h in halves) / 2
    (grad,) = torch.autograd.grad(averaged, logits)
    assert averaged.item() == pytest.approx(reference.item(), rel=1e-12)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-10, atol=1e-12)
    # the mean of the ranks' own weighted means is what it replaces, and it differs here
    own = sum(criterion(logits[h], targets[h]) for h in halves) / 2
    assert abs(own.item() - reference.item()) > 1e-3


def test_masked_parts_under_mixup_average_to_the_global_parts_and_every_rank_takes_the_collective() -> None:
    criterion = _drw(CrossEntropyLoss())
    weights = criterion.class_weights().double()
    logits, targets_a, targets_b = _batch()
    lam = 0.7
    batch = MixedBatch(torch.zeros(12, 1), targets_a, targets_b, lam)
    tail = targets_a >= 3  # rank 0's half (rows 0-5) has no tail row
    halves = [slice(0, 6), slice(6, 12)]
    reference = {name: mixup_loss(criterion, logits, batch, m) for name, m in (("head", ~tail), ("tail", tail))}
    sums = {t: [weights[v[h]].sum() for h in halves] for t, v in (("a", targets_a), ("b", targets_b))}
    for name, m in (("head", ~tail), ("tail", tail)):
        parts, calls = [], []
        for h in halves:
            ranks = SimulatedRanks(sums["a"], sums["b"])  # mixup_loss asks for y_a's sum, then y_b's
            rank_batch = MixedBatch(batch.inputs[h], targets_a[h], targets_b[h], lam)
            parts.append(mixup_loss(GlobalBatchWeightedMean(criterion, ranks), logits[h], rank_batch, m[h]))
            calls.append(ranks.calls)
        assert calls == [2, 2], name  # also the rank without tail rows takes both collectives
        averaged = (parts[0] + parts[1]) / 2
        (grad,) = torch.autograd.grad(averaged, logits, retain_graph=True)
        (grad_ref,) = torch.autograd.grad(reference[name], logits, retain_graph=True)
        assert averaged.item() == pytest.approx(reference[name].item(), rel=1e-12), name
        torch.testing.assert_close(grad, grad_ref, rtol=1e-10, atol=1e-12)


def test_a_plain_mean_passes_through_without_a_collective() -> None:
    calls = SimulatedRanks([torch.tensor(1.0)])
    logits, targets, _ = _batch()
    shared = GlobalBatchWeightedMean(CrossEntropyLoss(), calls)
    assert torch.equal(shared(logits, targets), CrossEntropyLoss()(logits, targets)) and calls.calls == 0


def test_a_rank_whose_rows_weigh_nothing_adds_zero_not_nan() -> None:
    weighted = CrossEntropyLoss(weight=[0.0, 1.0, 1.0, 1.0, 1.0])
    logits, _, _ = _batch()
    ranks = SimulatedRanks([torch.tensor(0.0), torch.tensor(3.0)])
    loss = GlobalBatchWeightedMean(weighted, ranks)(logits[:3], torch.zeros(3, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and ranks.calls == 1 and torch.isfinite(logits.grad).all()
