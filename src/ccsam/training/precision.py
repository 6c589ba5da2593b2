"""Numerics and memory layout of a run: autocast, channels_last, cuDNN autotuning, compilation.

One place decides them from :class:`RuntimeConfig` and the device; the loop only enters
:meth:`Runtime.autocast` around the forward pass (the loaders put inputs in the model's memory format).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass

import torch

from ccsam.config.schema import RuntimeConfig
from ccsam.models import Classifier

_logger = logging.getLogger(__name__)


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
        keep_compiled_graphs_retainable()
        model.backbone.compile()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    elif runtime.device.type == "cpu" and sys.stderr.isatty():  # a person is watching (not logs, not tests)
        hint = busy_cpu_hint(torch.get_num_threads())
        if hint:
            _logger.info(hint)
    return model


def keep_compiled_graphs_retainable() -> None:
    """Turn off AOTAutograd's donated buffers (``torch._functorch.config.donated_buffer``, torch >= 2.6)
    for this process. With them, a compiled graph's backward frees its saved activations and refuses
    ``retain_graph=True``, which CC-SAM's ``last_k`` / ``all`` scopes (one gradient per class before the
    update) and ImbSAM (the head-class gradient before the tail backward) need. The cost is the memory
    those buffers would have reused during backward."""
    try:
        from torch._functorch import config as functorch_config
    except ImportError:  # pragma: no cover - a torch without AOTAutograd's config module
        return
    if hasattr(functorch_config, "donated_buffer"):
        functorch_config.donated_buffer = False


def busy_cpu_hint(threads: int, load: float | None = None) -> str | None:
    """A note when other work occupies cores that ``threads`` torch threads would use: torch's threads then
    wait on each other and a CPU run can slow down ten-fold. ``load`` defaults to the 1-minute load average."""
    if load is None:
        if not hasattr(os, "getloadavg"):
            return None
        load = os.getloadavg()[0]
    free = max(1, int((os.cpu_count() or threads) - load + 0.5))
    if free >= threads:
        return None
    return (f"note: the CPU is busy (load average {load:.1f} on {os.cpu_count()} cores) and torch uses {threads} "
            f"threads; runtime.threads={free} (probe / landscape / sharpness: --threads {free}) may run much "
            "faster here")
