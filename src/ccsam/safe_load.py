"""Loading files a user may have received (checkpoints, data caches, CIFAR pickles) without running code.

A pickle can name any importable callable and have it called while it loads (``__reduce__``), so a
shared run folder, data cache or "CIFAR" folder could execute arbitrary code. Everything ccsam reads
back goes through this leaf module:

* torch files (checkpoints, data caches, pretrained weights) through ``torch.load(weights_only=True)``,
  which only rebuilds tensors, numbers, strings and builtin containers;
* the CIFAR python-pickle format through :class:`CifarUnpickler`, which allows exactly the globals that
  format needs to rebuild its numpy arrays and refuses anything else, naming the global it refused.

A file that is refused, truncated or not of the expected kind raises :class:`UnsafeFileError` with one
line that names the file and what to do.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from ccsam.errors import CcsamError


class UnsafeFileError(CcsamError):
    """A file that is unreadable, truncated, of another kind, or would run code when loaded."""


# (module, name) pairs the CIFAR pickles need: numpy's array reconstruction (numpy 1 and 2 module names),
# scalar reconstruction for numpy integer labels, protocol-5 out-of-band buffers, and the bytes helpers of
# protocol-2 pickles written by Python 3. None of them can run code chosen by the file.
CIFAR_PICKLE_GLOBALS: frozenset[tuple[str, str]] = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("builtins", "bytearray"),
})


class CifarUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`CIFAR_PICKLE_GLOBALS` (builtin containers need no global)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in CIFAR_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refused global '{module}.{name}'")
        return super().find_class(module, name)


def load_cifar_pickle(path: Path) -> Any:
    """Unpickle one CIFAR python-pickle file (latin-1 strings, as the format was written by Python 2)."""
    try:
        with path.open("rb") as handle:
            return CifarUnpickler(handle, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        if str(exc).startswith("refused global"):
            raise UnsafeFileError(
                f"'{path}' is not a plain CIFAR pickle: it names a callable outside that format ({exc}), "
                "which could run code; it was not loaded. "
                "Replace the data folder with one extracted from the official archive"
            ) from None
        raise UnsafeFileError(f"'{path}' is not a readable CIFAR pickle ({exc}); re-extract the archive") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as exc:
        raise UnsafeFileError(
            f"'{path}' is truncated or not a CIFAR pickle ({exc.__class__.__name__}); re-extract the archive"
        ) from None


def load_torch_file(path: Path, kind: str, fix: str) -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU; one :class:`UnsafeFileError` line otherwise.

    ``kind`` names what the file should be ("checkpoint", "data cache"), ``fix`` what to do about it.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        detail = next((line for line in reason if "GLOBAL" in line or "global" in line), None)
        if detail is None:  # not a request for a callable: bytes that are not a torch pickle at all
            cause = next((line for line in reason if line.startswith(("Unsupported", "Unpickling"))), "")
            cause = f": {cause}" if cause else ""
            raise UnsafeFileError(
                f"'{path}' is not a readable {kind} (garbage or another kind of file{cause}). {fix}"
            ) from None
        raise UnsafeFileError(
            f"'{path}' was refused: a {kind} holds only tensors and plain values, this file asks for more "
            f"({detail.strip()[:200]}); it was not loaded. {fix}"
        ) from None
    except (EOFError, RuntimeError, ValueError, OSError, KeyError, TypeError, AttributeError, IndexError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise UnsafeFileError(f"{kind} '{path}' not found. {fix}") from None
        raise UnsafeFileError(
            f"'{path}' is not a readable {kind} (truncated or another kind of file: {exc.__class__.__name__}). {fix}"
        ) from None
