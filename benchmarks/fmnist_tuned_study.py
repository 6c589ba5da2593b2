"""Issue 12's study: does CC-SAM help on Fashion-MNIST-LT IR 100 once every method is tuned the same way?

Usage (one job at a time; re-run the same command to continue after an interruption):
    python benchmarks/fmnist_tuned_study.py --data-root ../shared/data --study-dir runs/fmnist-lt-tuned
    python benchmarks/fmnist_tuned_study.py --smoke --study-dir /tmp/fmnist-smoke   # minutes: proves it runs

Phases, in this order, each resumable: (1) search: every method of `fmnist_tuned_study.yaml`, the same
number of Optuna trials on the 30 + 10 proxy schedule, validation split only; (2) final: each method's
chosen values on the full 120 + 20 schedule, seeds 0-4, test split once per seed; (3) ablations of the
tuned CC-SAM (released form): the radius ablation (none / dir_only / mag_only vs ccsam) and the stage-1
isolation (CC-SAM or ERM stage 1, each followed by CC-SAM's stage 2 or cRT). After every job the report
`benchmarks/results/fmnist-lt-tuned.md` is rewritten from whatever has finished (`--smoke`: inside the
study folder). A lock file in the study folder keeps a second copy from running at the same time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import yaml

from ccsam.config import resolve_config
from ccsam.data.build import DATA_ROOT_ENV
from ccsam.tuning import load_study_spec, run_final, run_search, study_summary

HERE = Path(__file__).resolve().parent
SPEC = HERE / "fmnist_tuned_study.yaml"
REPORT = HERE / "results" / "fmnist-lt-tuned.md"
ABLATED = "ccsam-released"
CRT_STAGE2 = ["stage2.method=retrain", "stage2.reinit_head=true", "stage2.sampler=class_balanced",
              "stage2.schedule=cosine", "stage2.bn_mode=eval", "stage2.epochs=20", "stage2.warmup_epochs=0"]
ABLATIONS: dict[str, list[str]] = {
    "radius-none": ["stage1.radius_mode=none"],
    "radius-dir_only": ["stage1.radius_mode=dir_only"],
    "radius-mag_only": ["stage1.radius_mode=mag_only"],
    "s1-erm+s2-ccsam": ["stage1.method=erm"],
    "s1-ccsam+s2-crt": CRT_STAGE2,
    "s1-erm+s2-crt": ["stage1.method=erm", *CRT_STAGE2],
}
# Smoke: the pipeline end to end in minutes (a 300-image head class; timings then understate a full epoch).
SMOKE = {"trials": 2, "seeds": [0, 1], "startup_trials": 1, "pruner_startup_trials": 1, "pruner_warmup_epochs": 1,
         "search_overrides": ["stage1.epochs=1", "stage1.milestones=[1]", "stage1.warmup_epochs=0"],
         "final_overrides": ["stage1.epochs=1", "stage1.milestones=[1]", "stage1.warmup_epochs=0"]}


def _spec_tree(smoke: bool) -> dict[str, Any]:
    tree = yaml.safe_load(SPEC.read_text())
    if not smoke:
        return tree
    tree.update(SMOKE)
    tree["common_overrides"] = [*tree.get("common_overrides", []), "data.n_max=300"]
    for method in tree["methods"].values():  # one stage-2 epoch wherever a method has a stage 2
        kept = [o for o in method.get("search_overrides", []) if not o.startswith("stage2.epochs")]
        two_stage = resolve_config(method["preset"]).stage2.epochs > 0
        method["final_overrides"] = ["stage2.epochs=1"] if two_stage else []
        method["search_overrides"] = [*kept, *method["final_overrides"]]
        space = dict(method.get("space", {}))
        if "stage2.epochs" in space:
            space["stage2.epochs"] = {"type": "categorical", "choices": [1]}
        method["space"] = space
    return tree


class StudyLock:
    """``STUDY/.lock`` holding this process id: a second study process on the same folder is refused."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".lock"

    def __enter__(self) -> StudyLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            pid = int(self.path.read_text().strip() or 0)
            try:
                os.kill(pid, 0)
                sys.exit(f"study folder is in use by process {pid} ({self.path}); one job at a time")
            except (ProcessLookupError, PermissionError):
                self.path.unlink()  # left by a killed process
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return self

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


def _t_quantile(df: int) -> float:
    try:
        from scipy.stats import t

        return float(t.ppf(0.975, df))
    except ImportError:  # two-sided 95 % quantiles of Student's t, df 1..10
        table = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228]
        return table[df - 1] if df <= len(table) else 1.96


def paired_interval(a: dict[str, float], b: dict[str, float]) -> dict[str, Any] | None:
    """Mean of the per-seed differences a - b over the seeds both have, with its 95 % t-interval."""
    seeds = sorted(set(a) & set(b), key=int)
    if len(seeds) < 2:
        return None
    diffs = [a[s] - b[s] for s in seeds]
    mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
    half = _t_quantile(len(diffs) - 1) * sd / len(diffs) ** 0.5
    return {"seeds": seeds, "diffs": diffs, "mean": mean, "low": mean - half, "high": mean + half}


def _pct(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def _seed_note(per_seed: dict[str, Any], seeds: list[int]) -> str:
    missing = [str(s) for s in seeds if str(s) not in per_seed]
    return f"{len(per_seed)}/{len(seeds)}" + (f" (**missing {', '.join(missing)}**)" if missing else "")


def _row(name: str, runs: dict[str, Any] | None, seeds: list[int]) -> list[str]:
    per_seed = (runs or {}).get("per_seed", {})
    cols = [_pct([r["test"][k] for r in per_seed.values() if r["test"][k] is not None])
            for k in ("top1", "many", "medium", "few", "ece")]
    val = _pct([r["val"]["top1"] for r in per_seed.values() if r.get("val")])
    return [name, *cols, val, _seed_note(per_seed, seeds)]


def _fmt_params(params: dict[str, Any]) -> str:
    return ", ".join(f"`{k.split('.', 1)[-1]}`={v:.3g}" if isinstance(v, float) else f"`{k.split('.', 1)[-1]}`={v}"
                     for k, v in params.items())


def _fmt_space(space: dict[str, Any]) -> str:
    parts = []
    for key, p in space.items():
        short = key.split(".", 1)[-1]
        if p["type"] == "categorical":
            parts.append(f"{short} ∈ {p['choices']}")
        else:
            parts.append(f"{short} ∈ [{p['low']:g}, {p['high']:g}]{' log' if p['log'] else ''}")
    return "; ".join(parts)


def _epoch_seconds(study_dir: Path, method: str) -> float | None:
    times = []
    for metrics in (study_dir / method).glob("*/*/metrics.jsonl"):
        times += [json.loads(line)["time_s"] for line in metrics.read_text().splitlines() if line.strip()]
    return statistics.median(times) if times else None


def write_report(study_dir: Path, out: Path, smoke: bool) -> None:
    spec = load_study_spec(_spec_tree(smoke))
    summary = study_summary(study_dir)
    seeds = list(spec.seeds)
    lines = ["# Fashion-MNIST-LT IR 100: every method tuned on validation, then 5 seeds" + (" (SMOKE RUN)" if smoke
             else ""), "",
             f"Command: `python benchmarks/fmnist_tuned_study.py{' --smoke' if smoke else ''} --study-dir {study_dir}`; "
             f"study file `benchmarks/fmnist_tuned_study.yaml`. Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} "
             f"UTC on {platform.machine()} / {os.cpu_count()} CPUs, torch {torch.__version__}.", "",
             f"Protocol: each method gets {spec.trials} Optuna trials (TPE, median pruner on the per-epoch validation "
             "balanced accuracy) on the proxy schedule (30 stage-1 epochs + 10 stage-2 where a method has a stage 2), "
             "scored on the balanced validation split (20 unused training images per class) only. The best "
             "trial's values are then trained on the presets' full schedule (120 + 20) with seeds "
             f"{', '.join(map(str, seeds))}; the test split is evaluated once per seed, at the last epoch. "
             "Rows marked **missing** have not finished all seeds.", "",
             "## Results", "",
             "| method | trials (complete / pruned / budget) | chosen values | val. bal. acc. (proxy) | test overall % "
             "| many % | medium % | few % | ECE % | val. top-1 % (full) | seeds |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for method in spec.methods:
        entry = summary.get(method, {})
        choice, trials = entry.get("choice"), entry.get("trials") or []
        states = [t["state"] for t in trials]
        budget = f"{states.count('COMPLETE')} / {states.count('PRUNED')} / {spec.trials}"
        chosen = _fmt_params(choice["params"]) if choice else "search not finished"
        proxy = f"{100 * choice['validation']:.2f}" if choice else "-"
        lines.append(" | ".join(["", method, budget, chosen, proxy, *_row(method, entry.get("final"), seeds)[1:], ""])
                     .strip())
    lines += ["", "## Paired comparison (test overall top-1, per seed)", ""]
    lines += _paired_section(spec, summary)
    lines += ["", f"## Which part of CC-SAM helps ({ABLATED}, tuned values fixed, {len(seeds)} seeds)", "",
              "| variant | test overall % | many % | medium % | few % | ECE % | val. top-1 % | seeds |",
              "|---|---|---|---|---|---|---|---|"]
    ablated = summary.get(ABLATED, {})
    lines.append("| " + " | ".join(_row("ccsam (tuned, = the row above)", ablated.get("final"), seeds)) + " |")
    for name in ABLATIONS:
        lines.append("| " + " | ".join(_row(name, ablated.get("variants", {}).get(name), seeds)) + " |")
    lines += ["", "Variants: `radius-*` = `stage1.radius_mode` (none: no class-conditional perturbation; dir_only: "
              "class direction, fixed length; mag_only: class radius along a random direction); `s1-*+s2-*` = "
              "stage 1 (CC-SAM or ERM, the tuned values otherwise) followed by CC-SAM's tuned stage 2 or cRT "
              "(fresh head, class-balanced, cosine LR, 20 epochs).", "", "## Search spaces", "",
              "| method | preset + fixed overrides | space |", "|---|---|---|"]
    for method, m in spec.methods.items():
        fixed = ", ".join(f"`{o}`" for o in m.overrides) or "-"
        lines.append(f"| {method} | `{m.preset}`, {fixed} | {_fmt_space({k: p.model_dump() for k, p in m.space.items()})} |")
    lines += ["", "## Cost on this machine", "", "| method | median s / epoch (incl. validation) | est. search + final |",
              "|---|---|---|"]
    total = 0.0
    for method, m in spec.methods.items():
        sec = _epoch_seconds(study_dir, method)
        if sec is None:
            lines.append(f"| {method} | - | - |")
            continue
        full = load_study_spec(_spec_tree(smoke=False))  # the real schedule, also when timing a smoke run
        params = (summary.get(method, {}).get("choice") or {}).get("params", {})
        if smoke:
            params = {k: v for k, v in params.items() if k != "stage2.epochs"}
        search_epochs = full.search_config(method, params).total_epochs
        final_epochs = full.final_config(method, params, 0).total_epochs
        est = sec * (full.trials * search_epochs + len(full.seeds) * (final_epochs + (
            len(ABLATIONS) * final_epochs if method == ABLATED else 0)))
        total += est
        lines.append(f"| {method} | {sec:.2f} | {est / 3600:.1f} h |")
    lines += ["", f"Estimated full study (16 trials unpruned, 5 seeds, ablations), one job at a time: "
              f"{total / 3600:.1f} h (pruning shortens the search).", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


def _paired_section(spec: Any, summary: dict[str, Any]) -> list[str]:
    """Best CC-SAM variant vs best baseline, both chosen by their search (validation) score, never by test."""
    def best(names: list[str]) -> str | None:
        scored = [(summary[n]["choice"]["validation"], n) for n in names if (summary.get(n) or {}).get("choice")]
        return max(scored)[1] if scored else None

    ccsam = best([m for m in spec.methods if m.startswith("ccsam")])
    base = best([m for m in spec.methods if not m.startswith("ccsam")])
    if ccsam is None or base is None:
        return ["Not available yet (needs a finished search of a CC-SAM variant and of a baseline)."]
    top1 = {n: {s: r["test"]["top1"] for s, r in ((summary[n].get("final") or {}).get("per_seed") or {}).items()}
            for n in (ccsam, base)}
    result = paired_interval(top1[ccsam], top1[base])
    head = (f"Best CC-SAM variant by validation: **{ccsam}**; best baseline by validation: **{base}**.")
    if result is None:
        return [head, "", "Fewer than 2 seeds finished for both; no interval yet."]
    diffs = ", ".join(f"seed {s}: {100 * d:+.2f}" for s, d in zip(result["seeds"], result["diffs"], strict=True))
    verdict = ("CC-SAM is better beyond the interval" if result["low"] > 0 else
               "the baseline is better beyond the interval" if result["high"] < 0 else
               "no difference can be claimed: the interval contains 0")
    return [head, "", f"{ccsam} − {base}: {diffs}; mean {100 * result['mean']:+.2f} points, 95 % t-interval "
            f"[{100 * result['low']:+.2f}, {100 * result['high']:+.2f}] over {len(result['seeds'])} paired seeds: "
            f"{verdict}."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study-dir", default="runs/fmnist-lt-tuned")
    parser.add_argument("--data-root", default=None, help=f"sets ${DATA_ROOT_ENV}")
    parser.add_argument("--smoke", action="store_true", help="2 trials, 2 seeds, 1 (+1) epochs: checks the pipeline")
    parser.add_argument("--phase", choices=("search", "final", "ablations", "report", "all"), default="all")
    parser.add_argument("--methods", nargs="*", default=None, help="a subset of the study's methods")
    args = parser.parse_args()
    if args.data_root:
        os.environ[DATA_ROOT_ENV] = str(Path(args.data_root).expanduser())
    study_dir = Path(args.study_dir)
    report = study_dir / "fmnist-lt-tuned-smoke.md" if args.smoke else REPORT
    spec = load_study_spec(_spec_tree(args.smoke))
    methods = args.methods or list(spec.methods)
    with StudyLock(study_dir):
        if args.phase in ("search", "all"):
            for method in methods:
                run_search(spec, study_dir, method)
                write_report(study_dir, report, args.smoke)
        if args.phase in ("final", "all"):
            for method in methods:
                run_final(spec, study_dir, method)
                write_report(study_dir, report, args.smoke)
        if args.phase in ("ablations", "all") and ABLATED in methods:
            for name, overrides in ABLATIONS.items():
                run_final(spec, study_dir, ABLATED, variant=name, extra_overrides=overrides)
                write_report(study_dir, report, args.smoke)
        write_report(study_dir, report, args.smoke)
    print(f"report: {report}")


if __name__ == "__main__":
    main()
