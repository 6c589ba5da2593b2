"""Which batch source feeds a split: device-resident arrays, host arrays through workers, or image files.

:func:`train_batches` picks the training loader of a stage and :func:`split_batches` the ordered,
un-augmented batches of an evaluation, so the engine never branches on the kind of data. Workers
normalise their own images when the model runs on the CPU, and leave ``uint8`` images for the device
to normalise otherwise (see :mod:`ccsam.data.dataloader`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from ccsam.config.schema import DataConfig
from ccsam.data.arrays import ImageArrays
from ccsam.data.augment import normalize
from ccsam.data.dataloader import AugmentedImages, DataLoaderBatches, batches_to, make_loader, one_line
from ccsam.data.image_files import ImageFiles
from ccsam.data.jpeg import EvalTransform, ImageFileDataset, Normalization, TrainTransform
from ccsam.data.long_tail import LongTailData
from ccsam.data.memory_loader import AugmentSpec, InMemoryLoader, eval_batches
from ccsam.errors import CcsamError

__all__ = ["split_batches", "train_batches"]


def _file_pipeline(
    files: ImageFiles, train: bool, augment: bool, stats: Normalization, device: torch.device
) -> dict[str, Any]:
    """Data set, collate and transfer hooks of one split of image files, and whether its images arrive
    normalised: on the CPU the workers normalise; ``data.decode=gpu`` decodes and normalises on CUDA."""
    opts = files.loading
    gpu = opts.decode == "gpu"
    norm = stats if device.type == "cpu" and not gpu else None
    if train and augment:
        transform: TrainTransform | EvalTransform = TrainTransform(opts.image_size, opts.color_jitter, norm)
    else:
        transform = EvalTransform(opts.image_size, norm)
    if not gpu:
        return {
            "dataset": ImageFileDataset(files, transform),
            "collate_fn": None,
            "to_device": batches_to,
            "normalized": norm is not None,
        }
    from ccsam.data.jpeg_gpu import GpuDecode, collate_bytes, require_cuda

    require_cuda(device)
    return {
        "dataset": ImageFileDataset(files, transform, decode_here=False),
        "collate_fn": collate_bytes,
        "to_device": GpuDecode(files, transform),
        "normalized": False,
    }


def train_batches(
    data: LongTailData,
    sampler: Any,
    cfg: DataConfig,
    mixup_alpha: float,
    seed: int,
    device: torch.device,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> InMemoryLoader | DataLoaderBatches:
    """The training loader of one stage over ``data.train``, drawn in ``sampler``'s order.

    Image files: the ImageNet train transforms (``data.augment=none``: the test transform instead).
    Arrays: ``data.loader`` chooses device-resident batches or DataLoader workers.
    """
    train = data.train
    if isinstance(train, ImageFiles):
        opts = train.loading
        pipe = _file_pipeline(train, True, cfg.augment != "none", (data.mean, data.std), device)
        return DataLoaderBatches(
            sampler=sampler,
            batch_size=cfg.batch_size,
            mean=data.mean,
            std=data.std,
            mixup_alpha=mixup_alpha,
            seed=seed,
            device=device,
            num_workers=opts.num_workers,
            memory_format=memory_format,
            prefetch_factor=opts.prefetch_factor,
            **pipe,
        )
    spec = AugmentSpec(
        cfg.augment,
        cfg.crop_padding,
        data.mean,
        data.std,
        cutout_size=cfg.cutout_size,
        autoaugment_fill=cfg.autoaugment_fill,
    )
    if cfg.loader == "dataloader":
        on_cpu = device.type == "cpu"
        return DataLoaderBatches(
            AugmentedImages(train, spec, normalize=on_cpu),
            sampler,
            cfg.batch_size,
            data.mean,
            data.std,
            mixup_alpha,
            seed,
            device,
            num_workers=cfg.num_workers,
            memory_format=memory_format,
            prefetch_factor=cfg.prefetch_factor,
            normalized=on_cpu,
        )
    return InMemoryLoader(
        train, sampler, cfg.batch_size, spec, mixup_alpha, seed, memory_format=memory_format
    )


def split_batches(
    split: ImageArrays | ImageFiles,
    batch_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    memory_format: torch.memory_format = torch.contiguous_format,
    device: torch.device | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised, un-augmented ``(inputs, labels)`` batches of a split in order (the last maybe short).

    Image files go through DataLoader workers with the test transform and arrive on ``device``.
    """
    if isinstance(split, ImageArrays):
        yield from eval_batches(split, batch_size, mean, std, memory_format)
        return
    device = device if device is not None else torch.device("cpu")
    pipe = _file_pipeline(split, False, False, (mean, std), device)
    keys = [(i, 0) for i in range(len(split))]
    loader = make_loader(
        pipe["dataset"],
        keys,
        batch_size,
        drop_last=False,
        num_workers=split.loading.num_workers,
        device=device,
        prefetch_factor=split.loading.prefetch_factor,
        collate_fn=pipe["collate_fn"],
    )
    try:
        for batch in loader:
            images, labels = pipe["to_device"](batch, device)
            inputs = images if pipe["normalized"] else normalize(images, mean, std)
            yield inputs.contiguous(memory_format=memory_format), labels
    except CcsamError as exc:
        raise one_line(exc) from None
