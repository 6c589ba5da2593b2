"""Checkpoints: one dict, written atomically, loaded onto any device."""

from __future__ import annotations

import io
from collections.abc import Sequence
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


def save_checkpoint(path: Path | Sequence[Path], state: dict[str, Any]) -> None:
    """``torch.save`` the state dict once and write it to ``path`` (or to each of several paths, in their
    order) atomically (temporary file + ``os.replace``)."""
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buffer)
    for target in [path] if isinstance(path, Path) else path:
        atomic_write_bytes(target, buffer.getvalue())


def load_checkpoint(path: Path, required: tuple[str, ...] = ("epoch", "model")) -> dict[str, Any]:
    """Load a checkpoint onto the CPU without running code (``weights_only``); one clear error if it is
    missing, corrupt, refused, from another format, or lacks one of the ``required`` entries."""
    if not path.is_file():
        raise RunDirError(f"checkpoint '{path}' not found; the run has not completed an epoch yet")
    state = load_torch_file(
        path, "checkpoint", "Restore the file from the run that wrote it, or train again (nothing was loaded)"
    )
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise RunDirError(f"checkpoint '{path}' has format {found}, expected {CHECKPOINT_FORMAT}; "
                          "it was not written by this version of ccsam")
    missing = [key for key in required if key not in state]
    if missing or not isinstance(state.get("model"), dict):
        what = ", ".join(missing) or "model weights"
        raise RunDirError(f"checkpoint '{path}' lacks {what}; it is damaged or not a ccsam checkpoint. "
                          "Restore it from the run that wrote it")
    return state


def load_model_state(model: torch.nn.Module, state: dict[str, Any], path: Path) -> None:
    """``model.load_state_dict(state["model"])``; a checkpoint of another model is one clear error."""
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise RunDirError(f"checkpoint '{path}' does not fit this run's model ({first[:160]}); it belongs to "
                          "another run or is damaged") from None
