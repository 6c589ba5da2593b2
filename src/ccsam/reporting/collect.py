"""Which run folders a report may put side by side, and which it skips (with the reason).

Runs are grouped by their ``name`` *and* a hash of their resolved config without the seed (and without
machine-specific paths), so two different configurations started from one preset are never averaged
as if they were seeds of one method. Within a group one run per seed is kept. A folder that is not a
finished run, or a second run of a seed already in its group, is skipped and named.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ccsam.config.migration import migrate_tree
from ccsam.config.schema import MACHINE_KEYS

# Keys that differ between seeds or machines but not between methods.
_NOT_HASHED = {("seed",), *MACHINE_KEYS}


@dataclass
class CollectedRuns:
    """Finished runs grouped by report label, and the folders left out with their reason."""

    groups: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def config_hash(tree: dict[str, Any]) -> str:
    """First 8 hex digits of the sha256 of the canonical JSON of ``tree`` without seed, name and paths."""

    def strip(node: Any, prefix: tuple[str, ...]) -> Any:
        if not isinstance(node, dict):
            return node
        return {k: strip(v, (*prefix, k)) for k, v in sorted(node.items()) if (*prefix, k) not in _NOT_HASHED}

    canonical = json.dumps(strip(tree, ()), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:8]


def _read_run(folder: Path) -> dict[str, Any]:
    """``results.json`` of a finished run plus its config hash and data set; ValueError names the reason."""
    if not folder.is_dir():
        raise ValueError("not a folder" if folder.exists() else "no such folder")
    results_path, config_path = folder / "results.json", folder / "config.yaml"
    if not config_path.is_file():
        raise ValueError("not a ccsam run folder (no config.yaml)")
    if not results_path.is_file():
        raise ValueError("no results.json (the run has not finished; resume it)")
    try:
        results = json.loads(results_path.read_text(errors="replace"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"results.json is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(results, dict) or not isinstance(results.get("test"), dict) or "name" not in results:
        raise ValueError("results.json holds no test metrics")
    try:
        tree = yaml.safe_load(config_path.read_text(errors="replace"))
    except yaml.YAMLError:
        raise ValueError("config.yaml is not valid YAML") from None
    if not isinstance(tree, dict):
        raise ValueError("config.yaml is not a config")
    raw_data = tree.get("data")
    data = raw_data if isinstance(raw_data, dict) else {}
    return {
        **results,
        "run_dir": str(folder),
        "config_hash": config_hash(migrate_tree(tree)),  # a run of the flat-config version hashes the same
        "dataset": data.get("dataset", "?"),
    }


def collect_runs(run_dirs: list[Path]) -> CollectedRuns:
    """Group the finished runs among ``run_dirs``; a name with several configs gets ``name [hash]`` labels."""
    out = CollectedRuns()
    by_name: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    seen: set[Path] = set()
    for folder in map(Path, run_dirs):
        if folder.resolve() in seen:
            out.skipped.append((str(folder), "given twice"))
            continue
        seen.add(folder.resolve())
        try:
            run = _read_run(folder)
        except (ValueError, OSError) as exc:
            out.skipped.append((str(folder), str(exc)))
            continue
        by_name[str(run["name"])][run["config_hash"]].append(run)
    for name, configs in by_name.items():
        for digest, runs in configs.items():
            out.groups[name if len(configs) == 1 else f"{name} [{digest}]"] = _one_per_seed(runs, out)
    return out


def _one_per_seed(runs: list[dict[str, Any]], out: CollectedRuns) -> list[dict[str, Any]]:
    """The runs of one group with the first run of each seed kept; the others go to ``out.skipped``
    (two copies of one seed would count as two seeds in mean ± std)."""
    kept: list[dict[str, Any]] = []
    by_seed: dict[Any, str] = {}
    for run in runs:
        seed = run.get("seed")
        if seed is not None and seed in by_seed:
            out.skipped.append((run["run_dir"], f"seed {seed} given twice: {by_seed[seed]}"))
            continue
        if seed is not None:
            by_seed[seed] = run["run_dir"]
        kept.append(run)
    return kept
