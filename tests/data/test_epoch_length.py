"""Epoch length of the resampling samplers (``epoch_samples``), Kang et al.'s class visits of k samples
(``class_visit_samples``), and the number of batches both training loaders make of an epoch."""

from __future__ import annotations

import io

import pytest
import torch

from ccsam.config import resolve_config
from ccsam.config.io import list_presets
from ccsam.data.arrays import ImageArrays
from ccsam.data.dataloader import AugmentedImages, DataLoaderBatches
from ccsam.data.memory_loader import AugmentSpec, InMemoryLoader
from ccsam.data.samplers import ClassAwareSampler, build_sampler, epoch_sample_count
from ccsam.errors import ConfigError
from ccsam.training.run_dir import RunDir
from ccsam.training.trainer import Trainer, train

COUNTS = [13, 8, 0, 5, 2]  # class 2 is empty: C' = 4 classes with samples
N = sum(COUNTS)  # 28
MAX_TIMES_CLASSES = 13 * 4  # 52, Kang et al.'s num_samples = max_c n_c * (classes present)
RESAMPLERS = ["class_aware", "class_balanced", "sqrt", "progressive"]
SETTINGS = [("dataset", N), ("max_class_times_classes", MAX_TIMES_CLASSES), (37, 37), (9, 9)]
BATCH = 4


def _labels(counts: list[int] = COUNTS, seed: int = 0) -> torch.Tensor:
    base = torch.arange(len(counts)).repeat_interleave(torch.tensor(counts))
    return base[torch.randperm(base.numel(), generator=torch.Generator().manual_seed(seed))]


def _sampler(name: str, labels: torch.Tensor, epoch_samples: object, **kwargs: object):
    extra = {"total_epochs": 3} if name == "progressive" else {}
    return build_sampler(name, labels, len(COUNTS), 0, epoch_samples=epoch_samples, **extra, **kwargs)  # type: ignore[arg-type]


def _arrays(labels: torch.Tensor) -> ImageArrays:
    """Images whose pixel (0, 0) is their own position, so a batch tells which samples it holds."""
    images = torch.zeros(len(labels), 1, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(len(labels), dtype=torch.uint8)
    return ImageArrays(images, labels, tuple("abcde"))


SPEC = AugmentSpec("none", 0, (0.0,), (1 / 255,))  # normalise(x) = x: the pixel is the position again


def _loaders(sampler_a, sampler_b, labels: torch.Tensor):
    arrays = _arrays(labels)
    memory = InMemoryLoader(arrays, sampler_a, BATCH, SPEC, 0.0, seed=1)
    workers = DataLoaderBatches(
        AugmentedImages(arrays, SPEC), sampler_b, BATCH, SPEC.mean, SPEC.std, 0.0, 1, torch.device("cpu"),
        num_workers=0,
    )
    return memory, workers


def _positions(batch) -> torch.Tensor:
    return batch.inputs[:, 0, 0, 0].round().to(torch.int64)


def test_epoch_sample_count_formula() -> None:
    labels = _labels()
    assert epoch_sample_count("dataset", labels) == N
    assert epoch_sample_count("max_class_times_classes", labels) == MAX_TIMES_CLASSES
    assert epoch_sample_count(37, labels) == 37
    # ImageNet-LT's class sizes (Liu et al. 2019: max 1280, N = 115,846): Kang et al.'s 1,280,000
    imagenet = torch.tensor([1280] + [115] * 680 + [114] * 319)
    assert int(imagenet.sum()) == 115_846
    assert epoch_sample_count("max_class_times_classes", torch.arange(1000).repeat_interleave(imagenet)) == 1_280_000
    for bad in (0, -3, True, "max", 2.5):
        with pytest.raises(ValueError, match="epoch_samples must be"):
            epoch_sample_count(bad, labels)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", RESAMPLERS)
@pytest.mark.parametrize(("setting", "expected"), SETTINGS)
def test_each_resampler_epoch_and_both_loaders_follow_the_setting(name, setting, expected) -> None:
    labels = _labels()
    sampler = _sampler(name, labels, setting)
    assert len(sampler) == expected
    for _ in range(2):
        order = sampler.sample_epoch()
        assert len(order) == expected and int(order.min()) >= 0 and int(order.max()) < N
    memory, workers = _loaders(_sampler(name, labels, setting), _sampler(name, labels, setting), labels)
    reference = _sampler(name, labels, setting)
    for _ in range(2):  # two epochs: the second continues the sampler's stream
        order = reference.sample_epoch()
        for loader in (memory, workers):
            batches = list(loader.epoch())
            assert len(loader) == len(batches) == expected // BATCH
            got = torch.cat([_positions(b) for b in batches])
            assert torch.equal(got, order[: expected // BATCH * BATCH])  # the sampler's order, whole batches
            assert torch.equal(torch.cat([b.targets_a for b in batches]), labels[got])


def test_in_memory_loader_runs_the_samplers_epoch_longer_and_shorter_than_the_data() -> None:
    """It used to make len(data) // batch batches whatever the sampler said: an IndexError on a shorter
    epoch, a cut-short one on a longer epoch."""
    labels = _labels()
    for samples in (3 * N + 2, N // 2 + 1):
        sampler = ClassAwareSampler(labels, len(COUNTS), seed=0, samples_per_epoch=samples)
        loader = InMemoryLoader(_arrays(labels), sampler, BATCH, SPEC, 0.0, seed=1)
        batches = list(loader.epoch())
        assert len(loader) == len(batches) == samples // BATCH
        assert all(len(b.targets_a) == BATCH for b in batches)


def test_instance_sampling_refuses_another_epoch_length() -> None:
    labels = _labels()
    assert len(build_sampler("instance", labels, len(COUNTS), 0, epoch_samples="dataset")) == N
    for setting in ("max_class_times_classes", 40, N):
        with pytest.raises(ValueError, match="needs a resampling sampler"):
            build_sampler("instance", labels, len(COUNTS), 0, epoch_samples=setting)


@pytest.mark.parametrize("k", [2, 4])
def test_class_visits_of_k_consecutive_samples(k) -> None:
    """Kang et al.'s num_samples_cls: each class visit yields k consecutive samples of its class; the
    visits cycle over the present classes and each class's samples cycle over its positions."""
    labels = _labels()
    present = [c for c, n in enumerate(COUNTS) if n > 0]
    sampler = build_sampler("class_aware", labels, len(COUNTS), 0, epoch_samples=k * len(present) * 6,
                            class_visit_samples=k)
    stream = torch.cat([sampler.sample_epoch() for _ in range(3)])
    visits = labels[stream].view(-1, k)
    assert bool((visits == visits[:, :1]).all())  # one class per visit
    cycles = visits[:, 0].view(-1, len(present))
    assert all(sorted(row.tolist()) == present for row in cycles)
    for cls in present:  # within a class: permutations of its positions, one after another
        drawn = stream[labels[stream] == cls]
        members = torch.nonzero(labels == cls).flatten()
        for start in range(0, len(drawn) - len(members) + 1, len(members)):
            assert torch.equal(drawn[start : start + len(members)].sort().values, members)


def test_class_visit_cut_short_at_the_epoch_end_and_resumed_exactly() -> None:
    labels = _labels()
    sampler = ClassAwareSampler(labels, len(COUNTS), seed=3, samples_per_epoch=10, class_visit_samples=3)
    first = sampler.sample_epoch()
    assert len(first) == 10
    assert bool((labels[first[:9]].view(3, 3) == labels[first[:9]].view(3, 3)[:, :1]).all())
    buffer = io.BytesIO()
    torch.save(sampler.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    expected = [sampler.sample_epoch() for _ in range(3)]
    for order in expected:  # every epoch starts a fresh visit (the cut visit's rest is consumed)
        assert len(order) == 10 and bool((labels[order[:9]].view(3, 3) == labels[order[:9]].view(3, 3)[:, :1]).all())
    resumed = ClassAwareSampler(labels, len(COUNTS), seed=0)
    resumed.load_state_dict(state)
    assert resumed.class_visit_samples == 3 and all(torch.equal(a, resumed.sample_epoch()) for a in expected)
    old = dict(state)
    del old["class_visit_samples"]  # a checkpoint written before the option: one sample per visit
    resumed.load_state_dict(old)
    assert resumed.class_visit_samples == 1


def test_class_visit_samples_is_for_class_aware_only() -> None:
    labels = _labels()
    for name in ("instance", "class_balanced", "sqrt", "progressive"):
        with pytest.raises(ValueError, match="class_visit_samples=4 is for the class_aware sampler"):
            build_sampler(name, labels, len(COUNTS), 0, total_epochs=2, class_visit_samples=4)
    with pytest.raises(ValueError, match="class_visit_samples"):
        ClassAwareSampler(labels, len(COUNTS), seed=0, class_visit_samples=0)


# --- config -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_config_refuses_epoch_samples_with_instance_sampling(stage) -> None:
    with pytest.raises(ConfigError, match=rf"{stage}.epoch_samples=max_class_times_classes needs a resampling"):
        resolve_config("digits-lt", [f"{stage}.sampler=instance", f"{stage}.epoch_samples=max_class_times_classes"])
    with pytest.raises(ConfigError, match=rf"{stage}.class_visit_samples=4 is for {stage}.sampler=class_aware"):
        resolve_config("digits-lt", [f"{stage}.sampler=sqrt", f"{stage}.class_visit_samples=4"])
    cfg = resolve_config("digits-lt", [f"{stage}.sampler=sqrt", f"{stage}.epoch_samples=500"])
    assert getattr(cfg, stage).epoch_samples == 500


@pytest.mark.parametrize("value", ["0", "-2", "true", "max", "2.5", "[1]"])
def test_config_refuses_a_bad_epoch_samples_in_one_line(value) -> None:
    with pytest.raises(ConfigError, match=r"stage2.epoch_samples': must be dataset, max_class_times_classes") as err:
        resolve_config("digits-lt", [f"stage2.epoch_samples={value}"])
    assert "\n" not in str(err.value)


def test_config_refuses_an_epoch_shorter_than_a_batch() -> None:
    with pytest.raises(ConfigError, match="stage2.epoch_samples=10 is less than data.batch_size=64"):
        resolve_config("digits-lt", ["stage2.epoch_samples=10", "data.batch_size=64"])


def test_cifar_and_fmnist_presets_keep_one_pass_epochs() -> None:
    """The CC-SAM code's samplers (datasets/Samplers.py) draw N samples per epoch: these presets must too
    (MiSLAS's class visits of 4 images included)."""
    labels = _labels()
    names = [n for n, _ in list_presets() if n.startswith(("cifar10-", "cifar100-", "fmnist-"))]
    assert len(names) > 30
    for name in names:
        cfg = resolve_config(name)
        for stage in (cfg.stage1, cfg.stage2):
            assert stage.epoch_samples == "dataset", name
            extra = {"total_epochs": 2} if stage.sampler == "progressive" else {}
            sampler = build_sampler(stage.sampler, labels, len(COUNTS), 0, epoch_samples=stage.epoch_samples,
                                    class_visit_samples=stage.class_visit_samples, **extra)
            assert len(sampler) == N, name


@pytest.mark.parametrize("preset", ["imagenet-lt-crt", "places-lt-crt", "inat2018-crt"])
def test_large_scale_crt_follows_kangs_cls_crt_sampler(preset) -> None:
    """config/<data set>/cls_crt.yaml: ClassAwareSampler with num_samples_cls 4, and run_networks.py's epoch
    of N / batch steps (the sampler's max_c n_c * C is cut short)."""
    stage2 = resolve_config(preset).stage2
    assert (stage2.sampler, stage2.class_visit_samples, stage2.epoch_samples) == ("class_aware", 4, "dataset")
    sampler = build_sampler(stage2.sampler, _labels(), len(COUNTS), 0, epoch_samples=stage2.epoch_samples,
                            class_visit_samples=stage2.class_visit_samples)
    assert len(sampler) == N


def test_the_trainer_builds_the_configured_epoch_and_resumes_it_exactly(tmp_path, tiny_overrides) -> None:
    overrides = tiny_overrides(**{
        "stage2.sampler": "class_aware", "stage2.epoch_samples": "max_class_times_classes",
        "stage2.class_visit_samples": 2, "stage1.epochs": 1, "stage2.epochs": 2,
    })
    config = resolve_config("digits-lt", overrides)
    trainer = Trainer(config, RunDir.create(tmp_path / "probe", config, []), progress=False)
    labels = trainer.data.train.labels
    stage = trainer.enter_stage(2)
    samples = int(torch.bincount(labels).max()) * int((torch.bincount(labels) > 0).sum())
    assert samples > len(labels)
    assert len(stage.loader.sampler) == samples and len(stage.loader) == samples // config.data.batch_size
    reference = train(config, RunDir.create(tmp_path / "full", config, []), progress=False)
    run = RunDir.create(tmp_path / "cut", config, [])
    Trainer(config, run, progress=False).fit(stop_at=2)  # stops inside stage 2
    resumed = train(config, RunDir.open(run.path), resume=True, progress=False)
    assert resumed["test"] == reference["test"]
