"""The command-line side of a torchrun launch: join the group, share the run folder, fail as one.

``ccsam train`` runs its whole body inside :func:`torchrun_session`: without torchrun it yields
``None`` and does nothing else. Under torchrun the ranks join the process group, ranks other than 0
log warnings only, and an exception on any rank prints one line naming the rank and ends that process
at once with a non-zero status (a config error, the same on every rank, is printed by rank 0 only);
torchrun then stops the other ranks (which may be waiting in a collective the failed rank will never
join).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import torch.distributed as dist

from ccsam.distributed.env import TorchrunEnv, init_process_group, is_distributed, is_main, shutdown
from ccsam.errors import EXIT_INTERRUPTED, EXIT_RUNTIME, CcsamError, ConfigError

__all__ = ["shared_path", "torchrun_session"]

#: How long ranks other than 0 wait before leaving silently on a config error (rank 0 reports it).
_QUIET_EXIT_DELAY_S = 2.0


@contextmanager
def torchrun_session(device: str) -> Iterator[TorchrunEnv | None]:
    """Join the torchrun process group for ``device`` (``None`` and no effect without torchrun)."""
    detected = TorchrunEnv.detect()
    if detected is not None and detected.world_size > 1 and device.startswith("cuda:"):
        # Before joining the group; said once, like any config error (rank 0 prints it, the others leave).
        _fail(detected, ConfigError(
            f"device={device} under torchrun would put every rank on one GPU; use device=cuda (or auto): "
            "each rank then takes cuda:LOCAL_RANK (choose the GPUs with CUDA_VISIBLE_DEVICES)"
        ))
    env = init_process_group(device)
    if env is None:
        yield None
        return
    if env.rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        yield env
    except BaseException as exc:  # noqa: BLE001 - every failure must end this rank at once
        _fail(env, exc)
    shutdown()


def _fail(env: TorchrunEnv, exc: BaseException) -> NoReturn:
    """One line naming the rank (a config error: rank 0's line only), then end this process at once."""
    if isinstance(exc, KeyboardInterrupt):
        code = EXIT_INTERRUPTED
    else:
        code = exc.exit_code if isinstance(exc, CcsamError) else EXIT_RUNTIME
    if isinstance(exc, ConfigError) and env.rank != 0:
        # A config error is raised alike on every rank: rank 0 says it; give it time to, then leave.
        time.sleep(_QUIET_EXIT_DELAY_S)
        os._exit(code)
    text = str(exc) or type(exc).__name__
    if not isinstance(exc, CcsamError):
        text = f"{type(exc).__name__}: {text}"
    text = " ".join(text.split())  # one line, as the CLI's error boundary writes it
    print(f"ccsam: error on rank {env.rank} of {env.world_size}: {text}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(code)  # no teardown: the other ranks may be blocked in a collective


def shared_path(make: Callable[[], Path]) -> Path:
    """``make()`` on rank 0 (e.g. create the run folder) and its result on every rank."""
    if not is_distributed():
        return make()
    box = [make() if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return Path(box[0])  # type: ignore[arg-type]
