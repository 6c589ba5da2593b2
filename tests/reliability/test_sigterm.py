"""SIGTERM (a scheduler's time limit, ``kill``) ends a single-process run like Ctrl-C: one "interrupted"
line naming the ``--resume`` command, status 130, the last complete checkpoint intact and resumable."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from ccsam.training.checkpoint import load_checkpoint
from tests.reliability.faults import tiny
from tests.reliability.kills import REPO, _env


def test_sigterm_ends_the_run_with_the_interrupted_line_and_a_resumable_checkpoint(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--out", str(out), *tiny(stage1__epochs=400, stage1__milestones="[399]")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccsam", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env=_env(None), cwd=REPO,
    )
    checkpoint = out / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be signalled"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("ccsam: error: interrupted; continue with `ccsam train --resume"), last
    state = load_checkpoint(checkpoint)  # complete and loadable, not torn by the signal
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert 1 <= int(state["epoch"]) <= len(records)
    assert not list((out / "checkpoints").glob(".last.pt.*")), "a temporary checkpoint file was left behind"
