"""``env.json``: what a run ran on, so a shared run folder says which code and libraries made it."""

from __future__ import annotations

import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ccsam._version import __version__

_PACKAGE_INIT = Path(__file__).resolve().parents[1] / "__init__.py"  # src/ccsam/__init__.py


def git_commit(start: Path | None = None) -> str | None:
    """The commit of the git checkout ccsam is imported from (``+dirty`` if tracked files changed), or
    None for an installed package or when git is unavailable."""
    root = (start or _PACKAGE_INIT).parents[2]  # src/ccsam/__init__.py -> the checkout
    if not (root / ".git").exists():
        return None
    try:

        def git(*args: str) -> str:
            done = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
            )
            return done.stdout.strip()

        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def environment() -> dict[str, Any]:
    """Versions (ccsam, its git commit, Python, torch, CUDA, cuDNN), platform, device and creation time."""
    cuda = torch.cuda.is_available()
    return {
        "ccsam": __version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "platform": platform.platform(),
        "cuda_available": cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "created_utc": datetime.now(timezone.utc).isoformat(),
    }
