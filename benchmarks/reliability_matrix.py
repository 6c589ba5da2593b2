"""Run the fault-injection scenarios and write ``benchmarks/results/reliability.md``.

Usage (from the repository root, CPU, about a minute or two on 2 cores)::

    python benchmarks/reliability_matrix.py [--seed 0] [--out benchmarks/results/reliability.md]

The scenarios are the ones the test suite asserts (``tests/reliability/faults.py``, ``kills.py``):
every bad file or setting must end with its exit status and one ``ccsam: error:`` line, print no
traceback, run no crafted payload and change no file; kill -9 during short runs (some inside
checkpoint writes) must resume to the uninterrupted result bit for bit; a NaN loss and a full disk
must keep the last good checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from ccsam.cli.main import main  # noqa: E402
from ccsam.training.checkpoint import load_checkpoint  # noqa: E402
from tests.reliability.faults import SCENARIOS, build_base, disk_full_at, nan_loss_at, run_scenario, tiny  # noqa: E402
from tests.reliability.kills import DEFAULT_PLAN, kill_chain  # noqa: E402

COMMAND = "python benchmarks/reliability_matrix.py --seed {seed}"


def _quiet_main(argv: list[str]) -> tuple[int, list[str]]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, [line for line in err.getvalue().splitlines() if line.startswith("ccsam:")]


def _md5(path: Path) -> str | None:
    return hashlib.md5(path.read_bytes()).hexdigest() if path.is_file() else None


def _in_run_faults(work: Path) -> list[dict[str, object]]:
    """Injected NaN (stop, skip) and ENOSPC during a checkpoint write; each row says whether it held."""
    rows = []
    run = work / "nan-stop"
    with nan_loss_at(8, checkpoint=run / "checkpoints" / "last.pt") as injected:
        code, err = _quiet_main(["train", "--out", str(run), "--no-progress", *tiny(stage2__epochs=0)])
    kept = _md5(run / "checkpoints" / "last.pt") == injected["last_pt_md5"] is not None
    rows.append(
        {
            "name": "NaN loss at step 8 (stage 1, epoch 2, step 3), on_nonfinite=stop",
            "exit": code,
            "held": code == 3 and len(err) == 1 and kept and not (run / "results.json").exists(),
            "line": err[0] if err else "",
            "bytes_lost": 0 if kept else (run / "checkpoints" / "last.pt").stat().st_size,
        }
    )
    run = work / "nan-skip"
    with nan_loss_at(8):
        code, err = _quiet_main(
            [
                "train",
                "--out",
                str(run),
                "--no-progress",
                *tiny(stage2__epochs=0),
                "runtime.on_nonfinite=skip",
            ]
        )
    skipped = [json.loads(x).get("skipped_steps") for x in (run / "metrics.jsonl").read_text().splitlines()]
    rows.append(
        {
            "name": "NaN loss at step 8, on_nonfinite=skip",
            "exit": code,
            "held": code == 0 and skipped == [0, 1],
            "line": f"finished; skipped steps per epoch {skipped}",
            "bytes_lost": 0,
        }
    )
    run = work / "enospc"
    with disk_full_at(write=2):
        code, err = _quiet_main(["train", "--out", str(run), "--no-progress", *tiny()])
    last = run / "checkpoints" / "last.pt"
    intact = last.is_file() and load_checkpoint(last)["epoch"] == 1
    resumed = _quiet_main(["train", "--resume", str(run), "--no-progress"])[0] if intact else None
    rows.append(
        {
            "name": "ENOSPC during the 2nd checkpoint write, then resume",
            "exit": code,
            "held": code == 1 and len(err) == 1 and intact and resumed == 0,
            "line": err[0] if err else "",
            "bytes_lost": 0 if intact else 1,
        }
    )
    return rows


def _cell(text: str, width: int = 150) -> str:
    text = text.replace("|", "\\|").replace("`", "'")
    return text if len(text) <= width else text[: width - 3] + "..."


def write_report(out: Path, seed: int) -> bool:
    """Run everything, write the Markdown file, and return whether every scenario held."""
    started, load = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ccsam-reliability-") as tmp:
        work = Path(tmp)
        base = build_base(work / "base")
        matrix = []
        for index, scenario in enumerate(SCENARIOS):
            outcome = run_scenario(scenario, base, work / f"scenario-{index}")
            matrix.append((scenario, outcome, outcome.problems(scenario)))
        in_run = _in_run_faults(work / "in-run")
        kills = kill_chain(work / "kills", seed=seed)
    seconds = time.perf_counter() - started
    crafted = [m for m in matrix if m[0].kind == "crafted file"]
    held = sum(not problems for _, _, problems in matrix)
    changed_bytes = sum(len(o.changed) for _, o, _ in matrix)
    bytes_lost = changed_bytes + sum(int(r["bytes_lost"]) for r in in_run) + kills.bytes_lost
    all_held = held == len(matrix) and all(r["held"] for r in in_run) and kills.identical and kills.kills >= 5
    lines = [
        "# Reliability: fault-injection matrix",
        "",
        f"Produced by `{COMMAND.format(seed=seed)}` (CPU, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {seconds:.0f} s in all, load average {load:.1f} at the start). The same "
        "scenarios are asserted by "
        "`tests/reliability/`.",
        "",
        "## Totals",
        "",
        "| | |",
        "|---|---|",
        f"| bad inputs tried (files and settings) | {len(matrix)} |",
        f"| ... that ended with their exit status, one error line, no traceback, no file changed | {held} |",
        f"| crafted files refused (checkpoint, cache, CIFAR folder; the payload's marker never appeared) | "
        f"{sum(not p and not o.marker for _, o, p in crafted)} of {len(crafted)} |",
        f"| kill -9 survived (resumed to a bit-identical results.json and metrics.jsonl) | "
        f"{kills.kills if kills.identical else 0} of {kills.kills} |",
        f"| ... of them inside a checkpoint write | {kills.kills_in_write} |",
        f"| faults inside a run that kept the last good checkpoint (NaN stop / skip, ENOSPC) | "
        f"{sum(bool(r['held']) for r in in_run)} of {len(in_run)} |",
        f"| bytes lost | {bytes_lost} |",
        "",
        "## Bad files and settings",
        "",
        "Each scenario damages a copy of a legitimate file (or passes a bad setting), runs one command in "
        "process, and checks: the exit status (2 bad input / config / file, 1 runtime failure), exactly one "
        "`ccsam: error:` line naming the file or key, no traceback, and the md5 of every file present before "
        "unchanged, with no new file. Read-only folders are emulated by failing every write under them with "
        "EROFS.",
        "",
        "| scenario | kind | exit | held | the one error line |",
        "|---|---|---|---|---|",
    ]
    for scenario, outcome, problems in matrix:
        verdict = "yes" if not problems else "NO: " + "; ".join(problems)
        line = outcome.stderr[0].replace(str(work), "<tmp>") if outcome.stderr else ""
        lines.append(
            f"| {scenario.name} | {scenario.kind} | {outcome.exit_code} | {_cell(verdict, 80)} | "
            f"{_cell(line)} |"
        )
    lines += ["", "## Faults inside a run", "", "| fault | exit | held | outcome |", "|---|---|---|---|"]
    for row in in_run:
        lines.append(
            f"| {row['name']} | {row['exit']} | {'yes' if row['held'] else 'NO'} | "
            f"{_cell(str(row['line']).replace(str(work), '<tmp>'))} |"
        )
    lines += [
        "",
        "## kill -9 during short runs",
        "",
        f"Seed {seed}; plan {', '.join(DEFAULT_PLAN)} (`write@N`: killed inside the N-th checkpoint write "
        "of that process, paused by `tests/reliability/_driver.py`; `timer`: killed a seeded random "
        f"moment after the first epoch). {kills.processes} processes; the uninterrupted reference ran "
        "beside them.",
        "",
    ]
    lines += [f"{i + 1}. {entry}" for i, entry in enumerate(kills.log)]
    lines += [
        "",
        f"Result: {'identical to the uninterrupted run' if kills.identical else kills.mismatches}; "
        f"{kills.stale_temp_files_seen} stale temporary file(s) left by the kills, all removed at resume.",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    return all_held


def main_cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill timings")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "reliability.md")
    args = parser.parse_args()
    ok = write_report(args.out, args.seed)
    print(f"wrote {args.out} ({'all scenarios held' if ok else 'SOME SCENARIOS FAILED'})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main_cli())
