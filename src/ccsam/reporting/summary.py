"""The console table of a run's test metrics: overall / many / medium / few, ECE and NLL (and the
OLTR open-set metrics when the run has them)."""

from __future__ import annotations

from typing import Any


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100.0 * value:.1f}"


def format_results_table(results: dict[str, Any], split: str = "test") -> str:
    """A fixed-width table of one split of ``results.json`` (accuracies in %, ECE in %, NLL in nats),
    followed on the test split by a line of the open-set metrics if ``results`` has ``open_set``."""
    report = results[split]
    sizes = report["group_sizes"]
    header = ["", "overall", f"many ({sizes['many']})", f"medium ({sizes['medium']})",
              f"few ({sizes['few']})", "ECE %", "NLL"]
    row = ["top-1 %", _pct(report["top1"]), _pct(report["many"]), _pct(report["medium"]),
           _pct(report["few"]), _pct(report["ece"]), "-" if report["nll"] is None else f"{report['nll']:.3f}"]
    widths = [max(len(h), len(r)) for h, r in zip(header, row, strict=False)]
    trained, total = results.get("epochs_trained"), results.get("epochs")
    when = "last epoch"
    if trained is not None and total is not None:
        when = (f"last epoch ({trained} of {total})" if trained >= total else
                f"checkpoint after epoch {trained} of {total} (the run was interrupted; resume it to finish)")
    title = (f"{results.get('name', 'run')} - {split} split, {when} "
             f"({report['num_samples']} images, seed {results.get('seed', '?')}); "
             f"groups = classes with >{results.get('many_threshold', 100)} / "
             f"{results.get('few_threshold', 20)}-{results.get('many_threshold', 100)} / "
             f"<{results.get('few_threshold', 20)} training images")
    lines = [title,
             "  ".join(h.rjust(w) for h, w in zip(header, widths, strict=False)),
             "  ".join(r.rjust(w) for r, w in zip(row, widths, strict=False))]
    opened = results.get("open_set") if split == "test" else None
    if opened:
        lines.append(_open_set_line(opened))
    return "\n".join(lines)


def _open_set_line(report: dict[str, Any]) -> str:
    """One line of the OLTR open-set metrics (``results["open_set"]``), accuracies in %."""
    return (f"open set (threshold {report['threshold']:g}, {report['variant']} F-measure; "
            f"{report['num_known']} known + {report['num_open']} open images): "
            f"F-measure {report['f_measure']:.3f}, known top-1 {_pct(report['known_top1'])} % "
            f"(many {_pct(report['many'])}, medium {_pct(report['medium'])}, few {_pct(report['few'])}), "
            f"open rejected {_pct(report['open_rejected'])} %")
