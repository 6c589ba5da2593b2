"""Fault injection shared by the reliability tests and ``benchmarks/reliability_matrix.py``.

* :func:`build_base` makes, once, the legitimate files that scenarios damage: a finished and an
  interrupted tiny run, a data cache, and small CIFAR-10 / Fashion-MNIST folders in their real formats.
* :data:`SCENARIOS`: bad files and settings. Each copies what it needs into a scratch folder, damages
  it, and names the command, the exit status and a fragment of the one error line it expects.
* :func:`run_scenario` runs one through ``ccsam.cli.main.main`` in this process and records the exit
  status, the stderr lines, whether an exception escaped, and which files changed (md5 of every file
  under the scratch folder before and after, new files included).
* :func:`read_only` makes every write under a folder fail with ``EROFS``, as a read-only mount would
  (the tests run as root, for whom ``chmod`` changes nothing).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import gzip
import hashlib
import io
import json
import os
import pickle
import shutil
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tests.conftest import synthetic_overrides

MARKER = "pwned"  # a crafted file's payload would create this file in the scratch folder


def tiny(**extra: object) -> list[str]:
    """Overrides of a seconds-long synthetic run (3 epochs: 2 in stage 1, 1 in stage 2)."""
    return synthetic_overrides(**{"stage2.epochs": 1, **{k.replace("__", "."): v for k, v in extra.items()}})


class _Payload:
    """Runs ``touch MARKER`` when unpickled: the attack a shared file could carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def torch_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


# -- the legitimate files ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Base:
    """Legitimate files the scenarios copy and damage."""

    finished: Path
    interrupted: Path
    cache: Path
    cifar: Path
    fmnist: Path


def _cifar_folder(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), "labels": list(range(10)) * 2}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(
        pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}, protocol=2)
    )
    return root


def _idx(data: np.ndarray) -> bytes:
    return (
        struct.pack(">I", 0x800 + data.ndim)
        + b"".join(struct.pack(">I", n) for n in data.shape)
        + data.tobytes()
    )


def _fmnist_folder(root: Path) -> Path:
    folder = root / "fashion-mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for prefix, n in (("train", 40), ("t10k", 20)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(labels)))
    return root


def build_base(root: Path) -> Base:
    """Train the finished and the interrupted run, export the cache, write the data folders."""
    from ccsam.cli.main import main
    from ccsam.config import resolve_config
    from ccsam.training.run_dir import RunDir
    from ccsam.training.trainer import Trainer

    root.mkdir(parents=True, exist_ok=True)
    finished = root / "finished"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["train", "--out", str(finished), "--no-progress", *tiny()]) == 0
        cache = root / "tiny.cache"
        assert main(["data", "export", "--out", str(cache), *tiny()]) == 0
    interrupted = root / "interrupted"
    cfg = resolve_config(None, tiny())
    Trainer(cfg, RunDir.create(interrupted, cfg, ["ccsam", "train"]), progress=False).fit(stop_at=2)
    return Base(finished, interrupted, cache, _cifar_folder(root / "cifar"), _fmnist_folder(root / "fmnist"))


# -- read-only folders -------------------------------------------------------------------------------------


def _under(path: object, guard: Path) -> bool:
    try:
        return Path(os.fsdecode(path)).absolute().is_relative_to(guard)
    except (TypeError, ValueError):
        return False


@contextlib.contextmanager
def read_only(guard: Path) -> Iterator[None]:
    """Within the block every write, create, mkdir, rename or delete under ``guard`` fails with EROFS."""
    guard = guard.absolute()
    real = {
        "open": os.open,
        "mkdir": os.mkdir,
        "replace": os.replace,
        "rename": os.rename,
        "unlink": os.unlink,
        "rmdir": os.rmdir,
        "io_open": io.open,
    }

    def refuse(path: object) -> OSError:
        return OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))

    def fake_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND) and _under(path, guard):
            raise refuse(path)
        return real["open"](path, flags, *args, **kwargs)

    def fake_io_open(file, mode="r", *args, **kwargs):
        if (
            isinstance(file, (str, bytes, os.PathLike))
            and any(c in mode for c in "wax+")
            and _under(file, guard)
        ):
            raise refuse(file)
        return real["io_open"](file, mode, *args, **kwargs)

    def one_path(name: str) -> Callable:
        def fake(path, *args, **kwargs):
            if _under(path, guard):
                raise refuse(path)
            return real[name](path, *args, **kwargs)

        return fake

    def two_paths(name: str) -> Callable:
        def fake(src, dst, *args, **kwargs):
            if _under(src, guard) or _under(dst, guard):
                raise refuse(dst)
            return real[name](src, dst, *args, **kwargs)

        return fake

    os.open, io.open, builtins.open = fake_os_open, fake_io_open, fake_io_open
    os.mkdir, os.unlink, os.rmdir = one_path("mkdir"), one_path("unlink"), one_path("rmdir")
    os.replace, os.rename = two_paths("replace"), two_paths("rename")
    try:
        yield
    finally:
        os.open, os.mkdir, os.replace, os.rename = (
            real["open"],
            real["mkdir"],
            real["replace"],
            real["rename"],
        )
        os.unlink, os.rmdir, io.open, builtins.open = (
            real["unlink"],
            real["rmdir"],
            real["io_open"],
            real["io_open"],
        )


# -- scenarios ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A bad file or setting, the command that meets it, and what must happen."""

    name: str
    kind: str  # "bad file", "bad setting", "crafted file", "read-only folder"
    prepare: Callable[[Base, Path], list[str]]  # damages copies under the scratch folder; returns argv
    fragment: str  # must appear in the error line
    exit_code: int = 2
    read_only: str | None = None  # a folder (relative to scratch) made read-only while the command runs


@dataclass
class Outcome:
    """What a scenario did."""

    exit_code: int | None
    stderr: list[str]
    escaped: str | None  # the exception type that escaped main(), if any
    changed: list[str] = field(default_factory=list)  # files added, removed or modified under scratch
    marker: bool = False  # a crafted payload ran

    def problems(self, scenario: Scenario) -> list[str]:
        """Why this outcome fails the scenario's contract (empty: it holds)."""
        out = []
        if self.escaped:
            out.append(f"exception escaped: {self.escaped}")
        if self.exit_code != scenario.exit_code:
            out.append(f"exit {self.exit_code}, expected {scenario.exit_code}")
        if len(self.stderr) != 1 or not self.stderr[0].startswith("ccsam: error:"):
            out.append(f"stderr is not one error line: {self.stderr}")
        elif scenario.fragment not in self.stderr[0]:
            out.append(f"'{scenario.fragment}' not in: {self.stderr[0]}")
        if any("Traceback" in line for line in self.stderr):
            out.append("traceback printed")
        if self.changed:
            out.append(f"files changed: {self.changed}")
        if self.marker:
            out.append("a crafted payload ran")
        return out


def md5_tree(root: Path) -> dict[str, str]:
    """md5 of every file under ``root`` (relative path -> digest)."""
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def run_scenario(scenario: Scenario, base: Base, scratch: Path) -> Outcome:
    """Prepare ``scenario`` in the empty folder ``scratch``, run it in-process, and record the outcome."""
    from ccsam.cli.main import main

    scratch.mkdir(parents=True, exist_ok=True)
    argv = scenario.prepare(base, scratch)
    before = md5_tree(scratch)
    err, code, escaped = io.StringIO(), None, None
    guard = read_only(scratch / scenario.read_only) if scenario.read_only else contextlib.nullcontext()
    cwd = Path.cwd()
    os.chdir(scratch)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err), guard:
            code = main(argv)
    except BaseException as exc:  # noqa: BLE001 - record, do not crash the matrix
        escaped = exc.__class__.__name__
    finally:
        os.chdir(cwd)
    after = md5_tree(scratch)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    marker = (scratch / MARKER).exists()
    return Outcome(
        code,
        [line for line in err.getvalue().splitlines() if line.strip()],
        escaped,
        [c for c in changed if c != MARKER],
        marker,
    )


# Helpers the scenarios are written with.


def _copy(src: Path, scratch: Path, name: str | None = None) -> Path:
    dst = scratch / (name or src.name)
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)
    return dst


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _garbage(path: Path) -> None:
    path.write_bytes(
        np.random.default_rng(7).integers(0, 256, max(path.stat().st_size, 64), dtype=np.uint8).tobytes()
    )


def _flip_byte(path: Path, at: float) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x10
    path.write_bytes(bytes(data))


def _cifar(damage: Callable[[Path], None], file: str = "data_batch_1") -> Callable[[Base, Path], list[str]]:
    def prepare(base: Base, scratch: Path) -> list[str]:
        root = _copy(base.cifar, scratch, "data")
        damage(root / "cifar-10-batches-py" / file)
        return [
            "data",
            "export",
            "--preset",
            "cifar10-lt-ce",
            "--data-root",
            str(root),
            "--out",
            str(scratch / "out.cache"),
        ]

    return prepare


def _cifar_pickle(
    obj_for: Callable[[Path], object], file: str = "data_batch_1"
) -> Callable[[Base, Path], list[str]]:
    def damage(path: Path) -> None:
        path.write_bytes(pickle.dumps(obj_for(path.parents[2]), protocol=2))

    return _cifar(damage, file)


def _fmnist(
    damage: Callable[[Path], None], file: str = "train-images-idx3-ubyte.gz"
) -> Callable[[Base, Path], list[str]]:
    def prepare(base: Base, scratch: Path) -> list[str]:
        root = _copy(base.fmnist, scratch, "data")
        damage(root / "fashion-mnist" / file)
        return [
            "data",
            "export",
            "--preset",
            "fmnist-lt-ce",
            "--data-root",
            str(root),
            "--out",
            str(scratch / "out.cache"),
        ]

    return prepare


def _raw_idx_truncated(path: Path) -> None:
    raw = path.with_name(path.name.removesuffix(".gz"))
    raw.write_bytes(gzip.decompress(path.read_bytes())[:-100])
    path.unlink()


def _run_cmd(command: str, run: str, damage: Callable[[Path], None]) -> Callable[[Base, Path], list[str]]:
    """``command`` (eval / resume / probe) on a copy of the finished or interrupted run, damaged first."""

    def prepare(base: Base, scratch: Path) -> list[str]:
        folder = _copy(base.finished if run == "finished" else base.interrupted, scratch, "run")
        damage(folder)
        return {
            "eval": ["eval", str(folder)],
            "resume": ["train", "--resume", str(folder), "--no-progress"],
            "probe": ["probe", str(folder), "--draws", "1", "--sigmas", "0.01"],
        }[command]

    return prepare


def _checkpoint(damage: Callable[[Path], None]) -> Callable[[Path], None]:
    return lambda folder: damage(folder / "checkpoints" / "last.pt")


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _crafted_checkpoint(path: Path) -> None:
    path.write_bytes(torch_bytes({"format": 1, "epoch": 1, "model": _Payload(path.parents[2] / MARKER)}))


def _metrics_middle_line(folder: Path) -> None:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    lines[0] = lines[0][: len(lines[0]) // 2]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def _settings(*argv: str) -> Callable[[Base, Path], list[str]]:
    def prepare(base: Base, scratch: Path) -> list[str]:
        return ["train", "--out", str(scratch / "run"), "--no-progress", *tiny(), *argv]

    return prepare


def _existing_out(overwrite: bool) -> Callable[[Base, Path], list[str]]:
    def prepare(base: Base, scratch: Path) -> list[str]:
        folder = _copy(base.finished, scratch, "run")
        return [
            "train",
            "--out",
            str(folder),
            "--no-progress",
            *(["--overwrite"] if overwrite else []),
            *tiny(),
        ]

    return prepare


def _report(damage: Callable[[Base, Path], list[Path]]) -> Callable[[Base, Path], list[str]]:
    def prepare(base: Base, scratch: Path) -> list[str]:
        folders = damage(base, scratch)
        return ["report", *map(str, folders), "--out", str(scratch / "report")]

    return prepare


def _corrupt_results(base: Base, scratch: Path) -> list[Path]:
    folder = _copy(base.finished, scratch, "run")
    _truncate(folder / "results.json", 0.6)
    return [folder]


def _two_data_sets(base: Base, scratch: Path) -> list[Path]:
    a = _copy(base.finished, scratch, "a")
    b = _copy(base.finished, scratch, "b")
    (b / "config.yaml").write_text(
        (b / "config.yaml").read_text().replace("dataset: synthetic", "dataset: digits")
    )
    return [a, b]


def _cache_cmd(damage: Callable[[Path], None]) -> Callable[[Base, Path], list[str]]:
    def prepare(base: Base, scratch: Path) -> list[str]:
        cache = _copy(base.cache, scratch)
        damage(cache)
        return ["train", "--out", str(scratch / "run"), "--data-cache", str(cache), "--no-progress", *tiny()]

    return prepare


def _retouch_cache(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    """Load the cache (a trusted file here), edit its content, save it back: a tampered cache."""

    def damage(path: Path) -> None:
        payload = torch.load(path, weights_only=True)
        edit(payload)
        path.write_bytes(torch_bytes(payload))

    return damage


def _tamper_labels(payload: dict) -> None:
    payload["train"]["labels"][0] = (payload["train"]["labels"][0] + 1) % 5


def _tamper_manifest(payload: dict) -> None:
    meta = json.loads(payload["meta"])
    meta["manifest"]["train_indices"][0], meta["manifest"]["train_indices"][1] = (
        meta["manifest"]["train_indices"][1],
        meta["manifest"]["train_indices"][0],
    )
    payload["meta"] = json.dumps(meta)


def _format_one(payload: dict) -> None:
    meta = json.loads(payload["meta"])
    meta["format"] = 1
    payload["meta"] = json.dumps(meta)


def _crafted_cache(path: Path) -> None:
    path.write_bytes(torch_bytes({"meta": _Payload(path.parent / MARKER)}))


def _ro_train(base: Base, scratch: Path) -> list[str]:
    (scratch / "ro").mkdir()
    return ["train", "--out", str(scratch / "ro" / "run"), "--no-progress", *tiny()]


def _ro_run(command: str) -> Callable[[Base, Path], list[str]]:
    def prepare(base: Base, scratch: Path) -> list[str]:
        ro = scratch / "ro"
        ro.mkdir()
        folder = _copy(base.interrupted if command == "resume" else base.finished, ro, "run")
        if command == "resume":
            return ["train", "--resume", str(folder), "--no-progress"]
        return ["probe", str(folder), "--draws", "1", "--sigmas", "0.01"]

    return prepare


def _ro_report(base: Base, scratch: Path) -> list[str]:
    folder = _copy(base.finished, scratch, "run")
    (scratch / "ro").mkdir()
    return ["report", str(folder), "--out", str(scratch / "ro" / "report")]


def _ro_export(base: Base, scratch: Path) -> list[str]:
    (scratch / "ro").mkdir()
    return ["data", "export", "--out", str(scratch / "ro" / "x.cache"), *tiny()]


_CKPT_DAMAGE = {"truncated": lambda p: _truncate(p, 0.5), "garbage": _garbage, "empty": _empty}

SCENARIOS: list[Scenario] = [
    # CIFAR-10 python pickles (read by `data export`, as by `train`)
    Scenario("cifar: truncated batch", "bad file", _cifar(lambda p: _truncate(p, 0.5)), "data_batch_1"),
    Scenario("cifar: garbage batch", "bad file", _cifar(_garbage, "data_batch_3"), "data_batch_3"),
    Scenario("cifar: empty test batch", "bad file", _cifar(_empty, "test_batch"), "test_batch"),
    Scenario("cifar: batch is a list", "bad file", _cifar_pickle(lambda _: [1, 2, 3]), "data_batch_1"),
    Scenario(
        "cifar: wrong image shape",
        "bad file",
        _cifar_pickle(lambda _: {"data": np.zeros((4, 100), np.uint8), "labels": [0] * 4}),
        "expected uint8 [N, 3072]",
    ),
    Scenario(
        "cifar: fewer labels than images",
        "bad file",
        _cifar_pickle(lambda _: {"data": np.zeros((4, 3072), np.uint8), "labels": [0]}),
        "integer labels",
    ),
    Scenario(
        "cifar: label out of range",
        "bad file",
        _cifar_pickle(lambda _: {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 42]}),
        "cifar-10-batches-py",
    ),
    Scenario("cifar: garbage batches.meta", "bad file", _cifar(_garbage, "batches.meta"), "batches.meta"),
    Scenario(
        "cifar: crafted pickle",
        "crafted file",
        _cifar_pickle(lambda root: {"data": _Payload(root / MARKER)}),
        "data_batch_1",
    ),
    # Fashion-MNIST idx files
    Scenario(
        "fmnist: truncated .gz",
        "bad file",
        _fmnist(lambda p: _truncate(p, 0.5)),
        "train-images-idx3-ubyte.gz",
    ),
    Scenario("fmnist: .gz is garbage", "bad file", _fmnist(_garbage), "train-images-idx3-ubyte.gz"),
    Scenario("fmnist: truncated raw idx", "bad file", _fmnist(_raw_idx_truncated), "truncated"),
    Scenario(
        "fmnist: labels file given as images",
        "bad file",
        _fmnist(lambda p: p.write_bytes(p.with_name("train-labels-idx1-ubyte.gz").read_bytes())),
        "magic",
    ),
    # checkpoints, for every command that loads one
    *[
        Scenario(
            f"checkpoint: {how} last.pt, {cmd}",
            "bad file",
            _run_cmd(cmd, run, _checkpoint(damage)),
            "last.pt",
        )
        for how, damage in _CKPT_DAMAGE.items()
        for cmd, run in (("eval", "finished"), ("resume", "interrupted"), ("probe", "finished"))
    ],
    Scenario(
        "checkpoint: a torch file without weights, eval",
        "bad file",
        _run_cmd("eval", "finished", _checkpoint(lambda p: p.write_bytes(torch_bytes({"format": 1})))),
        "lacks",
    ),
    *[
        Scenario(
            f"checkpoint: crafted pickle, {cmd}",
            "crafted file",
            _run_cmd(cmd, run, _checkpoint(_crafted_checkpoint)),
            "refused",
        )
        for cmd, run in (("eval", "finished"), ("resume", "interrupted"), ("probe", "finished"))
    ],
    # other run files
    Scenario(
        "config.yaml: invalid YAML, eval",
        "bad file",
        _run_cmd("eval", "finished", lambda f: (f / "config.yaml").write_text("data: [unclosed\n")),
        "config.yaml",
    ),
    Scenario(
        "config.yaml: invalid YAML, resume",
        "bad file",
        _run_cmd("resume", "interrupted", lambda f: (f / "config.yaml").write_text(":\n  - :\n\t")),
        "config.yaml",
    ),
    Scenario(
        "config.yaml: unknown key, eval",
        "bad file",
        _run_cmd("eval", "finished", lambda f: (f / "config.yaml").write_text("sead: 1\n")),
        "config.yaml",
    ),
    Scenario(
        "metrics.jsonl: truncated line, resume",
        "bad file",
        _run_cmd("resume", "interrupted", _metrics_middle_line),
        "metrics.jsonl' line 1",
    ),
    Scenario(
        "resume a finished run", "bad setting", _run_cmd("resume", "finished", lambda f: None), "has finished"
    ),
    Scenario(
        "resume a finished run whose last.pt is gone",
        "bad setting",
        _run_cmd("resume", "finished", _checkpoint(lambda p: p.unlink())),
        "no checkpoints/last.pt",
    ),
    Scenario(
        "report: corrupt results.json",
        "bad file",
        _report(_corrupt_results),
        "results.json is not valid JSON",
    ),
    Scenario("report: not a run folder", "bad setting", _report(lambda b, s: [s]), "no config.yaml"),
    Scenario("report: two data sets", "bad setting", _report(_two_data_sets), "different data"),
    # data caches
    Scenario("cache: bit flip in pixels", "bad file", _cache_cmd(lambda p: _flip_byte(p, 0.4)), "tiny.cache"),
    Scenario("cache: truncated", "bad file", _cache_cmd(lambda p: _truncate(p, 0.7)), "tiny.cache"),
    Scenario(
        "cache: tampered label", "bad file", _cache_cmd(_retouch_cache(_tamper_labels)), "labels checksum"
    ),
    Scenario(
        "cache: tampered manifest",
        "bad file",
        _cache_cmd(_retouch_cache(_tamper_manifest)),
        "metadata checksum",
    ),
    Scenario(
        "cache: format 1 (no label checksums)",
        "bad file",
        _cache_cmd(_retouch_cache(_format_one)),
        "format 1",
    ),
    Scenario("cache: crafted pickle", "crafted file", _cache_cmd(_crafted_cache), "refused"),
    Scenario(
        "cache: other split settings",
        "bad setting",
        lambda b, s: _cache_cmd(lambda p: None)(b, s) + ["data.imbalance_ratio=5"],
        "imbalance_ratio",
    ),
    # settings that cannot train
    Scenario("setting: unknown model.arch", "bad setting", _settings("model.arch=resnet33"), "model.arch"),
    Scenario("setting: seed=-1", "bad setting", _settings("seed=-1"), "seed"),
    Scenario(
        "setting: batch larger than the training set",
        "bad setting",
        _settings("data.batch_size=1000"),
        "no step",
    ),
    Scenario(
        "setting: stage-2 batch larger than the training set",
        "bad setting",
        _settings("stage2.batch_size=1000"),
        "stage2.batch_size=1000 is larger than the",
    ),
    Scenario(
        "setting: last_k beyond the backbone's blocks",
        "bad setting",
        _settings("stage1.perturb_scope=last_k", "stage1.perturb_last_k=99"),
        "perturb_last_k=99",
    ),
    Scenario(
        "setting: zero epochs",
        "bad setting",
        _settings("stage1.epochs=0", "stage2.epochs=0"),
        "nothing would",
    ),
    Scenario(
        "setting: IR rounds a class to 0 images",
        "bad setting",
        _settings("data.synthetic.num_classes=10", "data.n_max=49", "data.imbalance_ratio=49"),
        "no training image",
    ),
    Scenario(
        "setting: profile larger than the data", "bad setting", _settings("data.n_max=500"), "data.dataset"
    ),
    Scenario("setting: device=gpu", "bad setting", _settings("device=gpu"), "device"),
    Scenario("setting: device=cuda:99", "bad setting", _settings("device=cuda:99"), "cuda:99"),
    Scenario("setting: unknown key", "bad setting", _settings("stage1.flat_ration=0.5"), "flat_ratio"),
    Scenario("setting: wrong type", "bad setting", _settings("stage1.lr=fast"), "stage1.lr"),
    Scenario("setting: unknown option", "bad setting", _settings("--epochs", "3"), "unrecognized arguments"),
    Scenario("run folder: existing --out", "bad setting", _existing_out(False), "already exists"),
    Scenario(
        "run folder: --overwrite of a trained run", "bad setting", _existing_out(True), "already exists"
    ),
    # read-only folders
    Scenario(
        "read-only: train --out", "read-only folder", _ro_train, "read-only file system", read_only="ro"
    ),
    Scenario(
        "read-only: train --resume",
        "read-only folder",
        _ro_run("resume"),
        "read-only file system",
        read_only="ro",
    ),
    Scenario(
        "read-only: probe", "read-only folder", _ro_run("probe"), "read-only file system", read_only="ro"
    ),
    Scenario(
        "read-only: report --out", "read-only folder", _ro_report, "read-only file system", read_only="ro"
    ),
    Scenario(
        "read-only: data export --out",
        "read-only folder",
        _ro_export,
        "read-only file system",
        read_only="ro",
    ),
]


# -- injected faults inside a run ----------------------------------------------------------------------------


@contextlib.contextmanager
def nan_loss_at(step: int, checkpoint: Path | None = None) -> Iterator[dict[str, object]]:
    """Within the block, the ``step``-th training step of a run (counted from 1 over all epochs) has a
    NaN loss (the clean loss times NaN, so its gradients are NaN too). Yields a dict that records the
    md5 of ``checkpoint`` at that moment (``last_pt_md5``), if given and present."""
    import ccsam.training.stages as stages  # where a stage builds its update

    real = stages.build_update
    state: dict[str, object] = {"calls": 0, "last_pt_md5": None}

    def select(*args: object, **kwargs: object):
        update = real(*args, **kwargs)

        def faulty(model, objective, batch, optimizer, autocast):
            state["calls"] = int(state["calls"]) + 1
            if state["calls"] != step:
                return update(model, objective, batch, optimizer, autocast)
            if checkpoint is not None and checkpoint.is_file():
                state["last_pt_md5"] = hashlib.md5(checkpoint.read_bytes()).hexdigest()

            def poisoned(m, b, **kw):
                out = objective(m, b, **kw)
                return type(out)(out.loss * float("nan"), out.logits)

            return update(model, poisoned, batch, optimizer, autocast)

        return faulty

    stages.build_update = select
    try:
        yield state
    finally:
        stages.build_update = real


@contextlib.contextmanager
def disk_full_at(write: int, name: str = "last.pt") -> Iterator[None]:
    """The ``write``-th atomic write of a file called ``name`` fails with ENOSPC at ``fsync``, as on a
    full disk (the temporary file exists, the target is untouched)."""
    real = os.fsync
    seen = [0]

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        if Path(target).name.startswith(f".{name}."):
            seen[0] += 1
            if seen[0] == write:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    os.fsync = fsync
    try:
        yield
    finally:
        os.fsync = real
