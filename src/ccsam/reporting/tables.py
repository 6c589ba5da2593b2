"""Tables over run folders: last-epoch test metrics grouped by run name, mean +- std over seeds
(the value alone for a single seed)."""

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
    """``mean ± std`` in % over two or more values; one value alone (one seed has no spread)."""
    if not values:
        return "-"
    mean, std = mean_std(values)
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if len(values) > 1 else f"{100 * mean:.2f}"


def format_duration(seconds: float) -> str:
    """A duration for a table: seconds below a minute (``"42 s"``, ``"3.5 s"``), else minutes (``"2.0 min"``)."""
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    if seconds < 59.5:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


def group_table(groups: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown: one row per run name with seeds, overall / many / medium / few / ECE (%) and train time.

    Each metric is the mean ± sample std over the group's seeds, or the value alone for one seed."""
    lines = ["| method (run name) | seeds | overall % | many % | medium % | few % | ECE % | train time / run |",
             "|---|---|---|---|---|---|---|---|"]
    for name, runs in sorted(groups.items()):
        cells = [_cell([r["test"][m] for r in runs if r["test"][m] is not None]) for m in METRICS]
        seeds = ",".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"]))
        seconds = statistics.fmean(r["train_time_s"] for r in runs)
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + f" | {format_duration(seconds)} |")
    first = next(iter(groups.values()))[0] if groups else None
    if first is not None:
        sizes = first["test"]["group_sizes"]
        lines += ["", f"Class groups by training-set size: many (> {first['many_threshold']}) = {sizes['many']} "
                      f"classes, medium = {sizes['medium']}, few (< {first['few_threshold']}) = {sizes['few']}; "
                      f"training counts {first['class_counts']}."]
    return "\n".join(lines) + "\n"
