"""Checkpoints: one dict, written atomically, loaded onto any device."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from ccsam.atomic_io import atomic_write_bytes
from ccsam.errors import RunDirError
from ccsam.safe_load import load_torch_file

CHECKPOINT_FORMAT = 1


def rng_states() -> dict[str, Any]:
    """Global torch CPU (and CUDA, if present) generator states."""
    states: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Inverse of :func:`rng_states` (CUDA states are skipped on a machine without CUDA)."""
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` the state dict to ``path`` atomically (temporary file + ``os.replace``)."""
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint onto the CPU without running code (``weights_only``); one clear error if it is
    missing, corrupt, refused or from another format."""
    if not path.is_file():
        raise RunDirError(f"checkpoint '{path}' not found; the run has not completed an epoch yet")
    state = load_torch_file(
        path, "checkpoint", "Restore the file from the run that wrote it, or train again (nothing was loaded)"
    )
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise RunDirError(f"checkpoint '{path}' has format {found}, expected {CHECKPOINT_FORMAT}")
    return state
