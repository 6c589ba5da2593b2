"""``data.decode=gpu``: JPEG bytes read by the workers, decoded in batches on CUDA (nvJPEG).

UNTESTED WITHOUT A GPU: this path only runs where ``torch.cuda.is_available()``; the CPU test suite
checks that it refuses cleanly, and ``benchmarks/gpu_check.sh`` exercises it when a GPU is lent.
The crop / flip / jitter are the same :class:`~ccsam.data.jpeg.TrainTransform` functions as on the
CPU, applied per image on the device with the same per-sample seeds, so a run's augmentation
parameters do not depend on where decoding happens (pixel values may differ slightly: nvJPEG's
IDCT and the CUDA resize kernels are not bit-identical to libjpeg and the CPU kernels).
"""

from __future__ import annotations

from typing import Any

import torch

from ccsam.data.codecs import torchvision_cuda_jpeg_decoder
from ccsam.data.image_files import ImageFiles
from ccsam.data.jpeg import EvalTransform, TrainTransform, decode_bytes
from ccsam.errors import ConfigError

__all__ = ["GpuDecode", "collate_bytes", "require_cuda"]

_JPEG_MAGIC = (0xFF, 0xD8)


def require_cuda(device: torch.device) -> None:
    """Refuse ``data.decode=gpu`` in one line unless the run trains on a CUDA device with a torchvision
    that still has its nvJPEG decoder."""
    if device.type != "cuda" or not torch.cuda.is_available():
        raise ConfigError(
            "data.decode=gpu needs a CUDA device (torchvision.io.decode_jpeg(device='cuda')); "
            "use data.decode=cpu or run with device=cuda"
        )
    if torchvision_cuda_jpeg_decoder() is None:
        raise ConfigError(
            "data.decode=gpu needs torchvision.io.decode_jpeg, which this torchvision no longer has; "
            "use data.decode=cpu"
        )


def collate_bytes(items: list[tuple[torch.Tensor, torch.Tensor, tuple[int, int]]]) -> Any:
    """Keep the variable-length byte tensors as a list; stack the labels."""
    return [b for b, _, _ in items], torch.stack([y for _, y, _ in items]), [k for _, _, k in items]


class GpuDecode:
    """``to_device`` hook of :class:`~ccsam.data.dataloader.DataLoaderBatches` for GPU decoding."""

    def __init__(self, files: ImageFiles, transform: TrainTransform | EvalTransform) -> None:
        self.files, self.transform = files, transform
        self.decode_jpeg = torchvision_cuda_jpeg_decoder()

    def _decode(
        self, data: list[torch.Tensor], keys: list[tuple[int, int]], device: torch.device
    ) -> list[torch.Tensor]:
        jpeg = [i for i, d in enumerate(data) if len(d) > 1 and (int(d[0]), int(d[1])) == _JPEG_MAGIC]
        images: list[torch.Tensor | None] = [None] * len(data)
        if jpeg and self.decode_jpeg is not None:
            try:
                decoded = self.decode_jpeg([data[i] for i in jpeg], device)
            except RuntimeError:
                decoded = [
                    decode_bytes(data[i], self.files, keys[i][0]).to(device) for i in jpeg
                ]  # names the bad file
            for i, tensor in zip(jpeg, decoded, strict=True):
                images[i] = tensor
        for i, image in enumerate(images):
            if image is None:  # PNG / WEBP: the CPU decoder, then the device
                images[i] = decode_bytes(data[i], self.files, keys[i][0]).to(device, non_blocking=True)
        return [image for image in images if image is not None]

    def __call__(self, batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        data, labels, keys = batch
        images = self._decode(data, keys, device)
        out = [
            self.transform(image, torch.Generator().manual_seed(seed))
            for image, (_, seed) in zip(images, keys, strict=True)
        ]
        return torch.stack(out), labels.to(device, non_blocking=True)
