"""The Markdown report of a `ccsam tune` study folder (used by fmnist_tuned_study.py).

Per method: budget, chosen values, proxy validation score, full-schedule test mean ± std over seeds
(overall / many / medium / few / ECE), seeds missing; the paired per-seed comparison of the best CC-SAM
variant against the best baseline (both chosen by validation) with a 95 % t-interval; the ablations; the
search spaces; and the per-epoch cost recorded on this machine with the full study's estimated time.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ccsam.tuning import StudySpec, load_study_spec, study_summary

ABLATED = "ccsam-released"
METRICS = ("top1", "many", "medium", "few", "ece")


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz's method)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b) for 0 <= x <= 1."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Student's t distribution function: 1 - I_{df/(df+t^2)}(df/2, 1/2) / 2 for t >= 0 (symmetric)."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile_975(df: int) -> float:
    """Two-sided 95 % quantile of Student's t with ``df`` degrees of freedom: the t with
    ``t_cdf(t, df) = 0.975``, by bisection on the distribution function (scipy's ``t.ppf`` if installed)."""
    if df < 1:
        raise ValueError(f"Student's t needs df >= 1, got {df}")
    try:
        from scipy.stats import t

        return float(t.ppf(0.975, df))
    except ImportError:
        return _t_quantile_975_math(df)


def _t_quantile_975_math(df: int) -> float:
    """The 0.975 quantile of Student's t without scipy (agrees with ``scipy.stats.t.ppf`` to ~1e-10)."""
    low, high = 0.0, 20.0  # t_{0.975, 1} = 12.71 is the largest
    for _ in range(200):
        mid = 0.5 * (low + high)
        if t_cdf(mid, df) < 0.975:
            low = mid
        else:
            high = mid
        if high - low < 1e-13:
            break
    return 0.5 * (low + high)


def paired_interval(a: dict[str, float], b: dict[str, float]) -> dict[str, Any] | None:
    """Mean of the per-seed differences ``a - b`` over the seeds both have, and its 95 % t-interval
    ``mean ± t_{0.975, n-1} sd / sqrt(n)``; ``None`` below 2 paired seeds."""
    seeds = sorted(set(a) & set(b), key=int)
    if len(seeds) < 2:
        return None
    diffs = [a[s] - b[s] for s in seeds]
    mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
    half = t_quantile_975(len(diffs) - 1) * sd / len(diffs) ** 0.5
    return {"seeds": seeds, "diffs": diffs, "mean": mean, "low": mean - half, "high": mean + half}


def _pct(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def _cells(runs: dict[str, Any] | None, seeds: list[int]) -> list[str]:
    """Test metrics, full-schedule validation top-1 and the seed count (missing seeds in bold)."""
    per_seed = (runs or {}).get("per_seed", {})
    cols = [_pct([r["test"][k] for r in per_seed.values() if r["test"][k] is not None]) for k in METRICS]
    cols.append(_pct([r["val"]["top1"] for r in per_seed.values() if r.get("val")]))
    missing = [str(s) for s in seeds if str(s) not in per_seed]
    cols.append(f"{len(per_seed)}/{len(seeds)}" + (f" (**missing {', '.join(missing)}**)" if missing else ""))
    return cols


def _short(key: str) -> str:
    return key.replace("stage1.", "s1.").replace("stage2.", "s2.").replace("loss.options.", "")


def _fmt_params(params: dict[str, Any]) -> str:
    return ", ".join(
        f"`{_short(k)}`={v:.3g}" if isinstance(v, float) else f"`{_short(k)}`={v}" for k, v in params.items()
    )


def _fmt_space(spec: StudySpec, method: str) -> str:
    parts = []
    for key, p in spec.methods[method].space.items():
        if p.type == "categorical":
            parts.append(f"{_short(key)} ∈ {list(p.choices or ())}")
        else:
            parts.append(f"{_short(key)} ∈ [{p.low:g}, {p.high:g}]{' log' if p.log else ''}")
    return "; ".join(parts)


def _table(header: list[str]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]


def _results(spec: StudySpec, summary: dict[str, Any]) -> list[str]:
    lines = _table(
        [
            "method",
            "trials complete / pruned / budget",
            "chosen values",
            "val. bal. acc. % (proxy)",
            "test overall %",
            "many %",
            "medium %",
            "few %",
            "ECE %",
            "val. top-1 % (full)",
            "seeds",
        ]
    )
    for method in spec.methods:
        entry = summary.get(method, {})
        choice, states = entry.get("choice"), [t["state"] for t in entry.get("trials") or []]
        budget = f"{states.count('COMPLETE')} / {states.count('PRUNED')} / {spec.trials}"
        chosen = _fmt_params(choice["params"]) if choice else "search not finished"
        proxy = f"{100 * choice['validation']:.2f}" if choice else "-"
        lines.append(
            "| "
            + " | ".join([method, budget, chosen, proxy, *_cells(entry.get("final"), list(spec.seeds))])
            + " |"
        )
    return lines


def _paired(spec: StudySpec, summary: dict[str, Any]) -> list[str]:
    """Best CC-SAM variant vs best baseline, each chosen by its search (validation) score, never by test."""

    def best(names: list[str]) -> str | None:
        scored = [
            (summary[n]["choice"]["validation"], n) for n in names if (summary.get(n) or {}).get("choice")
        ]
        return max(scored)[1] if scored else None

    ccsam = best([m for m in spec.methods if m.startswith("ccsam")])
    base = best([m for m in spec.methods if not m.startswith("ccsam")])
    if ccsam is None or base is None:
        return ["Not available yet (needs a finished search of a CC-SAM variant and of a baseline)."]
    top1 = {n: _top1_per_seed(summary, n) for n in (ccsam, base)}
    result = paired_interval(top1[ccsam], top1[base])
    head = f"Best CC-SAM variant by validation: **{ccsam}**; best baseline by validation: **{base}**."
    if result is None:
        return [head, "", "Fewer than 2 seeds finished for both; no interval yet."]
    diffs = ", ".join(
        f"seed {s}: {100 * d:+.2f}" for s, d in zip(result["seeds"], result["diffs"], strict=True)
    )
    verdict = (
        "CC-SAM is better beyond the interval"
        if result["low"] > 0
        else "the baseline is better beyond the interval"
        if result["high"] < 0
        else "no difference can be claimed: the interval contains 0"
    )
    return [
        head,
        "",
        f"{ccsam} − {base} (test overall top-1, points): {diffs}; mean {100 * result['mean']:+.2f}, "
        f"95 % t-interval [{100 * result['low']:+.2f}, {100 * result['high']:+.2f}] over "
        f"{len(result['seeds'])} paired seeds: {verdict}.",
    ]


def _top1_per_seed(summary: dict[str, Any], method: str) -> dict[str, float]:
    per_seed = ((summary.get(method) or {}).get("final") or {}).get("per_seed") or {}
    return {s: r["test"]["top1"] for s, r in per_seed.items()}


def _paired_matrix(spec: StudySpec, summary: dict[str, Any]) -> list[str]:
    """Every CC-SAM variant against every baseline, paired over the seeds both finished: for completeness
    (the pre-declared comparison is the one above), so that no pair has to be computed by hand."""
    ccsam = [m for m in spec.methods if m.startswith("ccsam")]
    bases = [m for m in spec.methods if not m.startswith("ccsam")]
    lines = _table(["CC-SAM variant − baseline (points, 95 % t-interval)", *bases])
    for c in ccsam:
        cells = [
            _interval_cell(paired_interval(_top1_per_seed(summary, c), _top1_per_seed(summary, b)), len(spec.seeds))
            for b in bases
        ]
        lines.append("| " + " | ".join([c, *cells]) + " |")
    return lines + ["", "Test overall top-1, paired per seed; `-`: fewer than 2 seeds finished for both."]


def _interval_cell(r: dict[str, Any] | None, n_seeds: int) -> str:
    """``mean [low, high]`` of a paired comparison in points, with the seed count if not all seeds paired."""
    if r is None:
        return "-"
    cell = f"{100 * r['mean']:+.2f} [{100 * r['low']:+.2f}, {100 * r['high']:+.2f}]"
    return cell + ("" if len(r["seeds"]) == n_seeds else f" ({len(r['seeds'])} seeds)")


def _ablations(spec: StudySpec, summary: dict[str, Any], names: list[str]) -> list[str]:
    """Every ablation's test metrics and its paired difference from the tuned configuration it ablates."""
    seeds = list(spec.seeds)
    entry = summary.get(ABLATED, {})
    tuned = _top1_per_seed(summary, ABLATED)
    lines = _table(
        ["variant", "test overall %", "many %", "medium %", "few %", "ECE %", "val. top-1 %", "seeds",
         "tuned − variant (points, 95 % t-interval)"]
    )
    lines.append(
        "| " + " | ".join(["ccsam (tuned; the results row)", *_cells(entry.get("final"), seeds), ""]) + " |"
    )
    for name in names:
        runs = entry.get("variants", {}).get(name)
        variant = {s: r["test"]["top1"] for s, r in ((runs or {}).get("per_seed") or {}).items()}
        paired = _interval_cell(paired_interval(tuned, variant), len(seeds))
        lines.append("| " + " | ".join([name, *_cells(runs, seeds), paired]) + " |")
    return lines + [
        "",
        "`radius-*`: `stage1.radius` (none: no class-conditional perturbation; dir_only: the "
        "class direction at the fixed length 1 (the slides' \"fixed magnitude 1\", about 320 times the tuned "
        "radius); dir_only-matched: the class direction at the fixed length of the tuned run's mean CC-SAM "
        "radius (`fmnist-lt-tuned-ccsam-radius.json`, measured on the training split by "
        "`benchmarks/measure_ccsam_radius.py`; a variant added after the dir_only row was read); mag_only: the "
        "class radius along a random direction; under the preset's mixup the class-conditional term scores "
        "the mixed images against y_a alone, as the released code does, so radius-none is not mixup ERM). "
        "`flat-mixup`: that term scored with the mixup loss (`stage1.flat_targets=mixup`; a variant added "
        "after s1-erm+s2-ccsam's first seeds were read). "
        "`s1-*+s2-*`: CC-SAM or ERM stage 1 (tuned values otherwise), then CC-SAM's tuned stage 2 or "
        "cRT (fresh head, class-balanced batches, cosine LR, 20 epochs). Test overall top-1, paired per seed.",
    ]


#: The stage-1 x stage-2 isolation: (stage 1, stage 2) -> the ablation holding it (None: the tuned row).
ISOLATION = {("CC-SAM", "CC-SAM"): None, ("ERM", "CC-SAM"): "s1-erm+s2-ccsam",
             ("CC-SAM", "cRT"): "s1-ccsam+s2-crt", ("ERM", "cRT"): "s1-erm+s2-crt"}


def _isolation(summary: dict[str, Any], n_seeds: int) -> list[str]:
    """The four stage-1 x stage-2 combinations as a grid of test top-1, and each stage's effect with the
    other stage fixed (paired per seed), so that no pair has to be computed by hand."""
    entry = summary.get(ABLATED, {})

    def top1(name: str | None) -> dict[str, float]:
        runs = entry.get("final") if name is None else entry.get("variants", {}).get(name)
        return {s: r["test"]["top1"] for s, r in ((runs or {}).get("per_seed") or {}).items()}

    cell = {key: top1(name) for key, name in ISOLATION.items()}
    lines = _table(["stage 1 \\ stage 2", "CC-SAM", "cRT", "CC-SAM − cRT (points, 95 % t-interval)"])
    for s1 in ("CC-SAM", "ERM"):
        means = [_pct(list(cell[(s1, s2)].values())) for s2 in ("CC-SAM", "cRT")]
        effect = _interval_cell(paired_interval(cell[(s1, "CC-SAM")], cell[(s1, "cRT")]), n_seeds)
        lines.append(f"| {s1} | {' | '.join(means)} | {effect} |")
    effects = [_interval_cell(paired_interval(cell[("CC-SAM", s2)], cell[("ERM", s2)]), n_seeds)
               for s2 in ("CC-SAM", "cRT")]
    lines.append(f"| CC-SAM − ERM | {' | '.join(effects)} | |")
    return lines + ["", "Test overall top-1 % (mean ± std over seeds); the differences are paired per seed."]


def _epoch_seconds(full: StudySpec, method: str, entry: dict[str, Any]) -> float | None:
    """Median recorded seconds per epoch of ``method`` (validation included): each trial's duration over
    the epochs it reported, each seed's training time over its schedule's epochs. From the JSON records
    alone, so a study folder rebuilt from them (``ccsam.tuning.restore_study``) reports the same cost."""
    times = [
        t["duration_s"] / len(t["validation_per_epoch"])
        for t in entry.get("trials") or []
        if t.get("duration_s") and t.get("validation_per_epoch")
    ]
    params = (entry.get("choice") or {}).get("params")
    seeds = (entry.get("final") or {}).get("per_seed") or {}
    if params is not None and seeds:
        epochs = full.final_config(method, params, 0).total_epochs
        times += [r["train_time_s"] / epochs for r in seeds.values()]
    return statistics.median(times) if times else None


def _cost(full: StudySpec, summary: dict[str, Any], n_ablations: int) -> list[str]:
    """Median recorded seconds per epoch times the full study's epochs (unpruned search + seeds)."""
    lines = _table(
        ["method", "median s / epoch (incl. validation)", "est. full search + final (+ ablations)"]
    )
    total = 0.0
    for method in full.methods:
        sec = _epoch_seconds(full, method, summary.get(method, {}))
        if sec is None:
            lines.append(f"| {method} | - | - |")
            continue
        params = (summary.get(method, {}).get("choice") or {}).get("params", {})
        params = {
            k: v for k, v in params.items() if k != "stage2.epochs"
        }  # a smoke run's value is not the real one
        search = full.search_config(method, params).total_epochs
        final = full.final_config(method, params, 0).total_epochs * (
            1 + (n_ablations if method == ABLATED else 0)
        )
        est = sec * (full.trials * search + len(full.seeds) * final)
        total += est
        lines.append(f"| {method} | {sec:.2f} | {est / 3600:.1f} h |")
    return lines + ["", f"Estimated full study, one job at a time: {total / 3600:.1f} h without pruning."]


def write_report(
    tree: dict[str, Any],
    full_tree: dict[str, Any],
    study_dir: Path,
    out: Path,
    ablations: dict[str, list[str]],
    *,
    smoke: bool = False,
    preface: str = "",
) -> None:
    """Write the report of ``study_dir`` (declared by ``tree``; ``full_tree`` = the real study, for the
    cost estimate) to ``out``; ``preface`` (Markdown) goes under the title."""
    spec, full = load_study_spec(tree), load_study_spec(full_tree)
    summary = study_summary(study_dir)
    seeds = ", ".join(map(str, spec.seeds))
    flag = " --smoke" if smoke else ""
    lines = [
        f"# Fashion-MNIST-LT IR 100: every method tuned on validation, then seeds {seeds}"
        + (" (SMOKE RUN: tiny schedule, not a result)" if smoke else ""),
        "",
        *([preface, ""] if preface else []),
        f"Command: `python benchmarks/fmnist_tuned_study.py{flag} --study-dir {study_dir}`; study file "
        f"`benchmarks/fmnist_tuned_study.yaml`. Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on "
        f"{platform.machine()} / {os.cpu_count()} CPUs, torch {torch.__version__}.",
        "",
        f"Protocol: {spec.trials} Optuna trials per method (TPE; {spec.pruner} pruner on the per-epoch "
        "validation balanced accuracy) on the proxy schedule, scored on the balanced validation split "
        "(unused training images) only; the best trial's values are trained on the full schedule once per "
        "seed and the test split is evaluated once per seed, at the last epoch. Rows marked **missing** have "
        "not finished every seed.",
        "",
        "## Results",
        "",
        *_results(spec, summary),
        "",
        "## Paired comparison",
        "",
        *_paired(spec, summary),
        "",
        "Every CC-SAM variant against every baseline (reported for completeness, not a selection):",
        "",
        *_paired_matrix(spec, summary),
        "",
        f"## Which part of CC-SAM helps ({ABLATED}, tuned values fixed)",
        "",
        *_ablations(spec, summary, list(ablations)),
        "",
        "Stage-1 isolation: each stage's part, the other fixed (CC-SAM stages with the tuned values):",
        "",
        *_isolation(summary, len(spec.seeds)),
        "",
        "## Search spaces",
        "",
        *_table(["method", "preset, fixed overrides", "space"]),
    ]
    for method, m in spec.methods.items():
        fixed = ", ".join(f"`{o}`" for o in m.overrides) or "-"
        lines.append(f"| {method} | `{m.preset}`, {fixed} | {_fmt_space(spec, method)} |")
    lines += ["", "## Cost on this machine", "", *_cost(full, summary, len(ablations)), ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
