"""Atomic file writes: a temporary file in the target folder, then ``os.replace`` (never half a file).

One leaf module so every layer (data manifests, the data cache, run folders, checkpoints) writes the same way.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace`` (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make run files private to their creator
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None:  # e.g. ENOSPC from write / fsync: name the file being written
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_copy_file(source: Path, path: Path) -> None:
    """Copy ``source`` to ``path`` as :func:`atomic_write_bytes` writes (streamed, not held in memory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        with os.fdopen(fd, "wb") as handle, open(source, "rb") as src:
            shutil.copyfileobj(src, handle, 1 << 20)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode())


def check_writable(folder: Path) -> None:
    """Raise ``OSError`` (naming ``folder``) unless files can be created in ``folder``.

    Checked before expensive work. The folder need not exist: its nearest existing ancestor is probed
    with a temporary file that is removed at once, so nothing is left behind and no folder is made.
    """
    probe_dir = Path(folder).absolute()
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise NotADirectoryError(20, "a file is in the way of the output folder", str(probe_dir))
    try:
        fd, tmp = tempfile.mkstemp(dir=probe_dir, prefix=".ccsam-write-check.")
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(folder)) from None
    os.close(fd)
    os.unlink(tmp)
