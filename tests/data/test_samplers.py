"""Epoch samplers: permutation, class-aware cycling invariants, exact resume."""

from __future__ import annotations

import io

import pytest
import torch

from ccsam.data.profiles import long_tail_counts
from ccsam.data.samplers import ClassAwareSampler, InstanceSampler, build_sampler, list_samplers


def _lt_labels(counts: list[int], seed: int = 0) -> torch.Tensor:
    """Labels with the given per-class counts, in a shuffled order."""
    base = torch.arange(len(counts)).repeat_interleave(torch.tensor(counts))
    return base[torch.randperm(base.numel(), generator=torch.Generator().manual_seed(seed))]


def _round_trip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_instance_sampler_gives_fresh_permutations() -> None:
    sampler = InstanceSampler(50, seed=0)
    first, second = sampler.sample_epoch(), sampler.sample_epoch()
    for order in (first, second):
        assert order.dtype == torch.int64
        assert torch.equal(order.sort().values, torch.arange(50))
    assert not torch.equal(first, second)
    assert len(sampler) == 50
    assert torch.equal(InstanceSampler(50, seed=0).sample_epoch(), first)
    assert not torch.equal(InstanceSampler(50, seed=1).sample_epoch(), first)


def test_instance_sampler_resumes_exactly() -> None:
    sampler = InstanceSampler(30, seed=3)
    sampler.sample_epoch()
    state = _round_trip(sampler.state_dict())
    expected = [sampler.sample_epoch() for _ in range(3)]
    resumed = InstanceSampler(30, seed=99)
    resumed.load_state_dict(state)
    assert all(torch.equal(a, resumed.sample_epoch()) for a in expected)
    with pytest.raises(ValueError, match="30 samples"):
        InstanceSampler(31, seed=3).load_state_dict(state)


def test_samplers_ignore_the_global_torch_seed() -> None:
    labels = _lt_labels([9, 4, 2])
    torch.manual_seed(0)
    a = (InstanceSampler(20, 5).sample_epoch(), ClassAwareSampler(labels, 3, 5).sample_epoch())
    torch.manual_seed(1)
    b = (InstanceSampler(20, 5).sample_epoch(), ClassAwareSampler(labels, 3, 5).sample_epoch())
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("k", [1, 3, 7])
def test_class_aware_epoch_of_k_cycles_has_k_per_class(k: int) -> None:
    counts = [13, 8, 5, 3, 2, 1]
    labels = _lt_labels(counts)
    sampler = ClassAwareSampler(labels, len(counts), seed=0, samples_per_epoch=k * len(counts))
    for _ in range(2):
        order = sampler.sample_epoch()
        assert order.dtype == torch.int64 and len(order) == k * len(counts)
        assert torch.bincount(labels[order], minlength=len(counts)).tolist() == [k] * len(counts)


def _check_cycles(labels: torch.Tensor, stream: torch.Tensor, present: list[int]) -> None:
    """Every aligned block of len(present) class visits holds each present class once; the
    positions drawn from one class form aligned blocks that are permutations of that class."""
    visits = labels[stream]
    width = len(present)
    blocks = visits[: len(visits) // width * width].view(-1, width)
    assert all(sorted(block.tolist()) == present for block in blocks)
    assert len({tuple(block.tolist()) for block in blocks}) > 1  # the order is reshuffled
    for cls in present:
        members = torch.nonzero(labels == cls).flatten().sort().values
        drawn = stream[visits == cls]
        size = len(members)
        for start in range(0, len(drawn) - size + 1, size):
            assert torch.equal(drawn[start : start + size].sort().values, members)
        tail = drawn[len(drawn) // size * size :]
        assert tail.unique().numel() == tail.numel()


def test_class_aware_cycles_persist_across_uneven_epochs() -> None:
    counts = [11, 6, 0, 4, 2, 1]  # class 2 has no samples and is never visited
    labels = _lt_labels(counts, seed=1)
    sampler = ClassAwareSampler(labels, len(counts), seed=4, samples_per_epoch=13)
    stream = torch.cat([sampler.sample_epoch() for _ in range(9)])
    assert stream.min() >= 0 and stream.max() < len(labels)
    _check_cycles(labels, stream, present=[0, 1, 3, 4, 5])


def test_class_aware_default_epoch_length_and_seeding() -> None:
    labels = _lt_labels([20, 7, 3])
    sampler = ClassAwareSampler(labels, 3, seed=0)
    assert len(sampler) == len(labels) == len(sampler.sample_epoch())
    same = ClassAwareSampler(labels, 3, seed=0).sample_epoch()
    assert torch.equal(same, ClassAwareSampler(labels, 3, seed=0).sample_epoch())
    assert not torch.equal(same, ClassAwareSampler(labels, 3, seed=1).sample_epoch())


def test_class_aware_resumes_exactly() -> None:
    labels = _lt_labels([17, 9, 4, 2, 1])
    sampler = ClassAwareSampler(labels, 5, seed=2, samples_per_epoch=11)
    sampler.sample_epoch()
    sampler.sample_epoch()
    state = _round_trip(sampler.state_dict())
    expected = [sampler.sample_epoch() for _ in range(4)]
    resumed = ClassAwareSampler(labels, 5, seed=123, samples_per_epoch=11)
    resumed.sample_epoch()  # its own progress is overwritten by the loaded state
    resumed.load_state_dict(state)
    assert all(torch.equal(a, resumed.sample_epoch()) for a in expected)
    assert resumed.state_dict()["epoch"] == sampler.state_dict()["epoch"] == 6


def test_class_aware_rejects_mismatched_state_and_bad_labels() -> None:
    state = ClassAwareSampler(_lt_labels([5, 3]), 2, seed=0).state_dict()
    with pytest.raises(ValueError, match="different class sizes"):
        ClassAwareSampler(_lt_labels([5, 4]), 2, seed=0).load_state_dict(state)
    with pytest.raises(ValueError, match="'instance'"):
        InstanceSampler(8, seed=0).load_state_dict(state)
    with pytest.raises(ValueError, match="num_classes is 2"):
        ClassAwareSampler(torch.tensor([0, 2]), 2, seed=0)
    with pytest.raises(ValueError, match="empty"):
        ClassAwareSampler(torch.zeros(0, dtype=torch.int64), 2, seed=0)
    with pytest.raises(ValueError, match="samples_per_epoch"):
        ClassAwareSampler(torch.tensor([0, 1]), 2, seed=0, samples_per_epoch=0)


def test_class_aware_handles_cifar100_lt_scale() -> None:
    # Speed sanity without a timer: 12k samples x 100 classes must not take per-sample Python.
    labels = _lt_labels(long_tail_counts(500, 100, 100))
    sampler = ClassAwareSampler(labels, 100, seed=0, samples_per_epoch=12_000)
    for _ in range(3):
        order = sampler.sample_epoch()
        assert torch.bincount(labels[order], minlength=100).tolist() == [120] * 100


def test_build_sampler() -> None:
    labels = _lt_labels([6, 3, 1])
    assert list_samplers() == ["class_aware", "class_balanced", "instance", "progressive", "sqrt"]
    assert isinstance(build_sampler("instance", labels, 3, seed=0), InstanceSampler)
    class_aware = build_sampler("class_aware", labels, 3, seed=0)
    assert isinstance(class_aware, ClassAwareSampler) and len(class_aware) == len(labels)
    with pytest.raises(ValueError, match=r"unknown sampler 'square_root'.*class_aware"):
        build_sampler("square_root", labels, 3, seed=0)  # type: ignore[arg-type]
