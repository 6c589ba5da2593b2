"""Numerics and memory layout of a run: autocast, channels_last, cuDNN autotuning, compilation.

One place decides them from :class:`RuntimeConfig` and the device; the loop only enters
:meth:`Runtime.autocast` around the forward pass (the loaders put inputs in the model's memory format).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ccsam.config.schema import RuntimeConfig
from ccsam.models import Classifier


@dataclass(frozen=True)
class Runtime:
    """Resolved runtime choices for one device."""

    device: torch.device
    autocast_dtype: torch.dtype | None  # None = full fp32
    channels_last: bool

    @classmethod
    def resolve(cls, cfg: RuntimeConfig, device: torch.device) -> Runtime:
        """``auto`` means bf16 autocast and channels_last on CUDA, plain fp32 / NCHW on the CPU."""
        cuda = device.type == "cuda"
        bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and cuda)
        channels_last = cuda if cfg.channels_last is None else cfg.channels_last
        return cls(device, torch.bfloat16 if bf16 else None, channels_last)

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        """Mixed-precision context for the forward pass (parameters and optimiser state stay fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)


def prepare_model(model: Classifier, cfg: RuntimeConfig, runtime: Runtime) -> Classifier:
    """Apply channels_last, cuDNN autotuning and ``torch.compile`` (of the backbone, in place, so that
    parameter names and ``state_dict`` keys are unchanged)."""
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if runtime.device.type == "cuda":
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    if cfg.compile:
        model.backbone.compile()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    return model
