"""Which batch source feeds a split: device-resident arrays, host arrays through workers, or image files.

:func:`train_batches` picks the training loader of a stage and :func:`split_batches` the ordered,
un-augmented batches of an evaluation, so the engine never branches on the kind of data.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from ccsam.config.schema import DataConfig
from ccsam.data.arrays import ImageArrays
from ccsam.data.augment import normalize
from ccsam.data.build import LongTailData
from ccsam.data.dataloader import (
    AugmentedImages,
    DataLoaderBatches,
    batches_to,
    make_loader,
    one_line,
    worker_collate,
)
from ccsam.data.image_files import ImageFiles
from ccsam.data.jpeg import EvalTransform, ImageFileDataset, TrainTransform
from ccsam.data.loader import AugmentSpec, InMemoryLoader, eval_batches
from ccsam.errors import CcsamError

__all__ = ["split_batches", "train_batches"]


def _file_pipeline(
    files: ImageFiles, transform: TrainTransform | EvalTransform, device: torch.device
) -> dict[str, Any]:
    """Data set and transfer hooks for one split of image files (``data.decode`` cpu or gpu)."""
    if files.loading.decode != "gpu":
        return {"dataset": ImageFileDataset(files, transform), "collate_fn": None, "to_device": batches_to}
    from ccsam.data.jpeg_gpu import GpuDecode, collate_bytes, require_cuda

    require_cuda(device)
    return {
        "dataset": ImageFileDataset(files, transform, decode_here=False),
        "collate_fn": collate_bytes,
        "to_device": GpuDecode(files, transform),
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
        transform = (
            EvalTransform(opts.image_size)
            if cfg.augment == "none"
            else TrainTransform(opts.image_size, opts.color_jitter)
        )
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
            **_file_pipeline(train, transform, device),
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
        return DataLoaderBatches(
            AugmentedImages(train, spec),
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
    pipe = _file_pipeline(split, EvalTransform(split.loading.image_size), device)
    collate_fn, normalized = worker_collate(pipe["collate_fn"], device, mean, std)
    keys = [(i, 0) for i in range(len(split))]
    opts = split.loading
    loader = make_loader(pipe["dataset"], keys, batch_size, drop_last=False, num_workers=opts.num_workers,
                         device=device, prefetch_factor=opts.prefetch_factor, collate_fn=collate_fn)
    try:
        for batch in loader:
            images, labels = pipe["to_device"](batch, device)
            inputs = images if normalized else normalize(images, mean, std)
            yield inputs.contiguous(memory_format=memory_format), labels
    except CcsamError as exc:
        raise one_line(exc) from None
