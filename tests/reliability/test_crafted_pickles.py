"""Files a user may have received never run code when ccsam loads them.

Each crafted file carries a pickle whose ``__reduce__`` would create a marker file; the marker must
never appear, the command must end with exit 2 and one ``ccsam: error:`` line, and legitimate files of
the same formats must keep loading.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from ccsam.cli.main import main
from ccsam.data.readers import read_cifar10
from ccsam.safe_load import CifarUnpickler, UnsafeFileError, load_cifar_pickle


class _Payload:
    """Creates ``marker`` when unpickled: the attack a shared file could carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _torch_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("ccsam: error:"), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_overrides_module) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "--out", str(out), "--no-progress", *tiny_overrides_module(stage2__epochs=0)]) == 0
    return out


@pytest.fixture(scope="module")
def tiny_overrides_module():
    from tests.conftest import synthetic_overrides

    def make(**extra: object) -> list[str]:
        return synthetic_overrides(**{k.replace("__", "."): v for k, v in extra.items()})

    return make


@pytest.mark.parametrize("command", [["eval"], ["train", "--resume"], ["probe"]])
def test_a_crafted_checkpoint_is_refused_and_runs_nothing(finished_run, tmp_path, capsys, command):
    marker = tmp_path / "pwned"
    checkpoint = finished_run / "checkpoints" / "last.pt"
    original = checkpoint.read_bytes()
    try:
        checkpoint.write_bytes(_torch_bytes({"format": 1, "model": _Payload(marker)}))
        code = main([*command, str(finished_run), *(["--no-progress"] if command[0] == "train" else [])])
        line = _one_error_line(capsys)
    finally:
        checkpoint.write_bytes(original)
    assert code == 2
    assert not marker.exists()
    assert "last.pt" in line and "refused" in line and "system" in line


def test_a_crafted_data_cache_is_refused_and_runs_nothing(tmp_path, capsys, tiny_overrides_module):
    marker = tmp_path / "pwned"
    cache = tmp_path / "evil.cache"
    cache.write_bytes(_torch_bytes({"meta": _Payload(marker)}))
    code = main(["train", "--out", str(tmp_path / "run"), "--data-cache", str(cache), "--no-progress",
                 *tiny_overrides_module()])
    line = _one_error_line(capsys)
    assert code == 2
    assert not marker.exists()
    assert "evil.cache" in line and "refused" in line
    assert not (tmp_path / "run").exists()  # a set-up error leaves no run folder behind


def _write_cifar_folder(root: Path, batch_object: object) -> Path:
    """A CIFAR-10 python folder whose first batch is ``batch_object`` and the rest legitimate."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    legit = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(legit, protocol=2))
    (folder / "data_batch_1").write_bytes(pickle.dumps(batch_object, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}, protocol=2))
    return folder


def test_a_crafted_cifar_batch_is_refused_naming_the_global(tmp_path, capsys):
    marker = tmp_path / "pwned"
    _write_cifar_folder(tmp_path / "data", {"data": _Payload(marker), "labels": [0]})
    code = main(["data", "export", "--preset", "cifar10-lt-ce", "--data-root", str(tmp_path / "data"),
                 "--out", str(tmp_path / "c.cache")])
    line = _one_error_line(capsys)
    assert code == 2
    assert not marker.exists()
    assert "data_batch_1" in line and "system" in line  # names the file and the refused global
    assert not (tmp_path / "c.cache").exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_legitimate_cifar_pickles_of_every_protocol_load_exactly(tmp_path, protocol):
    rng = np.random.default_rng(1)
    batch = {"data": rng.integers(0, 256, (6, 3072), dtype=np.uint8), "labels": [5, 4, 3, 2, 1, 0],
             "batch_label": "training batch 1 of 5", "filenames": [f"img{i}.png" for i in range(6)]}
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    loaded = load_cifar_pickle(path)
    assert np.array_equal(loaded["data"], batch["data"]) and loaded["labels"] == batch["labels"]
    assert loaded["filenames"] == batch["filenames"]


def test_the_unpickler_refuses_any_other_global(tmp_path):
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({"data": Path("x")}, protocol=2))
    with pytest.raises(UnsafeFileError, match="pathlib"):
        load_cifar_pickle(path)
    with pytest.raises(pickle.UnpicklingError):
        CifarUnpickler(io.BytesIO(pickle.dumps(print))).load()


def test_the_shared_cifar10_still_reads_through_the_safe_unpickler(shared_data_root):
    if not (shared_data_root / "cifar-10-batches-py").is_dir():
        pytest.skip(f"CIFAR-10 not found under {shared_data_root}")
    test = read_cifar10(shared_data_root, "test")
    assert test.images.shape == (10000, 3, 32, 32) and int(test.labels.bincount().min()) == 1000
