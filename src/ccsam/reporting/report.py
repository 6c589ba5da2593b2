"""``ccsam report``: a Markdown report with tables and PNG figures over run folders.

It reads only run folders: ``results.json`` (test metrics, per-class accuracy, reliability bins,
confusion matrix) and, where present, the analysis files written by ``ccsam probe`` /
``ccsam landscape`` / ``ccsam sharpness`` (``RUN_DIR/analysis/*.json``).
"""

from __future__ import annotations

import json
import logging
import statistics
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ccsam.atomic_io import atomic_write_text, check_writable
from ccsam.errors import RunDirError
from ccsam.reporting import plots
from ccsam.reporting.collect import CollectedRuns, collect_runs
from ccsam.reporting.tables import group_table

_logger = logging.getLogger(__name__)

GROUPS = ("overall", "many", "medium", "few")


def _analysis(run: dict[str, Any], kind: str) -> dict[str, Any] | None:
    path = Path(run["run_dir"]) / "analysis" / f"{kind}.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(errors="replace"))
    except json.JSONDecodeError as exc:
        raise RunDirError(f"'{path}' is not valid JSON ({exc.msg}); recompute it with `ccsam {kind} --force "
                          f"{run['run_dir']}`") from None


def _mean_per_class(runs: list[dict[str, Any]]) -> list[float | None]:
    columns = zip(*(r["test"]["per_class_accuracy"] for r in runs), strict=False)
    return [statistics.fmean(v for v in col if v is not None) if any(v is not None for v in col) else None
            for col in columns]


def _coverage(found: int, runs: list[dict[str, Any]]) -> str:
    """``"k of N"``: how many of a method's runs (seeds) a row uses."""
    return f"{found} of {len(runs)}"


def _probe_section(groups: dict[str, list[dict[str, Any]]], figures: Path, split: str = "train") -> list[str]:
    """Loss increase under weight noise at the largest sigma every probe has, per group: mean over the
    runs with a probe, and how many of the method's runs that is."""
    probed: dict[str, list[dict[str, Any]]] = {}
    for name, runs in groups.items():
        probes = [p[split] for p in (_analysis(r, "probe") for r in runs) if p is not None and split in p]
        if probes:
            probed[name] = probes
    if not probed:
        return []
    common = set.intersection(*({e["sigma"] for e in p["results"]} for ps in probed.values() for p in ps))
    if not common:
        return ["## Random weight perturbation", "",
                "The probes share no sigma, so they are not compared; rerun `ccsam probe --force` with the same "
                "`--sigmas` for every run.", ""]
    sigma = max(common)
    spreads: dict[str, dict[str, tuple[float, float] | None]] = {}
    for name, probes in probed.items():
        entries = [next(e for e in p["results"] if e["sigma"] == sigma) for p in probes]
        per_group: dict[str, tuple[float, float] | None] = {}
        for group in GROUPS:
            means = [e["delta_mean"][group] for e in entries if e["delta_mean"][group] is not None]
            stds = [e["delta_std"][group] for e in entries if e["delta_std"][group] is not None]
            per_group[group] = (statistics.fmean(means), statistics.fmean(stds) if stds else 0.0) if means else None
        spreads[name] = per_group
    plots.probe_plot(spreads, sigma, figures / "probe.png")
    lines = ["## Random weight perturbation", "",
             f"Loss increase on the {split} split under Gaussian weight noise (sigma = {sigma:g}; the same draws "
             "for every model): mean ± std over draws, averaged over the runs of each method that have a probe "
             "(column 'runs': how many of its seeds). A larger increase or spread is a sharper minimum.", "",
             "| method | runs | " + " | ".join(GROUPS) + " |", "|---|---|" + "---|" * len(GROUPS)]
    for name, per_group in spreads.items():
        cells = ["-" if (spread := per_group[g]) is None else f"{spread[0]:.4f} ± {spread[1]:.4f}" for g in GROUPS]
        lines.append(f"| {name} | {_coverage(len(probed[name]), groups[name])} | " + " | ".join(cells) + " |")
    return lines + ["", "![probe](figures/probe.png)", ""]


def _landscape_section(groups: dict[str, list[dict[str, Any]]], figures: Path, split: str = "train") -> list[str]:
    """1-D curves of one run of each method (the first with a landscape), and the curvature proxy
    (L(-1) + L(+1)) / 2 - L(0) of that run."""
    curves: dict[str, dict[str, Any]] = {}
    chosen: dict[str, tuple[Any, int]] = {}  # name -> (seed of the curve's run, runs with a landscape)
    surfaces: dict[str, dict[str, Any]] = {}
    for name, runs in groups.items():
        found = [(r, x[split]) for r in runs if (x := _analysis(r, "landscape")) and split in x]
        if not found:
            continue
        run, land = found[0]
        curves[name] = {"alphas": land["alphas"], **land["loss"]}
        chosen[name] = (run["seed"], len(found))
        if "surface" in land:
            surfaces[name] = land["surface"]
    if not curves:
        return []
    plots.landscape_plot(curves, figures / "landscape.png")
    lines = ["## 1-D loss landscape", "",
             f"{split.capitalize()} loss along one filter-normalised random direction (BN and biases not moved; "
             "the same direction seed for every model), of one run per method: the seed in column 'seed' "
             "(column 'runs': how many of the method's seeds have a landscape; no average over seeds). "
             "Curvature proxy: (L(-1) + L(+1)) / 2 - L(0).", "",
             "| method | seed | runs | " + " | ".join(GROUPS) + " |", "|---|---|---|" + "---|" * len(GROUPS)]
    for name, curve in curves.items():
        centre = len(curve["alphas"]) // 2
        cells = []
        for group in GROUPS:
            values = curve.get(group)
            if values and None not in (values[0], values[-1], values[centre]):
                cells.append(f"{(values[0] + values[-1]) / 2 - values[centre]:.4f}")
            else:
                cells.append("-")
        seed, found_count = chosen[name]
        lines.append(f"| {name} | {seed} | {_coverage(found_count, groups[name])} | " + " | ".join(cells) + " |")
    lines += ["", "![landscape](figures/landscape.png)", ""]
    if surfaces:
        plots.contour_plot(surfaces, figures / "landscape_2d.png")
        lines += ["2-D loss surface over two filter-normalised directions (the same run of each method):", "",
                  "![2-D landscape](figures/landscape_2d.png)", ""]
    return lines


def _sharpness_section(groups: dict[str, list[dict[str, Any]]], figures: Path) -> list[str]:
    """Per-class top Hessian eigenvalue against class size (one run of each method: the first with one)."""
    found: dict[str, dict[str, Any]] = {}
    which: list[str] = []
    for name, runs in groups.items():
        with_sharpness = [(r, x) for r in runs if (x := _analysis(r, "sharpness"))]
        if with_sharpness:
            found[name] = with_sharpness[0][1]
            which.append(f"{name}: seed {with_sharpness[0][0]['seed']} "
                         f"({_coverage(len(with_sharpness), runs)} runs have one)")
    if not found:
        return []
    plots.sharpness_plot(found, figures / "sharpness.png")
    return ["## Per-class sharpness", "", "Top eigenvalue of the Hessian of each class's training loss (power "
            "iteration on Hessian-vector products), for the head alone and for the whole model; one run per "
            f"method ({'; '.join(which)}).", "",
            "![sharpness](figures/sharpness.png)", ""]


def build_report(run_dirs: list[Path], out_dir: Path, *, title: str = "ccsam report") -> Path:
    """Write ``out_dir/report.md`` and ``out_dir/figures/*.png``; refuses a non-empty ``out_dir``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise RunDirError(f"report folder '{out_dir}' exists and is not empty; choose another --out")
    check_writable(out_dir)
    collected = collect_runs([Path(p) for p in run_dirs])
    groups = collected.groups
    if not groups:
        reasons = "; ".join(f"'{folder}': {why}" for folder, why in collected.skipped)
        raise RunDirError(f"no finished run folder to report ({reasons}); pass folders with a results.json")
    _check_one_data_set(collected)
    for folder, why in collected.skipped:
        _logger.warning("ccsam: skipped '%s': %s", folder, why)
    figures = out_dir / "figures"
    first = {name: runs[0] for name, runs in groups.items()}
    counts = next(iter(first.values()))["class_counts"]
    plots.per_class_accuracy_plot({n: (counts, _mean_per_class(r)) for n, r in groups.items()},
                                  figures / "per_class_accuracy.png")
    lines = [f"# {title}", "", f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from "
             f"{sum(len(r) for r in groups.values())} run folders. Last-epoch test metrics; no choice was made "
             "on the test split.", "", "## Test metrics (mean ± std over seeds; one seed: its value)", "",
             group_table(groups),
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
    lines += _probe_section(groups, figures) + _landscape_section(groups, figures) + _sharpness_section(groups, figures)
    lines += ["## Runs", "", "| run name | seed | folder |", "|---|---|---|"]
    lines += [f"| {n} | {r['seed']} | `{r['run_dir']}` |" for n, runs in sorted(groups.items()) for r in runs]
    if collected.skipped:
        lines += ["", "Skipped folders:", ""] + [f"- `{folder}`: {why}" for folder, why in collected.skipped]
    report = out_dir / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report


def _check_one_data_set(collected: CollectedRuns) -> None:
    """Refuse runs on different data sets or class profiles: each figure has one x-axis of class sizes."""
    kinds: dict[tuple[str, tuple[int, ...]], list[str]] = {}
    for runs in collected.groups.values():
        for run in runs:
            key = (str(run["dataset"]), tuple(run.get("class_counts") or ()))
            kinds.setdefault(key, []).append(run["run_dir"])
    if len(kinds) > 1:
        parts = [f"{name} with class counts {list(counts)[:4]}{'...' if len(counts) > 4 else ''}: "
                 f"{', '.join(folders[:2])}{' ...' if len(folders) > 2 else ''}"
                 for (name, counts), folders in kinds.items()]
        raise RunDirError("these runs use different data (" + "; ".join(parts) + "); one report compares "
                          "runs on one data set and profile, so make one report per data set")


__all__ = ["build_report"]
