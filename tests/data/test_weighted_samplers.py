"""Class-conditional with-replacement samplers (Kang et al., ICLR 2020): frequencies, uniformity, resume."""

from __future__ import annotations

import io
import math

import pytest
import torch

from ccsam.data.profiles import long_tail_counts
from ccsam.data.samplers import (
    ClassAwareSampler,
    ClassBalancedSampler,
    InstanceSampler,
    ProgressiveSampler,
    SquareRootSampler,
    build_sampler,
    list_samplers,
)

COUNTS = [400, 100, 25]
SIGMAS = 5.0  # loose: a correct sampler essentially never trips it, a wrong p_c misses by far more


def _lt_labels(counts: list[int], seed: int = 0) -> torch.Tensor:
    """Labels with the given per-class counts, in a shuffled order."""
    base = torch.arange(len(counts)).repeat_interleave(torch.tensor(counts))
    return base[torch.randperm(base.numel(), generator=torch.Generator().manual_seed(seed))]


def _round_trip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _power(counts: list[int], q: float) -> list[float]:
    """Expected p_c = n_c^q / sum_k n_k^q over non-empty classes, computed independently of the library."""
    weights = [n**q if n > 0 else 0.0 for n in counts]
    return [w / sum(weights) for w in weights]


def _assert_frequencies(observed: torch.Tensor, expected: list[float]) -> None:
    """Each class count lies within SIGMAS binomial standard deviations of draws * p_c."""
    draws = int(observed.sum())
    for cls, (count, p) in enumerate(zip(observed.tolist(), expected, strict=True)):
        sigma = math.sqrt(draws * p * (1.0 - p))
        assert abs(count - draws * p) <= SIGMAS * sigma + 1e-9, (cls, count, draws * p, sigma)


@pytest.mark.parametrize(("cls", "q"), [(ClassBalancedSampler, 0.0), (SquareRootSampler, 0.5)])
def test_class_frequencies_follow_n_to_the_q(cls: type, q: float) -> None:
    labels = _lt_labels(COUNTS)
    sampler = cls(labels, len(COUNTS), seed=0, samples_per_epoch=20_000)
    stream = torch.cat([sampler.sample_epoch() for _ in range(5)])
    assert stream.dtype == torch.int64 and len(stream) == 100_000
    assert int(stream.min()) >= 0 and int(stream.max()) < len(labels)
    _assert_frequencies(torch.bincount(labels[stream], minlength=len(COUNTS)), _power(COUNTS, q))


@pytest.mark.parametrize("cls", [ClassBalancedSampler, SquareRootSampler])
def test_instances_are_uniform_within_each_class(cls: type) -> None:
    labels = _lt_labels(COUNTS, seed=1)
    sampler = cls(labels, len(COUNTS), seed=3, samples_per_epoch=20_000)
    stream = torch.cat([sampler.sample_epoch() for _ in range(5)])
    hits = torch.bincount(stream, minlength=len(labels)).to(torch.float64)
    for c in range(len(COUNTS)):
        members = hits[labels == c]
        expected = members.sum() / len(members)
        chi2 = float(((members - expected) ** 2 / expected).sum())
        dof = len(members) - 1
        # chi2 ~ chi-square(dof): mean dof, sd sqrt(2 dof); 6 sd above the mean is a very loose bound.
        assert chi2 < dof + 6.0 * math.sqrt(2.0 * dof), (c, chi2, dof)
        assert bool((members > 0).all())  # every instance of the class is reachable


@pytest.mark.parametrize("cls", [ClassBalancedSampler, SquareRootSampler, ProgressiveSampler])
def test_empty_classes_are_never_drawn(cls: type) -> None:
    counts = [300, 0, 60, 15]
    labels = _lt_labels(counts, seed=2)
    extra = {"total_epochs": 4} if cls is ProgressiveSampler else {}
    sampler = cls(labels, len(counts), seed=0, samples_per_epoch=20_000, **extra)
    stream = torch.cat([sampler.sample_epoch() for _ in range(5)])  # progressive reaches pure CB here
    drawn = torch.bincount(labels[stream], minlength=len(counts))
    assert int(drawn[1]) == 0
    if cls is ClassBalancedSampler:  # the 0^0 = 1 trap would give the empty class a quarter of p
        _assert_frequencies(drawn, _power(counts, 0.0))


def test_progressive_moves_from_instance_to_class_balanced() -> None:
    total = 10
    labels = _lt_labels(COUNTS)
    sampler = ProgressiveSampler(labels, len(COUNTS), seed=0, total_epochs=total, samples_per_epoch=40_000)
    instance_balanced, class_balanced = _power(COUNTS, 1.0), _power(COUNTS, 0.0)

    def mix(t: int) -> list[float]:
        alpha = min(t / total, 1.0)
        pairs = zip(instance_balanced, class_balanced, strict=True)
        return [(1 - alpha) * ib + alpha * cb for ib, cb in pairs]

    per_epoch = [torch.bincount(labels[sampler.sample_epoch()], minlength=3) for _ in range(total + 3)]
    _assert_frequencies(per_epoch[0], instance_balanced)  # t = 0: pure instance-balanced
    average = [(ib + cb) / 2 for ib, cb in zip(instance_balanced, class_balanced, strict=True)]
    _assert_frequencies(per_epoch[total // 2], average)  # t = T/2: the average of the two
    _assert_frequencies(per_epoch[total - 1], mix(total - 1))  # last epoch of the schedule: (T-1)/T of CB
    for t in (total, total + 2):  # t/T clamped to 1: fully class-balanced from t = T on
        _assert_frequencies(per_epoch[t], class_balanced)
    # The bounds are tight enough to tell the phases apart (otherwise the checks above prove nothing).
    with pytest.raises(AssertionError):
        _assert_frequencies(per_epoch[0], average)
    with pytest.raises(AssertionError):
        _assert_frequencies(per_epoch[total - 1], class_balanced)
    assert sampler.epoch == total + 3


@pytest.mark.parametrize("kind", ["class_balanced", "sqrt", "progressive"])
def test_resume_continues_identically(kind: str) -> None:
    labels = _lt_labels([17, 9, 4, 2, 1])
    sampler = build_sampler(kind, labels, 5, seed=2, total_epochs=4)  # type: ignore[arg-type]
    sampler.sample_epoch()
    sampler.sample_epoch()
    state = _round_trip(sampler.state_dict())
    expected = [sampler.sample_epoch() for _ in range(4)]  # crosses t = T for progressive
    resumed = build_sampler(kind, labels, 5, seed=123, total_epochs=9)  # type: ignore[arg-type]
    resumed.sample_epoch()  # its own progress is overwritten by the loaded state
    resumed.load_state_dict(state)
    assert all(torch.equal(a, resumed.sample_epoch()) for a in expected)
    assert resumed.state_dict()["epoch"] == sampler.state_dict()["epoch"] == 6


def test_progressive_resume_restores_the_epoch_counter() -> None:
    # Same generator state, different epoch counter: p_c(t) differs, so the draws must differ.
    labels = _lt_labels(COUNTS)
    sampler = ProgressiveSampler(labels, 3, seed=0, total_epochs=4, samples_per_epoch=2_000)
    state = sampler.state_dict()
    first = sampler.sample_epoch()
    shifted = dict(state, epoch=4)
    other = ProgressiveSampler(labels, 3, seed=0, total_epochs=4, samples_per_epoch=2_000)
    other.load_state_dict(shifted)
    assert not torch.equal(first, other.sample_epoch())


@pytest.mark.parametrize("kind", ["class_balanced", "sqrt", "progressive"])
def test_seeding(kind: str) -> None:
    labels = _lt_labels([20, 7, 3])
    make = lambda seed: build_sampler(kind, labels, 3, seed=seed, total_epochs=5)  # noqa: E731
    torch.manual_seed(0)
    first = make(0).sample_epoch()
    torch.manual_seed(1)  # the global seed plays no part
    assert torch.equal(first, make(0).sample_epoch())
    assert not torch.equal(first, make(1).sample_epoch())
    sampler = make(0)
    assert len(sampler) == len(labels) == len(sampler.sample_epoch())
    assert not torch.equal(sampler.sample_epoch(), first)  # the stream moves on between epochs


def test_rejects_foreign_state_and_bad_input() -> None:
    labels = _lt_labels([5, 3])
    balanced = ClassBalancedSampler(labels, 2, seed=0).state_dict()
    with pytest.raises(ValueError, match="'class_balanced', not 'sqrt'"):
        SquareRootSampler(labels, 2, seed=0).load_state_dict(balanced)
    with pytest.raises(ValueError, match="'class_balanced', not 'progressive'"):
        ProgressiveSampler(labels, 2, seed=0, total_epochs=3).load_state_dict(balanced)
    with pytest.raises(ValueError, match="not 'class_aware'"):
        ClassAwareSampler(labels, 2, seed=0).load_state_dict(balanced)
    with pytest.raises(ValueError, match="'instance', not 'class_balanced'"):
        ClassBalancedSampler(labels, 2, seed=0).load_state_dict(InstanceSampler(8, seed=0).state_dict())
    with pytest.raises(ValueError, match="different class sizes"):
        ClassBalancedSampler(_lt_labels([5, 4]), 2, seed=0).load_state_dict(balanced)
    with pytest.raises(ValueError, match="total_epochs"):
        ProgressiveSampler(labels, 2, seed=0, total_epochs=0)
    with pytest.raises(ValueError, match="num_classes is 2"):
        SquareRootSampler(torch.tensor([0, 2]), 2, seed=0)
    with pytest.raises(ValueError, match="empty"):
        ClassBalancedSampler(torch.zeros(0, dtype=torch.int64), 2, seed=0)
    with pytest.raises(ValueError, match="samples_per_epoch"):
        SquareRootSampler(labels, 2, seed=0, samples_per_epoch=0)
    with pytest.raises(ValueError, match="seed"):
        ClassBalancedSampler(labels, 2, seed=-1)


def test_cifar100_lt_scale_is_vectorised() -> None:
    # Speed sanity without a timer: 12k draws x 100 classes must not take per-sample Python.
    labels = _lt_labels(long_tail_counts(500, 100, 100))
    sampler = ProgressiveSampler(labels, 100, seed=0, total_epochs=200, samples_per_epoch=12_000)
    for _ in range(20):
        order = sampler.sample_epoch()
        assert order.dtype == torch.int64 and len(order) == 12_000


def test_build_sampler_names_and_errors() -> None:
    labels = _lt_labels([6, 3, 1])
    assert list_samplers() == ["class_aware", "class_balanced", "instance", "progressive", "sqrt"]
    expected = {
        "instance": InstanceSampler,
        "class_aware": ClassAwareSampler,
        "class_balanced": ClassBalancedSampler,
        "sqrt": SquareRootSampler,
        "progressive": ProgressiveSampler,
    }
    for name, cls in expected.items():
        sampler = build_sampler(name, labels, 3, seed=0, total_epochs=7)  # type: ignore[arg-type]
        assert type(sampler) is cls and len(sampler) == len(labels)
    progressive = build_sampler("progressive", labels, 3, seed=0, total_epochs=7)
    assert isinstance(progressive, ProgressiveSampler) and progressive.total_epochs == 7
    assert isinstance(build_sampler("sqrt", labels, 3, 0), SquareRootSampler)  # old positional call
    with pytest.raises(ValueError, match="'progressive' needs total_epochs"):
        build_sampler("progressive", labels, 3, seed=0)
    with pytest.raises(ValueError, match=r"unknown sampler 'square_root'.*progressive.*sqrt"):
        build_sampler("square_root", labels, 3, seed=0)  # type: ignore[arg-type]
