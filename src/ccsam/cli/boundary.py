"""The CLI's one error boundary: every failure becomes one ``ccsam: error:`` line and an exit status.

* :class:`~ccsam.errors.CcsamError` (bad input, config, file; divergence; interruption): its own line
  and ``exit_code`` (2, 3 or 130).
* ``OSError`` (a read-only folder, a full disk, a missing path): the file, the reason and what to do;
  2 when the user must change a path or a permission, 1 otherwise (a full disk, an I/O error).
* Anything else: a runtime failure (1), named by its type, with a pointer to ``--debug``.

``--debug`` (or ``CCSAM_DEBUG=1``) prints the traceback before the line.

SIGTERM (a scheduler's time limit, ``kill``, ``timeout``) is handled like Ctrl-C in a single process:
it interrupts the command where it is, so a run ends with the same "interrupted; continue with
--resume" line and status 130, and its atomic checkpoint writes finish or are discarded whole. Under
torchrun the launcher owns SIGTERM (it stops the other ranks after a failure) and it is left alone.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from ccsam.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_RUNTIME, CcsamError

DEBUG_ENV = "CCSAM_DEBUG"

# errno -> (exit status, what to do). Path and permission problems are the user's to fix (2).
_OS_FIXES: dict[int, tuple[int, str]] = {
    errno.EROFS: (EXIT_BAD_INPUT, "read-only file system; choose a writable location (e.g. another --out)"),
    errno.EACCES: (
        EXIT_BAD_INPUT,
        "permission denied; choose a writable location or fix the folder's permissions",
    ),
    errno.EPERM: (EXIT_BAD_INPUT, "operation not permitted; choose another location or fix the permissions"),
    errno.ENOENT: (EXIT_BAD_INPUT, "no such file or folder; check the path"),
    errno.ENOTDIR: (EXIT_BAD_INPUT, "a part of the path is a file, not a folder; check the path"),
    errno.EISDIR: (EXIT_BAD_INPUT, "it is a folder, a file was expected; check the path"),
    errno.ENAMETOOLONG: (EXIT_BAD_INPUT, "the path is too long; choose a shorter one"),
    errno.ENOSPC: (
        EXIT_RUNTIME,
        "no space left on the device; free space, then resume the run (the last complete checkpoint is kept)",
    ),
    errno.EDQUOT: (
        EXIT_RUNTIME,
        "disk quota exceeded; free space, then resume the run (the last complete checkpoint is kept)",
    ),
}


def debug_requested(argv: list[str]) -> bool:
    """Whether ``--debug`` is on the command line or ``CCSAM_DEBUG`` is set to a true value."""
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def describe_os_error(exc: OSError) -> tuple[str, int]:
    """One line (file, reason, fix) and the exit status for an ``OSError``."""
    where = " -> ".join(f"'{name}'" for name in (exc.filename, exc.filename2) if name is not None)
    if exc.errno in _OS_FIXES:
        code, text = _OS_FIXES[exc.errno]
    else:
        code, text = (
            EXIT_RUNTIME,
            f"{exc.strerror or str(exc) or exc.__class__.__name__}; check the file and the disk",
        )
    return f"{where + ': ' if where else ''}{text}", code


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises ``KeyboardInterrupt`` (as Ctrl-C does) in the main thread.

    Not installed under torchrun (``WORLD_SIZE`` > 1), whose agent sends SIGTERM to stop the ranks,
    nor outside the main thread (where Python cannot install handlers); the previous handler is restored.
    """
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_guarded(action: Callable[[], int], *, debug: bool) -> int:
    """Call ``action`` and turn any exception into one stderr line and an exit status."""
    try:
        with sigterm_as_interrupt():
            return int(action() or 0)
    except BaseException as exc:  # noqa: BLE001 - the boundary: every failure ends in one line
        if isinstance(exc, (SystemExit, GeneratorExit)):
            raise
        line, code = _classify(exc)
        if debug:
            traceback.print_exception(type(exc), exc, exc.__traceback__)
    clear = "\r\x1b[K" if sys.stderr.isatty() else ""  # start a fresh line after a progress bar
    print(f"{clear}ccsam: error: {' '.join(line.split())}", file=sys.stderr)
    return code


def _classify(exc: BaseException) -> tuple[str, int]:
    """The error line and exit status of an exception that reached the boundary."""
    if isinstance(exc, CcsamError):
        return str(exc), exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", EXIT_INTERRUPTED
    if isinstance(exc, OSError):
        return describe_os_error(exc)
    if isinstance(exc, MemoryError):
        return "out of memory; lower data.batch_size or data.eval_batch_size", EXIT_RUNTIME
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return (
        f"unexpected {exc.__class__.__name__}: {first} (a bug; rerun with --debug for the traceback and "
        "report it)",
        EXIT_RUNTIME,
    )
