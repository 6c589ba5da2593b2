"""``ccsam report``: a Markdown report with tables and PNG figures over run folders.

It reads only run folders: ``results.json`` (test metrics, per-class accuracy, reliability bins,
confusion matrix) and, where present, the analysis files written by ``ccsam probe`` /
``ccsam landscape`` / ``ccsam sharpness`` (``RUN_DIR/analysis/*.json``).
"""

from __future__ import annotations

import json
import statistics
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ccsam.errors import RunDirError
from ccsam.reporting import plots
from ccsam.reporting.tables import group_table, load_results, mean_std

GROUPS = ("overall", "many", "medium", "few")


def _analysis(run: dict[str, Any], kind: str) -> dict[str, Any] | None:
    path = Path(run["run_dir"]) / "analysis" / f"{kind}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _mean_per_class(runs: list[dict[str, Any]]) -> list[float | None]:
    columns = zip(*(r["test"]["per_class_accuracy"] for r in runs))
    return [statistics.fmean(v for v in col if v is not None) if any(v is not None for v in col) else None
            for col in columns]


def _probe_section(groups: dict[str, list[dict[str, Any]]], figures: Path) -> list[str]:
    spreads: dict[str, dict[str, tuple[float, float] | None]] = {}
    sigma_used = None
    for name, runs in groups.items():
        probes = [p for p in (_analysis(r, "probe") for r in runs) if p is not None]
        if not probes:
            continue
        entry = probes[0]["sigmas"][-1] if sigma_used is None else next(
            s for s in probes[0]["sigmas"] if s["sigma"] == sigma_used)
        sigma_used = entry["sigma"]
        per_group = {}
        for group in GROUPS:
            values = [next(s for s in p["sigmas"] if s["sigma"] == sigma_used)["change"][group] for p in probes]
            values = [v for v in values if v is not None]
            per_group[group] = (statistics.fmean(v["mean"] for v in values),
                                statistics.fmean(v["std"] for v in values)) if values else None
        spreads[name] = per_group
    if not spreads or sigma_used is None:
        return []
    plots.probe_plot(spreads, sigma_used, figures / "probe.png")
    lines = ["## Random weight perturbation", "",
             f"Loss increase on the training split under Gaussian weight noise (sigma = {sigma_used:g}, "
             "the same draws for every model); mean ± std over draws, averaged over seeds.", "",
             "| method | " + " | ".join(GROUPS) + " |", "|---|" + "---|" * len(GROUPS)]
    for name, per_group in spreads.items():
        cells = ["-" if per_group[g] is None else f"{per_group[g][0]:.4f} ± {per_group[g][1]:.4f}" for g in GROUPS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + ["", "![probe](figures/probe.png)", ""]


def _landscape_section(groups: dict[str, list[dict[str, Any]]], figures: Path) -> list[str]:
    curves = {name: land for name, runs in groups.items()
              if (land := next((x for x in (_analysis(r, "landscape") for r in runs) if x), None))}
    if not curves:
        return []
    plots.landscape_plot(curves, figures / "landscape.png")
    lines = ["## 1-D loss landscape", "",
             "Training loss along one filter-normalised random direction (same direction seed for every model). "
             "Sharpness proxy: mean of L(-1) and L(+1) minus L(0).", "",
             "| method | " + " | ".join(GROUPS) + " |", "|---|" + "---|" * len(GROUPS)]
    for name, curve in curves.items():
        centre = len(curve["alphas"]) // 2
        cells = []
        for group in GROUPS:
            values = curve.get(group)
            if not values or values[centre] is None:
                cells.append("-")
            else:
                cells.append(f"{(values[0] + values[-1]) / 2 - values[centre]:.4f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + ["", "![landscape](figures/landscape.png)", ""]


def build_report(run_dirs: list[Path], out_dir: Path, *, title: str = "ccsam report") -> Path:
    """Write ``out_dir/report.md`` and ``out_dir/figures/*.png``; refuses a non-empty ``out_dir``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise RunDirError(f"report folder '{out_dir}' exists and is not empty; choose another --out")
    groups = load_results([Path(p) for p in run_dirs])
    if not groups:
        raise RunDirError("none of the given folders has a results.json; pass finished run folders")
    figures = out_dir / "figures"
    first = {name: runs[0] for name, runs in groups.items()}
    counts = next(iter(first.values()))["class_counts"]
    plots.per_class_accuracy_plot({n: (counts, _mean_per_class(r)) for n, r in groups.items()},
                                  figures / "per_class_accuracy.png")
    lines = [f"# {title}", "", f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from "
             f"{sum(len(r) for r in groups.values())} run folders. Last-epoch test metrics; no choice was made "
             "on the test split.", "", "## Test metrics (mean ± std over seeds)", "", group_table(groups),
             "## Per-class accuracy against class size", "", "![per-class accuracy](figures/per_class_accuracy.png)",
             ""]
    reliability = {n: r["test"]["reliability"] for n, r in first.items() if "reliability" in r["test"]}
    if reliability:
        plots.reliability_plot(reliability, figures / "reliability.png")
        lines += ["## Calibration (first seed of each method)", "", "![reliability](figures/reliability.png)", ""]
    confusion = {n: r["test"]["confusion_matrix"] for n, r in first.items() if "confusion_matrix" in r["test"]}
    if confusion:
        size = len(next(iter(confusion.values())))
        plots.confusion_plot(confusion, [str(i) for i in range(size)], figures / "confusion.png")
        lines += ["## Confusion matrices (first seed, rows normalised)", "", "![confusion](figures/confusion.png)", ""]
    lines += _probe_section(groups, figures) + _landscape_section(groups, figures)
    lines += ["## Runs", "", "| run name | seed | folder |", "|---|---|---|"]
    lines += [f"| {n} | {r['seed']} | `{r['run_dir']}` |" for n, runs in sorted(groups.items()) for r in runs]
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


__all__ = ["build_report", "mean_std"]
