"""Markdown table of last-epoch test metrics over run folders, grouped by run name (mean +- std over seeds).

Usage: python benchmarks/summarize_runs.py RUN_DIR [RUN_DIR ...] > table.md
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

COLUMNS = ("top1", "many", "medium", "few", "ece")


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def summarize(run_dirs: list[Path]) -> str:
    """One row per run name: seeds, each metric as mean ± std in %, and the mean training time."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for run_dir in run_dirs:
        results_path = run_dir / "results.json"
        if results_path.is_file():
            groups[json.loads(results_path.read_text())["name"]].append(json.loads(results_path.read_text()))
    lines = ["| method (preset) | seeds | overall % | many % | medium % | few % | ECE % | train time / run |",
             "|---|---|---|---|---|---|---|---|"]
    for name, runs in sorted(groups.items()):
        cells = [_mean_std([r["test"][c] for r in runs if r["test"][c] is not None]) for c in COLUMNS]
        seeds = ",".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"]))
        minutes = statistics.fmean(r["train_time_s"] for r in runs) / 60
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + f" | {minutes:.1f} min |")
    first = next(iter(groups.values()))[0] if groups else None
    if first is not None:
        sizes = first["test"]["group_sizes"]
        lines.append("")
        lines.append(f"Class groups by training-set size: many (> {first['many_threshold']}) = {sizes['many']} "
                     f"classes, medium = {sizes['medium']}, few (< {first['few_threshold']}) = {sizes['few']}; "
                     f"training counts {first['class_counts']}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(summarize([Path(p) for p in sys.argv[1:]]), end="")
