"""`ccsam report` keeps one run per seed within a group: a seed given twice is skipped and named."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ccsam.reporting.collect import collect_runs


def _run(folder: Path, seed: int, top1: float) -> Path:
    """A finished run folder as the report reads it: config.yaml and results.json."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"name": "ce-final", "seed": seed, "data": {"dataset": "x"}}))
    (folder / "results.json").write_text(json.dumps({"name": "ce-final", "seed": seed, "test": {"top1": top1}}))
    return folder


def test_a_seed_given_twice_is_kept_once_and_the_copy_is_skipped(tmp_path: Path) -> None:
    first, second = _run(tmp_path / "a" / "seed-0", 0, 0.7), _run(tmp_path / "a" / "seed-1", 1, 0.8)
    copy = _run(tmp_path / "copy-of-seed-0", 0, 0.7)
    collected = collect_runs([first, second, copy])
    assert [r["seed"] for r in collected.groups["ce-final"]] == [0, 1]
    assert collected.skipped == [(str(copy), f"seed 0 given twice: {first}")]
