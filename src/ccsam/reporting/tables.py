"""Tables over run folders: last-epoch test metrics grouped by run name, mean +- std over seeds."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

METRICS = ("top1", "many", "medium", "few", "ece")


def load_results(run_dirs: list[Path]) -> dict[str, list[dict[str, Any]]]:
    """``results.json`` of every finished run, grouped by the run's ``name`` and config hash without the
    seed (one entry per seed; see :func:`ccsam.reporting.collect.collect_runs`, which also says which
    folders were skipped and why)."""
    from ccsam.reporting.collect import collect_runs

    return collect_runs([Path(p) for p in run_dirs]).groups


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    mean, std = mean_std(values)
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def group_table(groups: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown: one row per run name with seeds, overall / many / medium / few / ECE (%) and train time."""
    lines = ["| method (run name) | seeds | overall % | many % | medium % | few % | ECE % | train time / run |",
             "|---|---|---|---|---|---|---|---|"]
    for name, runs in sorted(groups.items()):
        cells = [_cell([r["test"][m] for r in runs if r["test"][m] is not None]) for m in METRICS]
        seeds = ",".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"]))
        minutes = statistics.fmean(r["train_time_s"] for r in runs) / 60
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + f" | {minutes:.1f} min |")
    first = next(iter(groups.values()))[0] if groups else None
    if first is not None:
        sizes = first["test"]["group_sizes"]
        lines += ["", f"Class groups by training-set size: many (> {first['many_threshold']}) = {sizes['many']} "
                      f"classes, medium = {sizes['medium']}, few (< {first['few_threshold']}) = {sizes['few']}; "
                      f"training counts {first['class_counts']}."]
    return "\n".join(lines) + "\n"
