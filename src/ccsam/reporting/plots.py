"""Figures of a report (matplotlib, imported lazily; files are PNG).

Every function takes plain data (lists / dicts from results.json and the analysis JSON files), writes
one PNG with labelled axes and a legend, and returns its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def per_class_accuracy_plot(series: dict[str, tuple[list[int], list[float | None]]], path: Path) -> Path:
    """Test accuracy of each class against its number of training images (log scale), one marker set
    per method: ``series[name] = (class_counts, per_class_accuracy)``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, (counts, accuracy) in series.items():
        points = sorted((c, a) for c, a in zip(counts, accuracy, strict=False) if a is not None)
        ax.plot([c for c, _ in points], [100 * a for _, a in points], marker="o", label=name, alpha=0.85)
    ax.set_xscale("log")
    ax.set_xlabel("training images of the class (log scale)")
    ax.set_ylabel("test accuracy of the class (%)")
    ax.set_title("Per-class accuracy against class size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def reliability_plot(bins: dict[str, dict[str, Any]], path: Path) -> Path:
    """Reliability diagrams (accuracy against confidence per bin), one panel per method."""
    plt = _pyplot()
    names = list(bins)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        edges, accuracy, count = bins[name]["edges"], bins[name]["accuracy"], bins[name]["count"]
        centres = [(lo + hi) / 2 for lo, hi in zip(edges, edges[1:], strict=False)]
        width = edges[1] - edges[0]
        kept = [(c, a) for c, a, n in zip(centres, accuracy, count, strict=False) if n]
        ax.bar([c for c, _ in kept], [a for _, a in kept], width=width * 0.9, label="accuracy", alpha=0.8)
        ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (max softmax)")
        ax.set_ylabel("accuracy")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def confusion_plot(matrices: dict[str, list[list[int]]], class_names: list[str], path: Path) -> Path:
    """Row-normalised confusion matrices (rows: true class, columns: predicted), one panel per method."""
    plt = _pyplot()
    names = list(matrices)
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.6), squeeze=False)
    image = None
    for ax, name in zip(axes[0], names, strict=False):
        rows = matrices[name]
        normalised = [[v / max(sum(row), 1) for v in row] for row in rows]
        image = ax.imshow(normalised, vmin=0, vmax=1, cmap="Blues")
        ticks = range(len(rows))
        labels = class_names if len(class_names) <= 20 else [str(i) for i in ticks]
        if len(rows) <= 20:
            ax.set_xticks(list(ticks), labels, rotation=90, fontsize=6)
            ax.set_yticks(list(ticks), labels, fontsize=6)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class (head first)")
        ax.set_title(name, fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), fraction=0.03, label="fraction of the true class")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def landscape_plot(curves: dict[str, dict[str, Any]], path: Path) -> Path:
    """1-D loss curves along a filter-normalised random direction: panels overall / many / medium / few,
    one line per method (``curves[name] = {"alphas": [...], "overall": [...], "many": [...], ...}``)."""
    plt = _pyplot()
    panels = [k for k in ("overall", "many", "medium", "few") if any(c.get(k) for c in curves.values())]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.3), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=False):
        for name, curve in curves.items():
            values = curve.get(panel)
            if values and all(v is not None for v in values):
                ax.plot(curve["alphas"], values, label=name)
        ax.set_xlabel("step along the direction (alpha)")
        ax.set_ylabel("training loss (CE)")
        ax.set_title(f"{panel} classes" if panel != "overall" else "all classes", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def probe_plot(spreads: dict[str, dict[str, tuple[float, float] | None]], sigma: float, path: Path) -> Path:
    """Mean +- std (over random draws) of the loss increase under weight noise, per class group and method."""
    plt = _pyplot()
    groups = ["overall", "many", "medium", "few"]
    names = list(spreads)
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, name in enumerate(names):
        xs, means, stds = [], [], []
        for j, group in enumerate(groups):
            value = spreads[name].get(group)
            if value is not None:
                xs.append(j + (i - (len(names) - 1) / 2) * width)
                means.append(value[0])
                stds.append(value[1])
        ax.bar(xs, means, width=width, yerr=stds, capsize=3, label=name, alpha=0.85)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel("loss increase under weight noise (nats)")
    ax.set_title(f"Random weight perturbation, sigma = {sigma:g} (mean ± std over draws)")
    ax.axhline(0, color="k", linewidth=0.8)
    ax.legend(fontsize=8)
    return _save(fig, path)


def sharpness_plot(results: dict[str, dict[str, Any]], path: Path) -> Path:
    """Top Hessian eigenvalue of each class's loss against its training size: one panel per scope
    (``results[name] = {"class_counts": [...], "head": [...], "all": [...]}``)."""
    plt = _pyplot()
    scopes = [s for s in ("head", "all") if any(s in r for r in results.values())]
    fig, axes = plt.subplots(1, len(scopes), figsize=(4.2 * len(scopes), 3.6), squeeze=False)
    for ax, scope in zip(axes[0], scopes, strict=False):
        for name, result in results.items():
            pairs = zip(result["class_counts"], result.get(scope, []), strict=False)
            points = sorted((c, v) for c, v in pairs if v is not None)
            ax.plot([c for c, _ in points], [v for _, v in points], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("training images of the class (log scale)")
        ax.set_ylabel("top Hessian eigenvalue")
        ax.set_title(f"{'head parameters' if scope == 'head' else 'all parameters'}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def contour_plot(surfaces: dict[str, dict[str, Any]], path: Path) -> Path:
    """2-D loss surfaces over two filter-normalised directions, one contour panel per method."""
    plt = _pyplot()
    names = list(surfaces)
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        surface = surfaces[name]
        transposed = [list(r) for r in zip(*surface["loss"], strict=True)]
        levels = ax.contour(surface["alphas"], surface["betas"], transposed, levels=15)
        ax.clabel(levels, fontsize=6)
        ax.plot([0], [0], "k+", markersize=10)
        ax.set_xlabel("direction 1 (alpha)")
        ax.set_ylabel("direction 2 (beta)")
        ax.set_title(name, fontsize=9)
    return _save(fig, path)
