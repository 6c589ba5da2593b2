"""The one training engine: stage 1 then (optionally) stage 2, checkpoints, validation, final test.

Read it as a reference recipe: :class:`Trainer` assembles the data and the model from the config;
:meth:`Trainer.fit` runs the epochs, each one ``enter stage -> train_one_epoch -> SWA -> validate ->
checkpoint``, then evaluates the test split once. Methods differ only in their config (the stage's
objective, update, sampler, parameters and schedule: :mod:`ccsam.training.stages`). The only model
choice the engine makes (``stage2.init_from=best_val``) uses the validation split.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch

from ccsam.config.schema import RunConfig
from ccsam.data.batches import split_batches
from ccsam.data.build import LongTailData, build_data, build_open_images
from ccsam.data.splits import SplitManifest
from ccsam.distributed import barrier, broadcast_module, is_main
from ccsam.errors import ConfigError, DivergenceError, RunDirError
from ccsam.evaluation.predict import balanced_accuracy, evaluate_split, open_set_results, split_logits
from ccsam.models import Classifier
from ccsam.optim.schedules import learning_rate, scheduled_sam_radius, set_sam_radius
from ccsam.training import distributed
from ccsam.training.assembly import TrainableParameters, build_run_model, prepare_stage2, select_device
from ccsam.training.checkpoint import (
    load_checkpoint,
    load_model_state,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)
from ccsam.training.feasibility import (
    check_model_fits,
    check_trainable,
    divergence_message,
    ignored_option_warnings,
    schedule_warnings,
)
from ccsam.training.loop import train_one_epoch
from ccsam.training.objectives import CcsamStage2Objective, Objective
from ccsam.training.precision import Runtime
from ccsam.training.run_dir import RunDir
from ccsam.training.stages import Stage, build_objective, build_stage
from ccsam.training.tensorboard import TensorBoardScalars, require_tensorboard

__all__ = ["Trainer", "open_set_metrics", "stage2_alpha", "train"]

_logger = logging.getLogger(__name__)

_RESUME_KEYS = (
    "epoch",
    "stage",
    "model",
    "optimizer",
    "loader",
    "best_val",
    "elapsed_s",
    "rng",
    "manifest_sha256",
)


def stage2_alpha(objective: Objective) -> float | None:
    """The epoch's CC-SAM stage-2 mixing weight ``alpha`` of ``objective`` (logged as ``alpha`` in
    ``metrics.jsonl``), also when :func:`ccsam.training.distributed.distribute_objective` wrapped it for
    torchrun; ``None`` for any other objective."""
    if isinstance(objective, distributed.GlobalCcsamStage2):
        objective = objective.inner
    return objective.alpha if isinstance(objective, CcsamStage2Objective) else None


def open_set_metrics(
    model: Classifier,
    data: LongTailData,
    cfg: RunConfig,
    runtime: Runtime | None = None,
    test_logits: torch.Tensor | None = None,
) -> dict[str, Any]:
    """OLTR open-set metrics (spec 3.3, ``eval.open_set``) of ``model``: the test split plus the data
    set's ``_open`` images as unknowns, rejected below ``eval.open_threshold``; the ``open_set`` entry of
    ``results.json``, and of ``ccsam eval`` on the test split. ``test_logits``: the test split's
    :func:`split_logits` when the caller already has them."""
    opened = build_open_images(cfg.data, data)
    return open_set_results(model, data.test, opened, data, cfg, runtime, test_logits=test_logits)


class Trainer:
    """Runs (or resumes) one configured run inside a run folder.

    Example::

        trainer = Trainer(cfg, RunDir.create(path, cfg, argv))
        results = trainer.fit()          # or trainer.resume(); trainer.fit()
    """

    def __init__(
        self, cfg: RunConfig, run: RunDir, *, progress: bool = True, load_pretrained_weights: bool = True
    ) -> None:
        """Build data, model and runtime; ``load_pretrained_weights=False`` skips ``model.pretrained``
        (a resumed run takes every weight from its checkpoint)."""
        if cfg.logging.tensorboard:
            require_tensorboard()  # fail before any work, not after the first epoch
        self.cfg, self.run, self.progress = cfg, run, progress and is_main()
        distributed.check_config(cfg)
        self.device = select_device(cfg.device)
        self.runtime = Runtime.resolve(cfg.runtime, self.device)
        data = build_data(cfg.data)
        check_trainable(cfg, data)
        if is_main():
            for line in schedule_warnings(cfg) + ignored_option_warnings(cfg):
                _logger.warning(line)
        # The DataLoader path keeps images in host memory and moves each batch; otherwise all on the device.
        self.data = data if cfg.data.loader == "dataloader" else data.to(self.device)
        self.counts = data.class_counts.to(self.device)
        torch.manual_seed(cfg.seed)
        model = build_run_model(
            cfg,
            data.in_channels,
            data.num_classes,
            self.runtime,
            load_pretrained_weights=load_pretrained_weights,
        )
        check_model_fits(cfg, model)
        self.model = distributed.prepare_model(model, cfg)  # under torchrun: SyncBN, rank 0's weights
        self.scalars: TensorBoardScalars | None = None
        self.epoch, self.best_val, self.elapsed = 0, -math.inf, 0.0
        self.stage: Stage | None = None

    def fit(self, stop_at: int | None = None, *, evaluate_test: bool = True) -> dict[str, Any] | None:
        """Train to the last epoch, then evaluate the last-epoch model on the test split once.

        ``stop_at`` ends the run early after that many (global) epochs, with no test evaluation, as an
        interruption would: the run folder can then be continued with ``resume``. ``evaluate_test=False``
        trains to the end and returns ``None`` without touching the test split (hyper-parameter search).
        """
        if is_main() and not self.run.manifest_path.exists():
            self.data.manifest.save_json(self.run.manifest_path)
        while self.epoch < self.cfg.total_epochs:
            if stop_at is not None and self.epoch >= stop_at:
                self._close_scalars()
                return None
            number = 1 if self.epoch < self.cfg.stage1.epochs else 2
            if self.stage is None or self.stage.number != number:
                self.enter_stage(number)
            record = self.train_epoch()
            if is_main():  # one writer; every rank holds the same (global) state
                self.run.append_metrics(record)
                self._write_scalars(record, self.epoch)
            self.epoch += 1
            if is_main():
                # at the stage boundary also what another stage 2 can start from; before last.pt, so a kill
                # between them re-runs this epoch (on resume) and writes both
                paths = [self.run.last_checkpoint]
                if self.epoch == self.cfg.stage1.epochs and self.cfg.stage2.epochs:
                    paths.insert(0, self.run.stage1_checkpoint)
                save_checkpoint(paths, self.state_dict())
                _log_epoch(record, self.cfg)
            barrier()
        if not evaluate_test:
            self._close_scalars()
            return None
        results = self.final_results()
        if is_main():
            self.run.write_results(results)
            test = {k: results["test"][k] for k in ("top1", "many", "medium", "few", "ece", "nll")}
            self._write_scalars({"test": test}, self.cfg.total_epochs)
        self._close_scalars()
        barrier()
        return results

    def enter_stage(self, number: int) -> Stage:
        """Start stage ``number``: stage 2 (re)loads the best-validation weights if asked, freezes the
        backbone and sets up its head; then a fresh optimiser, sampler and update."""
        if number == 2 and self.cfg.stage2.init_from == "best_val":
            if not self.run.best_val_checkpoint.is_file():
                raise ConfigError(
                    f"stage2.init_from=best_val, but no stage-1 epoch was scored on a validation split (no "
                    f"'{self.run.best_val_checkpoint.name}' in the run folder; the validation split is empty); "
                    "give the data a validation split or set stage2.init_from=last"
                )
            self.model.load_state_dict(load_checkpoint(self.run.best_val_checkpoint)["model"])
            _logger.info("stage 2 starts from the best-validation stage-1 weights")
        if number == 2:
            broadcast_module(self.model)  # under torchrun: rank 0's file, whatever the others' disks hold
        self.stage = self._build_stage(number)
        return self.stage

    def _build_stage(self, number: int) -> Stage:
        params = list(self.model.parameters()) if number == 1 else prepare_stage2(self.model, self.cfg)
        return self._stage(number, params)

    def _stage(self, number: int, params: TrainableParameters) -> Stage:
        stage = build_stage(number, self.cfg, self.model, self.data, self.runtime, params, self.counts)
        distributed.distribute_stage(stage, self.model)  # under torchrun: batch slices, DDP
        return stage

    def train_epoch(self) -> dict[str, Any]:
        """One epoch of the current stage: updates, weight averaging, validation; returns its record."""
        stage, cfg = self.stage, self.cfg
        if stage is None:
            raise RuntimeError("enter_stage() first")
        stage_epoch = self.epoch - stage.first_epoch
        objective = distributed.distribute_objective(build_objective(cfg, stage, stage_epoch, self.counts))
        steps = len(stage.loader)
        start = time.perf_counter()
        stage.set_modes(self.model, cfg)
        rho = scheduled_sam_radius(stage.config, stage_epoch)
        if rho is not None:
            set_sam_radius(stage.optimizer, rho)
        train_stats = train_one_epoch(
            stage.runner if stage.runner is not None else self.model,
            stage.loader,
            objective,
            stage.optimizer,
            stage.update,
            lambda step: learning_rate(stage.config, stage_epoch, step, steps),
            runtime=self.runtime,
            description=f"stage{stage.number} {stage_epoch + 1}/{stage.config.epochs}",
            progress=self.progress,
            on_nonfinite=cfg.runtime.on_nonfinite,
        )
        if "nonfinite_step" in train_stats:  # stop before anything of this epoch is written
            raise DivergenceError(
                divergence_message(cfg, self.run, stage.number, stage_epoch, train_stats, steps)
            )
        train_stats = distributed.reduce_train_stats(train_stats)
        distributed.sync_bn_statistics(self.model, cfg)  # one set of BN statistics for every rank
        stage.average_weights(self.model, cfg, stage_epoch, self._train_inputs)
        record: dict[str, Any] = {
            "epoch": self.epoch,
            "stage": stage.number,
            "stage_epoch": stage_epoch,
            "lr": learning_rate(stage.config, stage_epoch, 0, steps),
            **train_stats,
        }
        if rho is not None:
            record["rho"] = rho
        alpha = stage2_alpha(objective)
        if alpha is not None:
            record["alpha"] = alpha
        if len(self.data.val):
            record["val"] = self._validate(stage.number)
        self.elapsed += time.perf_counter() - start
        record["time_s"] = time.perf_counter() - start
        return record

    def _train_inputs(self) -> Any:
        return (
            x
            for x, _ in split_batches(
                self.data.train, self.cfg.data.eval_batch_size, self.data.mean, self.data.std, device=self.device
            )
        )

    def _validate(self, number: int) -> dict[str, Any]:
        """Validation metrics; in stage 1 a new best balanced accuracy saves ``best_val.pt``."""
        val = evaluate_split(self.model, self.data.val, self.data, self.cfg, self.runtime)
        record = {k: val[k] for k in ("top1", "many", "medium", "few", "ece", "nll")}
        record["balanced"] = balanced_accuracy(val)
        if number == 1 and record["balanced"] > self.best_val:
            self.best_val = record["balanced"]
            if is_main():
                save_checkpoint(
                    self.run.best_val_checkpoint, {"epoch": self.epoch, "model": self.model.state_dict()}
                )
        return record

    def final_results(self) -> dict[str, Any]:
        """``results.json``: the last-epoch model on the test split (and the validation split)."""
        data, cfg = self.data, self.cfg
        test_logits = split_logits(self.model, data.test, data, cfg, self.runtime)  # predicted once, used twice
        results = {
            "name": cfg.name,
            "seed": cfg.seed,
            "epochs": cfg.total_epochs,
            "device": str(self.device),
            "train_time_s": self.elapsed,
            "manifest_sha256": data.manifest.sha256(),
            "class_counts": data.class_counts.tolist(),
            "many_threshold": cfg.eval.many_threshold,
            "few_threshold": cfg.eval.few_threshold,
            "test": evaluate_split(self.model, data.test, data, cfg, self.runtime, details=True, logits=test_logits),
            "val": evaluate_split(self.model, data.val, data, cfg, self.runtime) if len(data.val) else None,
        }
        if cfg.eval.open_set:
            results["open_set"] = open_set_metrics(self.model, data, cfg, self.runtime, test_logits=test_logits)
        return results

    # -- TensorBoard -------------------------------------------------------------------------------
    def _write_scalars(self, record: dict[str, Any], step: int) -> None:
        """TensorBoard scalars of ``record`` (``logging.tensorboard``); the writer opens on first use,
        purging events a run interrupted after its last checkpoint wrote at or after ``step``."""
        if not self.cfg.logging.tensorboard:
            return
        if self.scalars is None:
            self.scalars = TensorBoardScalars(self.run.path / "tensorboard", purge_step=step)
        self.scalars.write(record, step)

    def _close_scalars(self) -> None:
        if self.scalars is not None:
            self.scalars.close()
            self.scalars = None

    # -- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The checkpoint: counters, model, the stage's own state, RNGs, config and split hash."""
        if self.stage is None:
            raise RuntimeError("no stage has started; nothing to checkpoint")
        return {
            "epoch": self.epoch,
            "stage": self.stage.number,
            "model": self.model.state_dict(),
            **self.stage.state_dict(),
            "best_val": self.best_val,
            "elapsed_s": self.elapsed,
            "rng": rng_states(),
            "config": self.cfg.model_dump(mode="json"),
            "manifest_sha256": self.data.manifest.sha256(),
        }

    def resume(self, *, refuse_finished: bool = False) -> None:
        """Continue from ``checkpoints/last.pt``: model, optimiser, sampler, RNGs and counters. A run
        folder with no completed epoch restarts from epoch 0 (after checking its split manifest). With
        ``refuse_finished``, a run that wrote its results is an error instead of being re-evaluated, and
        so is one whose results exist without a checkpoint (starting it again would overwrite them)."""
        if is_main():
            self.run.remove_stale_temp_files()
        barrier()  # no rank looks at the folder while rank 0 tidies it
        if refuse_finished and not self.run.last_checkpoint.exists() and self.run.results_path.is_file():
            raise RunDirError(
                f"'{self.run.path}' holds results.json but no checkpoints/last.pt, so it cannot be resumed "
                "(training it again would overwrite its results); restore the checkpoint, or train a new run "
                "with --out NEW_FOLDER"
            )
        if not self.run.last_checkpoint.exists():
            self._check_manifest_file()
            if is_main():
                self.run.keep_metrics_before(0)
                self.run.best_val_checkpoint.unlink(missing_ok=True)
            barrier()
            _logger.info("%s has no completed epoch; starting it from epoch 0", self.run.path)
            return
        state = load_checkpoint(self.run.last_checkpoint, required=_RESUME_KEYS)
        if state["manifest_sha256"] != self.data.manifest.sha256():
            raise RunDirError(
                f"'{self.run.path}': the data split rebuilt from "
                f"{'data.cache' if self.cfg.data.cache else 'data.root'} differs from the checkpoint's (sha256 "
                "mismatch); pass --data-root (or --data-cache) with the data this run was trained on"
            )
        if refuse_finished and state["epoch"] >= self.cfg.total_epochs and self.run.results_path.is_file():
            raise RunDirError(
                f"'{self.run.path}' has finished ({state['epoch']} of {self.cfg.total_epochs} "
                "epochs, results.json written); nothing to resume. Evaluate it with `ccsam eval`"
            )
        number = state["stage"]
        # stage 2 may change the head's structure: set it up before loading the weights
        params = list(self.model.parameters()) if number == 1 else prepare_stage2(self.model, self.cfg)
        load_model_state(self.model, state, self.run.last_checkpoint)
        self.epoch, self.best_val, self.elapsed = state["epoch"], state["best_val"], state["elapsed_s"]
        self.stage = self._stage(number, params)
        try:
            self.stage.load_state_dict(state)
            restore_rng_states(state["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
            raise RunDirError(
                f"checkpoint '{self.run.last_checkpoint}' does not fit this run's optimiser or sampler "
                f"({exc.__class__.__name__}); it is damaged or from another run"
            ) from None
        if is_main():
            self.run.keep_metrics_before(self.epoch)
        barrier()
        _logger.info("resuming %s at epoch %d/%d", self.run.path, self.epoch, self.cfg.total_epochs)

    def _check_manifest_file(self) -> None:
        """A restarted run must rebuild the split its folder records (if it recorded one)."""
        if not self.run.manifest_path.is_file():
            return
        try:
            stored = SplitManifest.load_json(self.run.manifest_path).sha256()
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise RunDirError(
                f"'{self.run.manifest_path}' is damaged ({str(exc)[:120]}); delete it to rebuild the split "
                "from the config"
            ) from None
        if stored != self.data.manifest.sha256():
            raise RunDirError(
                f"'{self.run.path}': the data split rebuilt from data.root differs from "
                f"'{self.run.manifest_path.name}'; pass --data-root with this run's data set"
            )


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{100 * value:5.1f}"


def _log_epoch(record: dict[str, Any], cfg: RunConfig) -> None:
    total = cfg.stage1.epochs if record["stage"] == 1 else cfg.stage2.epochs
    text = (
        f"stage{record['stage']} {record['stage_epoch'] + 1:>3}/{total} lr {record['lr']:.4g} "
        f"loss {record['loss']:.4f} train-acc {_fmt(record['accuracy'])}"
    )
    if "val" in record:
        v = record["val"]
        text += (
            f" | val bal {_fmt(v['balanced'])} many {_fmt(v['many'])} med {_fmt(v['medium'])} "
            f"few {_fmt(v['few'])}"
        )
    _logger.info(
        "%s (%.1fs, %.0f img/s, data wait %.1fs)",
        text,
        record["time_s"],
        record["img_per_s"],
        record["data_wait_s"],
    )


def train(cfg: RunConfig, run: RunDir, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train ``cfg`` in ``run`` (resuming from its last checkpoint if asked) and return ``results.json``."""
    # A resumed run takes every weight from its checkpoint (an unstarted one restarts from scratch).
    trainer = Trainer(
        cfg, run, progress=progress, load_pretrained_weights=not (resume and run.last_checkpoint.exists())
    )
    if resume:
        trainer.resume()
    results = trainer.fit()
    if results is None:  # fit() without stop_at always finishes
        raise RuntimeError("training stopped before the last epoch")
    return results
