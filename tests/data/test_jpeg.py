"""The JPEG pipeline: transforms against torchvision's, every sampler by index, exact resume, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from _jpeg_layouts import HEIGHT, LIST_NAMES, WIDTH, file_overrides, write_list_layout
from torchvision.transforms.v2 import functional as F

from ccsam.config import resolve_config
from ccsam.data import codecs
from ccsam.data.augment import normalize
from ccsam.data.batches import split_batches, train_batches
from ccsam.data.build import build_data
from ccsam.data.image_files import ImageFileError
from ccsam.data.jpeg import (
    EvalTransform,
    ImageFileDataset,
    TrainTransform,
    color_jitter,
    eval_resize_size,
    read_image,
    sample_resized_crop,
)
from ccsam.data.jpeg_gpu import GpuDecode, collate_bytes
from ccsam.data.samplers import build_sampler, list_samplers
from ccsam.errors import ConfigError

SIZE = 16


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_list_layout(tmp_path_factory.mktemp("jpeg") / "imagenet_lt", "imagenet_lt")


def _config(root: Path, **extra: object):
    return resolve_config("digits-lt", file_overrides(root, "imagenet_lt", **extra))


def _loader(root: Path, sampler: str = "instance", seed: int = 0, **extra: object):
    cfg = _config(root, **extra)
    data = build_data(cfg.data)
    kwargs = {"total_epochs": 3} if sampler == "progressive" else {}
    order = build_sampler(sampler, data.train.labels, data.num_classes, seed, **kwargs)
    return data, train_batches(data, order, cfg.data, 0.0, seed, torch.device("cpu"))


def test_decoded_images_are_rgb_uint8_of_the_file_size(root):
    data = build_data(_config(root).data)
    image = read_image(data.train, 0)
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, HEIGHT, WIDTH)


@pytest.mark.skipif(codecs.default_backend() != "torchvision", reason="this torchvision has no image codecs")
def test_the_pipeline_decodes_the_same_pixels_when_pillow_replaces_torchvision_io(root, monkeypatch):
    data = build_data(_config(root).data)
    def inputs() -> list[torch.Tensor]:
        return [b.inputs for b in _loader(root, **{"data.num_workers": 0})[1].epoch()]

    batches = inputs()
    expected = [read_image(data.train, i) for i in range(len(data.train))]
    monkeypatch.setattr(codecs, "default_backend", lambda: "pillow")  # as where torchvision.io is gone
    assert all(torch.equal(read_image(data.train, i), e) for i, e in enumerate(expected))
    assert all(torch.equal(x, y) for x, y in zip(batches, inputs(), strict=True))


def test_resized_crop_parameters_stay_inside_the_image_and_follow_the_generator():
    for seed in range(50):
        top, left, h, w = sample_resized_crop(36, 40, torch.Generator().manual_seed(seed))
        assert 0 <= top and 0 <= left and top + h <= 36 and left + w <= 40 and h > 0 and w > 0
        assert 0.08 * 36 * 40 * 0.8 <= h * w <= 36 * 40
    a = sample_resized_crop(360, 400, torch.Generator().manual_seed(3))
    assert a == sample_resized_crop(360, 400, torch.Generator().manual_seed(3))
    # A 1 x 10 strip has no crop with a ratio in [3/4, 4/3] and area >= 8 %: the centred fallback.
    assert sample_resized_crop(1, 10, torch.Generator().manual_seed(0)) == (0, 4, 1, 1)


def test_color_jitter_matches_torchvision_on_the_same_factors():
    image = torch.randint(0, 256, (3, 20, 24), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    for seed in range(6):
        ours = color_jitter(image, 0.4, torch.Generator().manual_seed(seed))
        replay = torch.Generator().manual_seed(seed)
        draws = torch.rand(3, generator=replay, dtype=torch.float64).tolist()
        order = torch.randperm(3, generator=replay).tolist()
        x = image.float() / 255  # torchvision's float path: no rounding between operations
        ops = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation)
        for op in order:
            x = ops[op](x, 0.6 + 0.8 * draws[op])
        reference = (x * 255).round().to(torch.uint8)
        assert (ours.int() - reference.int()).abs().max() <= 1
        assert not torch.equal(ours, image)


def test_train_and_eval_transforms_give_the_configured_size():
    image = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
    out = TrainTransform(SIZE, 0.4)(image, torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and tuple(out.shape) == (3, SIZE, SIZE)
    assert eval_resize_size(224) == 256 and eval_resize_size(112) == 128
    test = EvalTransform(SIZE)(image)
    expected = F.center_crop(F.resize(image, [eval_resize_size(SIZE)], antialias=True), [SIZE, SIZE])
    assert torch.equal(test, expected)


@pytest.mark.parametrize("sampler", list_samplers())
def test_every_sampler_drives_the_jpeg_loader_by_index(root, sampler):
    data, loader = _loader(root, sampler)
    replay = build_sampler(
        sampler,
        data.train.labels,
        data.num_classes,
        0,
        **({"total_epochs": 3} if sampler == "progressive" else {}),
    )
    for _ in range(2):
        order = replay.sample_epoch()
        batches = list(loader.epoch())
        assert len(batches) == len(loader) == len(data.train) // 8
        labels = torch.cat([b.targets_a for b in batches])
        assert torch.equal(labels, data.train.labels[order[: len(labels)]])
        assert batches[0].inputs.dtype == torch.float32 and tuple(batches[0].inputs.shape) == (
            8,
            3,
            SIZE,
            SIZE,
        )
    if sampler in ("class_aware", "class_balanced"):  # tail classes are drawn far above their share
        assert (labels >= 8).float().mean() > 0.2


def test_resume_replays_the_same_jpeg_batches_whatever_the_worker_count(root):
    _, first = _loader(root, "class_aware", **{"data.num_workers": 0})
    list(first.epoch())
    state = first.state_dict()
    expected = [b.inputs.clone() for b in first.epoch()]
    _, resumed = _loader(root, "class_aware", seed=7, **{"data.num_workers": 2})
    resumed.load_state_dict(state)
    got = [b.inputs for b in resumed.epoch()]
    assert len(got) == len(expected) and all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))
    again = [b.inputs for b in resumed.epoch()]  # persistent workers: a third epoch differs from the second
    assert not torch.equal(again[0], got[0])


def test_eval_batches_of_files_are_in_list_order(root):
    data = build_data(_config(root, **{"data.num_workers": 1}).data)
    batches = list(split_batches(data.test, 20, data.mean, data.std))
    assert [len(y) for _, y in batches] == [20, 20, 8]
    assert torch.equal(torch.cat([y for _, y in batches]), data.test.labels)


def test_a_corrupt_image_is_one_error_line_naming_file_and_list_line(root, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(root, broken)
    first = (broken / LIST_NAMES["imagenet_lt"]["test"]).read_text().split()[0]
    (broken / first).write_bytes(b"\xff\xd8 not really a jpeg")
    data = build_data(_config(broken, **{"data.num_workers": 1}).data)
    with pytest.raises(ImageFileError) as info:
        list(split_batches(data.test, 8, data.mean, data.std))
    message = str(info.value)
    assert "\n" not in message and first in message and "ImageNet_LT_test.txt line 1" in message
    assert "not a decodable image" in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_decode_refuses_in_one_line_without_cuda(root):
    with pytest.raises(ConfigError, match="data.decode=gpu needs a CUDA device"):
        _loader(root, **{"data.decode": "gpu"})


def test_gpu_decode_hook_gives_the_cpu_batch_when_run_on_the_cpu(root):
    """The data.decode=gpu batching (bytes from the workers, one batched decode_jpeg, the same per-sample
    transforms and seeds) exercised on the CPU: it must reproduce the CPU-decoding batch exactly."""
    data = build_data(_config(root).data)
    transform = TrainTransform(SIZE, 0.4)
    keys = [(i, 1000 + i) for i in range(0, 40, 5)]
    cpu = torch.stack([ImageFileDataset(data.train, transform)[k][0] for k in keys])
    raw = ImageFileDataset(data.train, transform, decode_here=False)
    images, labels = GpuDecode(data.train, transform)(
        collate_bytes([raw[k] for k in keys]), torch.device("cpu")
    )
    assert torch.equal(images, cpu) and torch.equal(labels, data.train.labels[[i for i, _ in keys]])


def test_normalising_transforms_match_normalising_the_uint8_output():
    image = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    stats = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    for jitter, tolerance in ((0.0, 1e-5), (0.4, 0.5 / 255 / 0.224 + 1e-5)):  # jitter: rounding skipped
        plain = TrainTransform(SIZE, jitter)(image, torch.Generator().manual_seed(4))
        normed = TrainTransform(SIZE, jitter, stats)(image, torch.Generator().manual_seed(4))
        assert normed.dtype == torch.float32
        assert torch.allclose(normed, normalize(plain[None], *stats)[0], atol=tolerance, rtol=0)
    assert torch.allclose(
        EvalTransform(SIZE, stats)(image), normalize(EvalTransform(SIZE)(image)[None], *stats)[0], atol=1e-5
    )
