"""``ccsam data manifest``: the split a run would use, written without training; never overwritten."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import synthetic_overrides

from ccsam.cli.main import main
from ccsam.config import resolve_config
from ccsam.data.build import build_data
from ccsam.data.splits import SplitManifest


def test_manifest_equals_the_runs_split_and_refuses_overwrite(tmp_path: Path, capsys) -> None:
    overrides = synthetic_overrides(**{"data.subset_protocol": "ldam_drw"})
    out = tmp_path / "split.json"
    assert main(["data", "manifest", "--out", str(out), *overrides]) == 0
    stored = json.loads(out.read_text())
    manifest = SplitManifest.load_json(out)  # checks the stored sha256
    expected = build_data(resolve_config(None, overrides).data).manifest
    assert manifest == expected and stored["sha256"] == expected.sha256()
    assert stored["subset_protocol"] == "ldam_drw" and stored["data"]["dataset"] == "synthetic"
    assert sum(stored["class_counts"]) == len(stored["train_indices"])
    before = out.read_bytes()
    assert main(["data", "manifest", "--out", str(out), *overrides]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before

