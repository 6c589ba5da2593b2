"""Epoch index samplers over the long-tailed training set (positions ``0..N-1``).

Each sampler owns one ``torch.Generator`` seeded at construction; every draw goes through it,
and ``state_dict`` / ``load_state_dict`` capture it together with any iterator state, so a
resumed run continues the exact index sequence of an uninterrupted one.

Samplers: ``instance`` (a permutation per epoch), ``class_aware`` (cyclic class / instance
iterators), and the class-conditional with-replacement family of Kang et al., ICLR 2020
("Decoupling Representation and Classifier for Long-Tailed Recognition"): ``class_balanced``
(``p_c`` uniform over classes), ``sqrt`` (``p_c`` proportional to ``sqrt(n_c)``) and ``progressive``
(linear interpolation from instance-balanced to class-balanced over the stage).

Epoch length. An epoch of ``instance`` is one pass, ``N`` samples. The resampling samplers draw
``samples_per_epoch`` samples, which :func:`build_sampler` resolves from ``epoch_samples``
(:func:`epoch_sample_count`): ``"dataset"`` is ``N``, the training-set size (the CC-SAM code's
``len(labels)``; the default), ``"max_class_times_classes"`` is ``max_c n_c * C'`` over the ``C'``
classes with samples (``num_samples`` of Kang et al.'s ``data/ClassAwareSampler.py``, used by their cRT
/ LWS configs), and an int is that many samples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol, TypeAlias

import torch

from ccsam.checks import check_int

__all__ = [
    "ClassAwareSampler",
    "ClassBalancedSampler",
    "IndexSampler",
    "InstanceSampler",
    "ProgressiveSampler",
    "SquareRootSampler",
    "EpochSamples",
    "build_sampler",
    "epoch_sample_count",
    "list_samplers",
]

#: How many samples one epoch of a resampling sampler draws: ``"dataset"`` (``N``),
#: ``"max_class_times_classes"`` (``max_c n_c * C'``, Kang et al.) or a positive count.
EpochSamples: TypeAlias = Literal["dataset", "max_class_times_classes"] | int


class IndexSampler(Protocol):
    """What the training loop needs from a sampler: one epoch of indices at a time, resumable."""

    def __len__(self) -> int: ...

    def sample_epoch(self) -> torch.Tensor: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _generator(seed: int) -> torch.Generator:
    check_int("sampler seed", seed, low=0)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def _permutation_rows(rows: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Return ``rows`` independent random permutations of ``0..size-1`` as an int64 ``[rows, size]``."""
    if rows == 1:
        return torch.randperm(size, generator=generator).unsqueeze(0)
    # One batched draw instead of a Python loop of randperm calls; float64 keys make ties
    # (which would still give a valid permutation under a stable sort) vanishingly rare.
    keys = torch.rand(rows, size, generator=generator, dtype=torch.float64)
    return torch.argsort(keys, dim=1, stable=True)


def _check_labels(labels: torch.Tensor, num_classes: int, owner: str) -> torch.Tensor:
    """Validate training labels against ``num_classes``; return them as a CPU int64 tensor."""
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_floating_point():
        raise ValueError("labels must be a 1-D integer tensor of the long-tailed training set")
    check_int("num_classes", num_classes, low=1)
    labels = labels.detach().cpu().to(torch.int64)
    if labels.numel() == 0:
        raise ValueError(f"{owner} needs at least one sample; the label tensor is empty")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(
            f"labels span [{int(labels.min())}, {int(labels.max())}] but num_classes is {num_classes}; "
            "pass the data set's num_classes"
        )
    return labels


def _epoch_length(samples_per_epoch: int | None, num_samples: int) -> int:
    """Resolve ``samples_per_epoch`` (``None`` means one pass worth, ``num_samples``)."""
    samples = num_samples if samples_per_epoch is None else samples_per_epoch
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples_per_epoch must be a positive int or None, got {samples_per_epoch!r}")
    return samples


def epoch_sample_count(epoch_samples: EpochSamples, labels: torch.Tensor) -> int:
    """Samples per epoch for ``epoch_samples`` over the training ``labels``.

    ``"dataset"`` gives ``N = len(labels)``; ``"max_class_times_classes"`` gives ``max_c n_c * C'`` with
    ``C'`` the classes that have at least one sample (Kang et al.'s ``ClassAwareSampler.num_samples``:
    ``max(len(x) for x in cls_data_list) * len(cls_data_list)`` over the labels present); an int is
    returned as is.

    Example:
        >>> labels = torch.tensor([0, 0, 0, 0, 1, 1, 2])  # n_c = [4, 2, 1]
        >>> epoch_sample_count("dataset", labels), epoch_sample_count("max_class_times_classes", labels)
        (7, 12)
    """
    if epoch_samples == "dataset":
        return len(labels)
    if epoch_samples == "max_class_times_classes":
        sizes = torch.bincount(labels.detach().cpu().to(torch.int64))
        return int(sizes.max()) * int((sizes > 0).sum())
    if isinstance(epoch_samples, bool) or not isinstance(epoch_samples, int) or epoch_samples < 1:
        raise ValueError(
            f"epoch_samples must be 'dataset', 'max_class_times_classes' or a positive int, got {epoch_samples!r}"
        )
    return epoch_samples


def _check_kind(state: dict[str, Any], kind: str) -> None:
    if state.get("kind") != kind:
        raise ValueError(
            f"sampler state is for {state.get('kind')!r}, not {kind!r}; load it into the matching sampler"
        )


class InstanceSampler:
    """Uniform sampling without replacement: a fresh random permutation of ``0..N-1`` per epoch.

    Example:
        >>> sampler = InstanceSampler(num_samples=6, seed=0)
        >>> order = sampler.sample_epoch()  # a random int64 permutation of 0..5
        >>> sorted(order.tolist()), order.dtype
        ([0, 1, 2, 3, 4, 5], torch.int64)
    """

    def __init__(self, num_samples: int, seed: int) -> None:
        check_int("num_samples", num_samples, low=1)
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0
        self._generator = _generator(seed)

    def __len__(self) -> int:
        return self.num_samples

    def sample_epoch(self) -> torch.Tensor:
        """Return the next epoch's indices: a random permutation of ``0..num_samples-1`` (int64)."""
        self.epoch += 1
        return torch.randperm(self.num_samples, generator=self._generator)

    def state_dict(self) -> dict[str, Any]:
        """Return the generator state and epoch counter (tensors cloned, safe to ``torch.save``)."""
        return {
            "kind": "instance",
            "num_samples": self.num_samples,
            "seed": self.seed,
            "epoch": self.epoch,
            "generator": self._generator.get_state().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the next :meth:`sample_epoch` continues that sequence."""
        _check_kind(state, "instance")
        if state["num_samples"] != self.num_samples:
            raise ValueError(
                f"sampler state is for {state['num_samples']} samples, this sampler has {self.num_samples}; "
                "rebuild it on the same training split"
            )
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self._generator.set_state(state["generator"].clone())


class ClassAwareSampler:
    """Class-aware sampling (Shen et al. 2016; Kang et al. 2020 decoupling code).

    Classes are visited in a random cyclic order: a shuffled list of the classes with at least one
    sample, reshuffled each time it is exhausted. Each visit yields ``class_visit_samples`` (``k``,
    default 1) consecutive samples from that class's own cyclic iterator (a shuffled list of its
    positions, reshuffled when exhausted): Kang et al.'s ``num_samples_cls``, 4 in their cRT configs.
    Both kinds of iterator persist across epochs; an epoch is ``samples_per_epoch`` samples, i.e.
    ``ceil(samples_per_epoch / k)`` visits whose last one is cut short if ``k`` does not divide it (its
    unused samples are consumed all the same, as in Kang et al.'s generator).

    Example:
        >>> labels = torch.tensor([0, 0, 0, 0, 1, 1, 2])  # the training labels
        >>> sampler = ClassAwareSampler(labels, num_classes=3, seed=0, samples_per_epoch=9)
        >>> order = sampler.sample_epoch()  # int64 positions into labels
        >>> len(order), torch.bincount(labels[order]).tolist()  # each class visited once per cycle
        (9, [3, 3, 3])
        >>> len(ClassAwareSampler(labels, num_classes=3, seed=0))  # default: one pass worth, len(labels)
        7
        >>> pairs = ClassAwareSampler(labels, 3, seed=0, samples_per_epoch=6, class_visit_samples=2)
        >>> labels[pairs.sample_epoch()].view(3, 2).tolist()  # 2 consecutive samples per class visit
        [[2, 2], [0, 0], [1, 1]]
    """

    def __init__(
        self,
        labels: torch.Tensor,
        num_classes: int,
        seed: int,
        samples_per_epoch: int | None = None,
        class_visit_samples: int = 1,
    ) -> None:
        labels = _check_labels(labels, num_classes, "ClassAwareSampler")
        samples = _epoch_length(samples_per_epoch, len(labels))
        check_int("class_visit_samples", class_visit_samples, low=1)
        self.num_classes = num_classes
        self.samples_per_epoch = samples
        self.class_visit_samples = class_visit_samples
        self.seed = seed
        self.epoch = 0
        self._generator = _generator(seed)
        order = torch.argsort(labels, stable=True)
        sizes = torch.bincount(labels, minlength=num_classes)
        self._positions = list(torch.split(order, sizes.tolist()))
        self._present = torch.nonzero(sizes).flatten()
        # Iterators start exhausted, so the first visit shuffles (matching "reshuffle when empty").
        self._class_order = self._present.clone()
        self._class_pointer = len(self._present)
        self._queues = [p.clone() for p in self._positions]
        self._pointers = [len(p) for p in self._positions]

    def __len__(self) -> int:
        return self.samples_per_epoch

    def sample_epoch(self) -> torch.Tensor:
        """Return the next ``samples_per_epoch`` positions (int64), continuing every iterator."""
        self.epoch += 1
        per_visit = self.class_visit_samples
        visits = self._next_classes(-(-self.samples_per_epoch // per_visit))
        if per_visit > 1:
            visits = visits.repeat_interleave(per_visit)
        # Fill the slots of each class, in visit order, from that class's own iterator.
        slots = torch.argsort(visits, stable=True)
        taken = torch.bincount(visits, minlength=self.num_classes).tolist()
        draws = [self._next_positions(c, k) for c, k in enumerate(taken) if k > 0]
        out = torch.empty(len(visits), dtype=torch.int64)
        out[slots] = torch.cat(draws)
        return out[: self.samples_per_epoch]

    def _next_classes(self, count: int) -> torch.Tensor:
        head = self._class_order[self._class_pointer : self._class_pointer + count]
        missing = count - len(head)
        if missing == 0:
            self._class_pointer += count
            return head
        cycle = len(self._present)
        rows = -(-missing // cycle)
        cycles = self._present[_permutation_rows(rows, cycle, self._generator)]
        self._class_order = cycles[-1].clone()
        self._class_pointer = missing - (rows - 1) * cycle
        return torch.cat([head, cycles.flatten()[:missing]])

    def _next_positions(self, cls: int, count: int) -> torch.Tensor:
        queue, pointer = self._queues[cls], self._pointers[cls]
        head = queue[pointer : pointer + count]
        missing = count - len(head)
        if missing == 0:
            self._pointers[cls] = pointer + count
            return head
        positions = self._positions[cls]
        size = len(positions)
        rows = -(-missing // size)
        blocks = positions[_permutation_rows(rows, size, self._generator)]
        self._queues[cls] = blocks[-1].clone()
        self._pointers[cls] = missing - (rows - 1) * size
        return torch.cat([head, blocks.flatten()[:missing]])

    def state_dict(self) -> dict[str, Any]:
        """Return generator and iterator state (tensors cloned, safe to ``torch.save``)."""
        return {
            "kind": "class_aware",
            "num_classes": self.num_classes,
            "samples_per_epoch": self.samples_per_epoch,
            "class_visit_samples": self.class_visit_samples,
            "seed": self.seed,
            "epoch": self.epoch,
            "class_sizes": [len(p) for p in self._positions],
            "generator": self._generator.get_state().clone(),
            "class_order": self._class_order.clone(),
            "class_pointer": self._class_pointer,
            "queues": [q.clone() for q in self._queues],
            "pointers": list(self._pointers),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the next :meth:`sample_epoch` continues that sequence."""
        _check_kind(state, "class_aware")
        sizes = [len(p) for p in self._positions]
        if state["num_classes"] != self.num_classes or list(state["class_sizes"]) != sizes:
            raise ValueError(
                "sampler state was saved for different class sizes than these labels; "
                "rebuild the sampler on the same training split (same split manifest)"
            )
        self.samples_per_epoch = int(state["samples_per_epoch"])
        self.class_visit_samples = int(state.get("class_visit_samples", 1))  # absent before the option existed
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self._generator.set_state(state["generator"].clone())
        self._class_order = state["class_order"].clone().to(torch.int64)
        self._class_pointer = int(state["class_pointer"])
        self._queues = [q.clone().to(torch.int64) for q in state["queues"]]
        self._pointers = [int(p) for p in state["pointers"]]


class _ClassConditionalSampler:
    """Shared machinery: draw classes i.i.d. from ``p_c``, then an instance uniformly within the class.

    One epoch of ``S = samples_per_epoch`` draws, with replacement, is::

        c_i ~ Categorical(p_1, ..., p_C)            (torch.multinomial)
        x_i ~ Uniform{ j : y_j = c_i }              (one batched torch.rand, scaled by n_{c_i})

    so an instance ``j`` of class ``c`` appears with probability ``p_c / n_c`` per draw. Classes with
    ``n_c = 0`` always get ``p_c = 0``. Subclasses define ``p_c`` through :meth:`class_probabilities`,
    which may depend on the epoch counter ``t`` (0 for the first epoch).
    """

    kind: str = ""

    def __init__(
        self, labels: torch.Tensor, num_classes: int, seed: int, samples_per_epoch: int | None = None
    ) -> None:
        labels = _check_labels(labels, num_classes, type(self).__name__)
        self.samples_per_epoch = _epoch_length(samples_per_epoch, len(labels))
        self.num_classes = num_classes
        self.seed = seed
        self.epoch = 0
        self._generator = _generator(seed)
        self._sizes = torch.bincount(labels, minlength=num_classes)  # n_c, int64 [C]
        self._order = torch.argsort(labels, stable=True)  # positions grouped by class
        self._starts = torch.cumsum(self._sizes, 0) - self._sizes  # first slot of each class in _order

    def __len__(self) -> int:
        return self.samples_per_epoch

    @property
    def class_sizes(self) -> list[int]:
        """Per-class training counts ``n_c``."""
        return self._sizes.tolist()

    def _power_probabilities(self, q: float) -> torch.Tensor:
        """``p_c = n_c^q / sum_k n_k^q`` over the classes with ``n_k > 0`` (float64 ``[C]``)."""
        sizes = self._sizes.to(torch.float64)
        weights = torch.where(self._sizes > 0, sizes.pow(q), torch.zeros_like(sizes))
        return weights / weights.sum()

    def class_probabilities(self, epoch: int | None = None) -> torch.Tensor:
        """Return ``p_c`` (float64 ``[C]``) used at ``epoch`` (default: the next epoch drawn)."""
        raise NotImplementedError

    def sample_epoch(self) -> torch.Tensor:
        """Return the next ``samples_per_epoch`` positions (int64), drawn with replacement."""
        probs = self.class_probabilities(self.epoch)
        self.epoch += 1
        count = self.samples_per_epoch
        classes = torch.multinomial(probs, count, replacement=True, generator=self._generator)
        sizes = self._sizes[classes]
        uniform = torch.rand(count, generator=self._generator, dtype=torch.float64)
        within = torch.minimum((uniform * sizes).to(torch.int64), sizes - 1)  # guard the u*n == n edge
        return self._order[self._starts[classes] + within]

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        """Return the generator state and epoch counter (tensors cloned, safe to ``torch.save``)."""
        return {
            "kind": self.kind,
            "num_classes": self.num_classes,
            "samples_per_epoch": self.samples_per_epoch,
            "seed": self.seed,
            "epoch": self.epoch,
            "class_sizes": self.class_sizes,
            "generator": self._generator.get_state().clone(),
            **self._extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the next :meth:`sample_epoch` continues that sequence."""
        _check_kind(state, self.kind)
        if state["num_classes"] != self.num_classes or list(state["class_sizes"]) != self.class_sizes:
            raise ValueError(
                "sampler state was saved for different class sizes than these labels; "
                "rebuild the sampler on the same training split (same split manifest)"
            )
        self._load_extra_state(state)
        self.samples_per_epoch = int(state["samples_per_epoch"])
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self._generator.set_state(state["generator"].clone())


class ClassBalancedSampler(_ClassConditionalSampler):
    """Class-balanced sampling (Kang et al., ICLR 2020, "Decoupling Representation and Classifier").

    ``p_c = n_c^q / sum_k n_k^q`` with ``q = 0``: every non-empty class is drawn with probability
    ``1 / C'`` (``C'`` non-empty classes), then an instance uniformly within it, with replacement.
    Unlike :class:`ClassAwareSampler` the class and instance draws are i.i.d., not cyclic.

    Example:
        >>> labels = torch.tensor([0, 0, 0, 0, 1, 1, 2])  # the training labels
        >>> sampler = ClassBalancedSampler(labels, num_classes=3, seed=0)
        >>> sampler.class_probabilities()
        tensor([0.3333, 0.3333, 0.3333], dtype=torch.float64)
        >>> order = sampler.sample_epoch()  # int64 positions into labels, drawn with replacement
        >>> len(order), order.dtype
        (7, torch.int64)
    """

    kind = "class_balanced"

    def class_probabilities(self, epoch: int | None = None) -> torch.Tensor:
        """Return ``p_c = 1 / C'`` on non-empty classes, 0 elsewhere (float64 ``[C]``)."""
        return self._power_probabilities(0.0)


class SquareRootSampler(_ClassConditionalSampler):
    """Square-root sampling (Mahajan et al. 2018; Kang et al., ICLR 2020 "Decoupling").

    ``p_c = n_c^q / sum_k n_k^q`` with ``q = 1/2``, i.e. ``p_c ∝ sqrt(n_c)``; then an instance
    uniformly within the class, with replacement.

    Example:
        >>> labels = torch.tensor([0, 0, 0, 0, 1, 1, 2])  # the training labels
        >>> sampler = SquareRootSampler(labels, num_classes=3, seed=0)
        >>> sampler.class_probabilities()  # sqrt of [4, 2, 1], normalised
        tensor([0.4531, 0.3204, 0.2265], dtype=torch.float64)
    """

    kind = "sqrt"

    def class_probabilities(self, epoch: int | None = None) -> torch.Tensor:
        """Return ``p_c ∝ sqrt(n_c)`` (float64 ``[C]``)."""
        return self._power_probabilities(0.5)


class ProgressiveSampler(_ClassConditionalSampler):
    """Progressively-balanced sampling (Kang et al., ICLR 2020, "Decoupling Representation and Classifier").

    ``p_c(t) = (1 - t/T) * p_c^IB + (t/T) * p_c^CB`` with ``p_c^IB = n_c / N`` (instance-balanced,
    ``q = 1``) and ``p_c^CB = 1 / C'`` (class-balanced, ``q = 0``); ``t`` is this sampler's epoch
    counter (0 for the first epoch), ``T = total_epochs`` and ``t/T`` is clamped to 1, so epochs
    ``t >= T`` are fully class-balanced. Then an instance uniformly within the class, with replacement.

    Example:
        >>> labels = torch.tensor([0, 0, 0, 0, 1, 1, 2])  # the training labels
        >>> sampler = ProgressiveSampler(labels, num_classes=3, seed=0, total_epochs=2)
        >>> sampler.class_probabilities(0)  # instance-balanced: n_c / N
        tensor([0.5714, 0.2857, 0.1429], dtype=torch.float64)
        >>> sampler.class_probabilities(2)  # t >= T: class-balanced
        tensor([0.3333, 0.3333, 0.3333], dtype=torch.float64)
    """

    kind = "progressive"

    def __init__(
        self,
        labels: torch.Tensor,
        num_classes: int,
        seed: int,
        total_epochs: int,
        samples_per_epoch: int | None = None,
    ) -> None:
        check_int("total_epochs", total_epochs, low=1)
        super().__init__(labels, num_classes, seed, samples_per_epoch)
        self.total_epochs = total_epochs

    def class_probabilities(self, epoch: int | None = None) -> torch.Tensor:
        """Return ``(1 - t/T) p^IB + (t/T) p^CB`` at ``t = epoch`` (default: the next epoch drawn)."""
        t = self.epoch if epoch is None else epoch
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        alpha = min(t / self.total_epochs, 1.0)
        return (1.0 - alpha) * self._power_probabilities(1.0) + alpha * self._power_probabilities(0.0)

    def _extra_state(self) -> dict[str, Any]:
        return {"total_epochs": self.total_epochs}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.total_epochs = int(state["total_epochs"])


SamplerName = Literal["instance", "class_aware", "class_balanced", "sqrt", "progressive"]


def _progressive(
    labels: torch.Tensor, num_classes: int, seed: int, total_epochs: int | None, samples: int, _: int
) -> IndexSampler:
    if total_epochs is None:
        raise ValueError("sampler 'progressive' needs total_epochs (the stage length T); pass total_epochs=")
    return ProgressiveSampler(labels, num_classes, seed, total_epochs, samples)


# The resampling samplers: each builder takes (labels, num_classes, seed, total_epochs, samples per
# epoch, class_visit_samples); only "progressive" uses total_epochs and only "class_aware" the last.
# "instance" (one permutation of the N samples) is built apart.
_RESAMPLERS: dict[str, Callable[[torch.Tensor, int, int, int | None, int, int], IndexSampler]] = {
    "class_aware": lambda labels, classes, seed, _, samples, visit: ClassAwareSampler(
        labels, classes, seed, samples, visit
    ),
    "class_balanced": lambda labels, classes, seed, _, samples, __: ClassBalancedSampler(
        labels, classes, seed, samples
    ),
    "sqrt": lambda labels, classes, seed, _, samples, __: SquareRootSampler(labels, classes, seed, samples),
    "progressive": _progressive,
}


def list_samplers() -> list[str]:
    """Return the sampler names :func:`build_sampler` accepts (sorted)."""
    return sorted([*_RESAMPLERS, "instance"])


def build_sampler(
    name: SamplerName,
    labels: torch.Tensor,
    num_classes: int,
    seed: int,
    *,
    total_epochs: int | None = None,
    epoch_samples: EpochSamples = "dataset",
    class_visit_samples: int = 1,
) -> IndexSampler:
    """Build the sampler called ``name`` over the long-tailed training ``labels``.

    ``total_epochs`` (the stage length ``T``) is required by ``progressive`` and ignored by the others.
    ``epoch_samples`` sets the epoch length of the resampling samplers (:func:`epoch_sample_count`:
    ``"dataset"`` = ``N``, ``"max_class_times_classes"`` = ``max_c n_c * C'``, or a count); ``instance``
    is one permutation of the ``N`` samples and takes only ``"dataset"``. ``class_visit_samples``
    (consecutive samples per class visit, Kang et al.'s ``num_samples_cls``) is for ``class_aware`` only.

    Example:
        >>> labels = torch.tensor([0, 0, 0, 0, 1, 1, 2])  # the training labels
        >>> sampler = build_sampler("class_aware", labels, num_classes=3, seed=0)
        >>> type(sampler).__name__, len(sampler)
        ('ClassAwareSampler', 7)
        >>> len(build_sampler("class_balanced", labels, 3, seed=0, epoch_samples="max_class_times_classes"))
        12
        >>> sampler = build_sampler("progressive", labels, 3, seed=0, total_epochs=200)
        >>> sampler.total_epochs
        200
    """
    if name != "instance" and name not in _RESAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {list_samplers()}")
    check_int("class_visit_samples", class_visit_samples, low=1)
    if class_visit_samples != 1 and name != "class_aware":
        raise ValueError(
            f"class_visit_samples={class_visit_samples} is for the class_aware sampler, not {name!r}; "
            "drop it or use class_aware"
        )
    if name == "instance":
        if epoch_samples != "dataset":
            raise ValueError(
                f"epoch_samples={epoch_samples!r} needs a resampling sampler: instance sampling is one "
                "permutation of the N training samples; use 'dataset' or another sampler"
            )
        return InstanceSampler(len(labels), seed)
    samples = epoch_sample_count(epoch_samples, labels)
    return _RESAMPLERS[name](labels, num_classes, seed, total_epochs, samples, class_visit_samples)
