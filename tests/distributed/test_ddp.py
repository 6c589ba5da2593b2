"""Multi-rank training equals single-process training (CPU, Gloo, 2 spawned ranks).

Each spawned group runs several cases in sequence (process start-up dominates the cost); the
single-process references are computed in the test process itself, with no process group.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from _failing_worker import failing_worker
from conftest import synthetic_overrides
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

from ccsam.config import resolve_config
from ccsam.distributed import barrier, init_process_group, shutdown
from ccsam.distributed.launch import shared_path
from ccsam.evaluation.predict import evaluate_split, predict
from ccsam.training.checkpoint import load_checkpoint
from ccsam.training.distributed import distribute_objective
from ccsam.training.run_dir import RunDir
from ccsam.training.stages import build_objective
from ccsam.training.trainer import Trainer

WORLD = 2
BASE = {"runtime.sync_bn": "true", "data.batch_size": 16, "stage1.lr": 0.2, "stage2.lr": 0.2}
RADIUS_RHO = {"dir_only": {"stage1.radius.rho": 0.3}}  # the radius ablation with a constant |eps|
DRW = {"stage1.loss.drw.start_epoch": 0, "stage1.loss.drw.beta": 0.99}  # weights 0.27 (n=40) to 2.2 (n=4)
HEAD = {"stage1.method": "ccsam", "stage1.flat_ratio": 0.5, "stage1.noise_scale": 0.5}
STEP_CASES: dict[str, tuple[dict[str, Any], int]] = {
    "erm": ({"stage1.method": "erm"}, 1),
    **{f"ccsam-{mode}": ({**HEAD, "stage1.radius": mode, **RADIUS_RHO.get(mode, {})}, 1)
       for mode in ("ccsam", "dir_only", "mag_only", "none")},
    "ccsam-stage2": ({**HEAD, "stage2.method": "ccsam", "stage2.method.up_limit": 0.5}, 2),
    "sam": ({"stage1.method": "erm", "stage1.optimizer": "sam", "stage1.optimizer.rho": 0.1}, 1),
    "asam": ({"stage1.method": "erm", "stage1.optimizer": "asam", "stage1.optimizer.rho": 0.5}, 1),
    "imbsam": ({"stage1.method": "erm", "stage1.optimizer": "imbsam", "stage1.optimizer.rho": 0.1,
                "stage1.optimizer.tail_threshold": 20}, 1),
    "ccsam-last_k": ({**HEAD, "stage1.perturb_scope": "last_k", "stage1.perturb_last_k": 1}, 1),
    "ccsam-all": ({**HEAD, "stage1.perturb_scope": "all"}, 1),
    # the class passes normalised with the clean pass's statistics: the global batch's under sync_bn
    "ccsam-last_k-batch_bn": ({**HEAD, "stage1.perturb_scope": "last_k", "stage1.perturb_last_k": 2,
                               "stage1.class_pass_bn": "batch"}, 1),
    "gp": ({"stage1.method": "erm", "stage1.flattening": "gp", "stage1.flattening.radius": 0.1}, 1),
    "mp": ({"stage1.method": "erm", "stage1.flattening": "mp", "stage1.flattening.bound": 0.05,
            "stage1.flattening.copies": 3}, 1),
    "ccsam-flat-mixup": ({**HEAD, "stage1.mixup_alpha": 1.0, "stage1.flat_targets": "mixup"}, 1),
    # class-weighted means (DRW from the first epoch): each rank's share of the global batch's weight sum
    "erm-drw": ({"stage1.method": "erm", **DRW}, 1),
    "imbsam-drw": ({"stage1.method": "erm", "stage1.optimizer": "imbsam", "stage1.optimizer.rho": 0.1,
                    "stage1.optimizer.tail_threshold": 20, **DRW}, 1),
    "ccsam-drw": ({**HEAD, **DRW}, 1),
    "ccsam-last_k-drw": ({**HEAD, "stage1.perturb_scope": "last_k", "stage1.perturb_last_k": 1, **DRW}, 1),
}


def _config(extra: dict[str, Any]):
    return resolve_config(None, synthetic_overrides(**{**BASE, **extra}))


def _steps(extra: dict[str, Any], stage_number: int, tmp: Path, *, gather: bool = True, steps: int = 2,
           syncs: list[int] | None = None):
    """``steps`` updates of stage ``stage_number`` from the run's initial weights; the final weights.
    Under a process group the updates drive the stage's DDP wrapper; ``syncs`` then receives the number
    of gradient buckets DDP all-reduced (a communication hook that counts, then all-reduces)."""
    cfg = _config(extra)
    trainer = Trainer(cfg, RunDir(tmp / "unused"), progress=False)
    stage = trainer.enter_stage(1)
    if stage_number == 2:
        stage = trainer.enter_stage(2)
    objective = build_objective(cfg, stage, 0, trainer.counts)
    objective = distribute_objective(objective) if gather else objective
    stage.set_modes(trainer.model, cfg)
    model = stage.runner if stage.runner is not None else trainer.model
    if syncs is not None and isinstance(model, DistributedDataParallel):
        syncs.append(0)

        def counting(state, bucket):  # DDP checks the hook's annotations: none, or dist.GradBucket
            syncs[-1] += 1
            return default_hooks.allreduce_hook(state, bucket)

        model.register_comm_hook(None, counting)
    for _, batch in zip(range(steps), stage.loader.epoch(), strict=False):
        stage.update(model, objective, batch, stage.optimizer, trainer.runtime.autocast)
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}, trainer


def _join(rank: int, port: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    init_process_group("cpu")


def _spawn(fn, *args: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(fn, args=(port, *args), nprocs=WORLD, join=True)


def _step_worker(rank: int, port: int, out: str) -> None:
    _join(rank, port)
    try:
        results: dict[str, Any] = {}
        for name, (extra, stage) in STEP_CASES.items():
            syncs: list[int] = []
            results[name] = _steps(extra, stage, Path(out), syncs=syncs)[0]
            results[f"{name}/syncs"] = syncs
        results["ccsam-ccsam/local"] = _steps(STEP_CASES["ccsam-ccsam"][0], 1, Path(out), gather=False)[0]
        # without SyncBN (the ranks' class sets differ, so a rank-local scope would desynchronise a global BN)
        plain_bn = {**STEP_CASES["ccsam-all"][0], "runtime.sync_bn": "false"}
        results["ccsam-all/plain-bn"] = _steps(plain_bn, 1, Path(out))[0]
        results["ccsam-all/plain-bn/local"] = _steps(plain_bn, 1, Path(out), gather=False)[0]
        no_sync = {"stage1.method": "erm", "runtime.sync_bn": "false"}
        results["erm/no-syncbn"] = _steps(no_sync, 1, Path(out))[0]
        # evaluation: sharded prediction gathered on every rank
        trainer = _steps({"stage1.method": "erm"}, 1, Path(out))[1]
        cfg, data = trainer.cfg, trainer.data
        results["eval/logits"] = predict(trainer.model, data.test, 7, data.mean, data.std)
        results["eval/report"] = evaluate_split(trainer.model, data.test, data, cfg)
        if rank == 0:
            torch.save(results, Path(out) / "steps.pt")
        _interrupted_run(Path(out))
    finally:
        shutdown()


@pytest.fixture(scope="module")
def distributed_steps(tmp_path_factory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("ddp")
    _spawn(_step_worker, str(out))
    return torch.load(out / "steps.pt", weights_only=False), out


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("name", list(STEP_CASES))
def test_two_ranks_step_equals_one_process(distributed_steps, name: str, tmp_path: Path) -> None:
    results, _ = distributed_steps
    extra, stage = STEP_CASES[name]
    single, _ = _steps(extra, stage, tmp_path)
    start, _ = _steps(extra, stage, tmp_path, steps=0)
    assert _max_diff(single, start) > 1e-4  # the steps moved the weights
    assert _max_diff(results[name], single) < 1e-6


#: Synchronised backwards per step (DDP all-reduces): SAM / ASAM / ImbSAM / GP need the global gradient of
#: their first pass (it defines the perturbation) and of their second; MP's first copies run under no_sync.
SYNCS_PER_STEP = {"erm": 1, "sam": 2, "asam": 2, "imbsam": 2, "gp": 2, "mp": 1, "ccsam-ccsam": 1,
                  "ccsam-all": 1, "ccsam-last_k": 1, "ccsam-stage2": 1}


def test_updates_run_through_ddp_and_synchronise_the_documented_passes(distributed_steps) -> None:
    results, _ = distributed_steps
    buckets = results["erm/syncs"][0] / 2  # all-reduced buckets per synchronised backward (2 steps)
    assert buckets >= 1 and buckets == int(buckets)
    for name, per_step in SYNCS_PER_STEP.items():
        assert results[f"{name}/syncs"] == [2 * per_step * buckets], name  # one DDP wrapper, 2 steps


def test_per_rank_statistics_are_not_the_method(distributed_steps, tmp_path: Path) -> None:
    """Control: CC-SAM statistics of each rank's half batch (no gather; for ``all``, no sum of the class
    gradients over ranks), or BatchNorm without SyncBN, give a different step, so the test above can
    tell the global form from a naive port."""
    results, _ = distributed_steps
    single, _ = _steps(STEP_CASES["ccsam-ccsam"][0], 1, tmp_path)
    assert _max_diff(results["ccsam-ccsam/local"], single) > 1e-5
    # per-rank class gradients (no sum over the ranks) give another step than the global ones
    assert _max_diff(results["ccsam-all/plain-bn/local"], results["ccsam-all/plain-bn"]) > 1e-5
    erm, _ = _steps({"stage1.method": "erm", "runtime.sync_bn": "false"}, 1, tmp_path)
    assert _max_diff(results["erm/no-syncbn"], erm) > 1e-5


def test_sharded_evaluation_equals_one_process(distributed_steps, tmp_path: Path) -> None:
    results, _ = distributed_steps
    trainer = _steps({"stage1.method": "erm"}, 1, tmp_path)[1]
    cfg, data = trainer.cfg, trainer.data
    logits = predict(trainer.model, data.test, 7, data.mean, data.std)
    assert results["eval/logits"].shape == logits.shape
    assert torch.allclose(results["eval/logits"], logits, atol=1e-6)
    report = evaluate_split(trainer.model, data.test, data, cfg)
    for key in ("top1", "many", "medium", "few", "per_class_accuracy"):
        assert results["eval/report"][key] == report[key]
    for key in ("ece", "nll"):
        assert results["eval/report"][key] == pytest.approx(report[key], abs=1e-6)


RESUME = {**HEAD, "stage1.epochs": 1, "stage2.epochs": 1, "stage2.method": "ccsam"}


def _interrupted_run(out: Path) -> None:
    """Two ranks train the first epoch of a run and stop as an interruption would."""
    cfg = _config(RESUME)
    path = shared_path(lambda: RunDir.create(out / "run", cfg, ["test"]).path)
    Trainer(cfg, RunDir(path), progress=False).fit(stop_at=1)
    barrier()


def test_resume_two_ranks_on_one(distributed_steps, tmp_path: Path) -> None:
    """The 2-rank checkpoint continues on one rank to the uninterrupted one-process result."""
    run = RunDir.open(distributed_steps[1] / "run")
    assert len(run.read_metrics()) == 1
    resumed = Trainer(_config(RESUME), run, progress=False)
    resumed.resume()
    resumed.fit()
    cfg = _config(RESUME)
    whole = Trainer(cfg, RunDir.create(tmp_path / "whole", cfg, ["test"]), progress=False)
    whole.fit()
    assert _max_diff(load_checkpoint(run.last_checkpoint)["model"],
                     load_checkpoint(whole.run.last_checkpoint)["model"]) < 1e-5
    assert [r["epoch"] for r in run.read_metrics()] == [0, 1]
    assert run.read_results()["test"]["top1"] == whole.run.read_results()["test"]["top1"]


def test_a_failing_rank_ends_every_rank(capfd) -> None:
    with pytest.raises(mp.ProcessExitedException, match="exit code 1"):
        _spawn(failing_worker, WORLD)
    err = capfd.readouterr().err
    assert err.count("ccsam: error on rank 1 of 2: ValueError: synthetic failure") == 1
