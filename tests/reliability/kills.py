"""Seeded kill -9 during short runs, then resume, compared with the same run uninterrupted.

The kill plan alternates two kinds of kill, with seeded random delays:

* ``write@N``: the run's N-th checkpoint write of that process is paused (``tests/reliability/_driver.py``)
  and the process is killed inside it, leaving a complete temporary ``.last.pt.*`` beside the previous
  ``last.pt`` (N = 1 on the very first process: the run then has no completed epoch at all);
* ``timer``: the process is killed a random moment after it logged its first epoch (mid-epoch, between
  epochs or inside a write, wherever that moment falls).

After each kill the run folder is resumed in a new process; finally a resume runs to the end. The
result must equal an uninterrupted run of the same config bit for bit (results.json test and validation
metrics, and every per-epoch record but its wall-clock timings), and no temporary file may remain.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.reliability.faults import tiny

DRIVER = Path(__file__).with_name("_driver.py")
REPO = Path(__file__).resolve().parents[2]
KILL_CONFIG = tiny(stage1__epochs=8, stage2__epochs=4, stage1__milestones="[6]")
DEFAULT_PLAN = ("write@1", "timer", "write@2", "timer", "write@2")
_EPOCH_LINE = re.compile(r"^stage\d\s+\d+/\d+ ")
_WALL_CLOCK = {"time_s", "img_per_s", "data_wait_s"}  # per-epoch timings: the only fields that may differ
_PAUSE = 4.0  # seconds the driver holds the chosen checkpoint write open
_PAUSED = 0.5  # a temporary file older than this is the paused write


@dataclass
class KillReport:
    """What a kill chain did and whether the resumed run equals the uninterrupted one."""

    kills: int = 0
    kills_in_write: int = 0
    processes: int = 0
    stale_temp_files_seen: int = 0
    bytes_lost: int = 0  # size of a checkpoint that was readable before a kill and is not after
    identical: bool = False
    mismatches: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)


def _env(slow: str | None) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), str(REPO), env.get("PYTHONPATH")]))
    env.pop("CCSAM_DEBUG", None)
    env.pop("CCSAM_TEST_SLOW_CHECKPOINT", None)
    if slow:
        env["CCSAM_TEST_SLOW_CHECKPOINT"] = slow
    return env


def _start(args: list[str], slow: str | None = None) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(slow),
        cwd=REPO,
    )
    lines: list[str] = []

    def read() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.append(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    return proc, lines


def _temps(run: Path) -> list[Path]:
    folder = run / "checkpoints"
    return sorted(folder.glob(".last.pt.*")) if folder.is_dir() else []


def _kill_when(proc: subprocess.Popen, lines: list[str], run: Path, mode: str, rng: random.Random) -> bool:
    """Kill ``proc`` (SIGKILL) at the moment ``mode`` names; False if it ended first.

    ``write@N``: the paused write is recognised as a temporary file that stays for ``_PAUSED`` seconds
    (an unpaused write replaces its temporary file within milliseconds); the kill follows a random
    moment later, still inside the pause."""
    first_seen: dict[str, float] = {}
    while proc.poll() is None:
        now = time.monotonic()
        if mode.startswith("write"):
            names = {p.name for p in _temps(run)}
            first_seen = {name: first_seen.get(name, now) for name in names}
            if any(now - t >= _PAUSED for t in first_seen.values()):
                time.sleep(rng.uniform(0.0, 1.0))
                break
        elif any(_EPOCH_LINE.match(line) for line in lines):
            time.sleep(rng.uniform(0.0, 0.15))
            break
        time.sleep(0.005)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def _checkpoint_ok(path: Path) -> bool:
    from ccsam.training.checkpoint import load_checkpoint

    try:
        load_checkpoint(path)
    except Exception:  # noqa: BLE001 - any failure means the file was damaged
        return False
    return True


def _comparable(run: Path) -> tuple[dict, list[dict]]:
    results = json.loads((run / "results.json").read_text())
    metrics = [
        {k: v for k, v in json.loads(line).items() if k not in _WALL_CLOCK}
        for line in (run / "metrics.jsonl").read_text().splitlines()
    ]
    return {"test": results["test"], "val": results["val"]}, metrics


def kill_chain(workdir: Path, seed: int = 0, plan: tuple[str, ...] = DEFAULT_PLAN) -> KillReport:
    """Run the uninterrupted reference, then the killed-and-resumed run, and compare them."""
    report = KillReport()
    rng = random.Random(seed)
    reference, run = workdir / "uninterrupted", workdir / "killed"
    # The reference runs beside the killed runs (its own process, same thread settings).
    ref_proc, ref_lines = _start(["train", "--out", str(reference), "--no-progress", *KILL_CONFIG])
    report.processes += 1
    for mode in plan:
        started = run.exists()
        args = ["train", "--resume", str(run)] if started else ["train", "--out", str(run), *KILL_CONFIG]
        slow = f"{_PAUSE}@{mode.partition('@')[2]}" if mode.startswith("write") else None
        had_checkpoint = (run / "checkpoints" / "last.pt").is_file() and _checkpoint_ok(
            run / "checkpoints" / "last.pt"
        )
        proc, lines = _start([*args, "--no-progress"], slow)
        report.processes += 1
        if not _kill_when(proc, lines, run, mode, rng):
            report.log.append(f"{mode}: the process ended before the kill (exit {proc.returncode})")
            if proc.returncode != 0:
                raise RuntimeError("a resumed run failed:\n" + "\n".join(lines))
            break
        report.kills += 1
        temps = _temps(run)
        report.kills_in_write += bool(temps) and mode.startswith("write")
        report.stale_temp_files_seen += len(temps)
        last = run / "checkpoints" / "last.pt"
        if had_checkpoint and not _checkpoint_ok(last):
            report.bytes_lost += last.stat().st_size if last.exists() else 1
        epochs = sum(1 for _ in (run / "metrics.jsonl").open()) if (run / "metrics.jsonl").exists() else 0
        report.log.append(
            f"{mode}: killed; {len(temps)} temporary file(s) left, "
            f"last.pt {'present' if last.exists() else 'absent'}, {epochs} metrics line(s)"
        )
    if not (run / "results.json").exists():
        proc, lines = _start(["train", "--resume", str(run), "--no-progress"])
        report.processes += 1
        if proc.wait() != 0:
            raise RuntimeError("the final resume failed:\n" + "\n".join(lines))
    if ref_proc.wait() != 0:
        raise RuntimeError("the uninterrupted run failed:\n" + "\n".join(ref_lines))
    if _temps(run):
        report.mismatches.append(f"temporary files remain: {_temps(run)}")
    expected, got = _comparable(reference), _comparable(run)
    if expected[0] != got[0]:
        report.mismatches.append("results.json test / validation metrics differ")
    if expected[1] != got[1]:
        report.mismatches.append("metrics.jsonl records differ")
    report.identical = not report.mismatches
    return report
