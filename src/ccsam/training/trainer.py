"""The one training engine: stage 1 then (optionally) stage 2, checkpoints, validation, final test.

Methods differ only in their config: the objective (:mod:`ccsam.training.objectives`), the sampler, the
parameters optimised and the schedule of each stage. The test split is evaluated once, after the last
epoch; the only model choice the engine makes (``stage2.init_from=best_val``) uses the validation split.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim import Optimizer

from ccsam.config.schema import RunConfig, ScheduleFields
from ccsam.data.batches import split_batches, train_batches
from ccsam.data.build import LongTailData, build_data, build_open_images
from ccsam.data.dataloader import DataLoaderBatches
from ccsam.data.loader import InMemoryLoader
from ccsam.data.samplers import build_sampler
from ccsam.errors import DivergenceError, RunDirError
from ccsam.evaluation import (
    classification_report,
    confusion_matrix,
    open_set_report,
    reliability_bins,
    with_open_samples,
)
from ccsam.models import Classifier, build_model
from ccsam.models.pretrained import load_pretrained
from ccsam.optim.schedules import adversarial_weight, learning_rate
from ccsam.training.checkpoint import (
    load_checkpoint,
    load_model_state,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)
from ccsam.training.feasibility import check_trainable, divergence_message
from ccsam.training.loop import predict, train_one_epoch
from ccsam.training.components import (
    adjust_logits,
    build_criterion,
    build_optimizer,
    install_head,
    prediction_head,
    prepare_stage2,
)
from ccsam.training.objectives import (
    CcsamStage1Objective,
    CcsamStage2Objective,
    ErmObjective,
    HeadRetrainObjective,
    ScopedCcsamObjective,
)
from ccsam.training.precision import Runtime, prepare_model
from ccsam.training.updates import Update, select_update
from ccsam.optim.flattening import SwaAverager, apply_spectral_norm, swa_window
from ccsam.training.run_dir import RunDir
from ccsam.training.tensorboard import TensorBoardScalars, require_tensorboard

_logger = logging.getLogger(__name__)


def select_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` / ``cuda:N`` without that GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RunDirError(f"device={name} was asked for but no CUDA device is available; "
                              "use device=cpu or auto")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise RunDirError(f"device={name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                              f"numbered 0..{torch.cuda.device_count() - 1}; choose one of them")
    return torch.device(name)


@dataclass
class _Stage:
    """The optimiser and batch source of one stage, and where it sits on the global epoch counter."""

    number: int
    config: ScheduleFields
    first_epoch: int
    optimizer: Optimizer
    loader: InMemoryLoader | DataLoaderBatches
    criterion: torch.nn.Module
    update: Update
    swa: SwaAverager | None
    directions: torch.Generator | None  # random directions of the mag_only ablation

def _stage_parameters(number: int, cfg: RunConfig, model: Classifier) -> list[torch.nn.Parameter]:
    """Stage 1 trains everything; stage 2 freezes the backbone and sets up its head (see prepare_stage2)."""
    return list(model.parameters()) if number == 1 else prepare_stage2(model, cfg)


def _build_stage(number: int, cfg: RunConfig, model: Classifier, data: LongTailData, runtime: Runtime,
                 params: list[torch.nn.Parameter], counts: torch.Tensor) -> _Stage:
    """Sampler, batches, criterion and a fresh optimiser over ``params`` for one stage."""
    stage_cfg = cfg.stage1 if number == 1 else cfg.stage2
    seed = cfg.seed + 1000 * (number - 1)  # independent streams per stage, fixed by the run seed
    extra = {"total_epochs": stage_cfg.epochs} if stage_cfg.sampler == "progressive" else {}
    sampler = build_sampler(stage_cfg.sampler, data.train.labels.cpu(), data.num_classes, seed, **extra)
    mixup_alpha = cfg.stage1.mixup_alpha if number == 1 else 0.0
    memory_format = torch.channels_last if runtime.channels_last else torch.contiguous_format
    loader = train_batches(data, sampler, cfg.data, mixup_alpha, seed, runtime.device, memory_format)
    first_epoch = 0 if number == 1 else cfg.stage1.epochs
    criterion = build_criterion(stage_cfg.loss, counts)
    optimizer = build_optimizer(stage_cfg, params, counts)
    noise = torch.Generator(device=runtime.device).manual_seed(seed + 17) if stage_cfg.flattening == "mp" else None
    update = select_update(optimizer, stage_cfg.flattening, gp_radius=stage_cfg.gp_radius,
                           gp_alpha=stage_cfg.gp_alpha, mp_bound=stage_cfg.mp_bound,
                           mp_copies=stage_cfg.mp_copies, generator=noise)
    swa = SwaAverager(model) if stage_cfg.swa else None
    mag_only = number == 1 and cfg.stage1.radius_mode == "mag_only"
    directions = torch.Generator(device=runtime.device).manual_seed(seed + 29) if mag_only else None
    return _Stage(number, stage_cfg, first_epoch, optimizer, loader, criterion, update, swa, directions)


def _objective(cfg: RunConfig, stage: _Stage, stage_epoch: int, counts: torch.Tensor) -> Any:
    """The stage's objective at ``stage_epoch`` (the epoch sets stage 2's alpha and the DRW switch)."""
    if hasattr(stage.criterion, "set_epoch"):
        stage.criterion.set_epoch(stage_epoch)
    if stage.number == 2:
        if cfg.stage2.method == "ccsam":
            alpha = adversarial_weight(stage_epoch, cfg.stage2.epochs, cfg.stage2.up_limit)
            return CcsamStage2Objective(counts, alpha, cfg.stage2.div, cfg.stage2.step)
        return HeadRetrainObjective(stage.criterion, backbone_grad=cfg.stage2.train_bn)
    s1 = cfg.stage1
    if s1.method == "erm":
        return ErmObjective(stage.criterion)
    if s1.perturb_scope != "head":
        return ScopedCcsamObjective(counts, s1.flat_ratio, s1.noise_scale, s1.perturb_scope, s1.perturb_last_k)
    return CcsamStage1Objective(counts, s1.flat_ratio, s1.noise_scale, stage.criterion, radius_mode=s1.radius_mode,
                                rho=s1.ablation_rho, generator=stage.directions)


def _set_modes(model: Classifier, cfg: RunConfig, stage: _Stage) -> None:
    model.train()
    if stage.number == 2 and cfg.stage2.bn_mode == "eval":
        model.backbone.eval()


def evaluate_split(
    model: Classifier, arrays: Any, data: LongTailData, cfg: RunConfig, runtime: Runtime | None = None,
    details: bool = False,
) -> dict[str, Any]:
    """Metrics of ``model`` on one split (top-1, many/medium/few, per-class accuracy, ECE, NLL); with
    ``details`` also the reliability-diagram bins and, up to ``eval.confusion_max_classes`` classes, the
    confusion matrix."""
    logits = predict(model, arrays, cfg.data.eval_batch_size, data.mean, data.std, runtime,
                     head=prediction_head(model, cfg))
    logits = adjust_logits(logits, cfg, data.class_counts).cpu()
    labels = arrays.labels.cpu()
    report = classification_report(
        logits, labels, data.class_counts,
        many_threshold=cfg.eval.many_threshold, few_threshold=cfg.eval.few_threshold, ece_bins=cfg.eval.ece_bins,
    )
    if details:
        if data.num_classes <= cfg.eval.confusion_max_classes:  # C^2 entries: 66M at iNat's 8142
            report["confusion_matrix"] = confusion_matrix(logits, labels, data.num_classes)
        report["reliability"] = reliability_bins(logits, labels, cfg.eval.ece_bins)
    return report


def open_set_results(
    model: Classifier, test: Any, open_images: Any, data: LongTailData, cfg: RunConfig,
    runtime: Runtime | None = None,
) -> dict[str, Any]:
    """OLTR open-set metrics (``eval.open_set``): the test split plus the ``_open`` images labelled -1,
    rejection below ``eval.open_threshold`` (:func:`ccsam.evaluation.open_set_report`)."""
    head = prediction_head(model, cfg)
    logits = [
        adjust_logits(predict(model, split, cfg.data.eval_batch_size, data.mean, data.std, runtime,
                              head=head), cfg, data.class_counts).cpu()
        for split in (test, open_images)
    ]
    merged, labels = with_open_samples(logits[0], test.labels.cpu(), logits[1])
    return open_set_report(merged, labels, data.class_counts, threshold=cfg.eval.open_threshold,
                           many_threshold=cfg.eval.many_threshold, few_threshold=cfg.eval.few_threshold,
                           variant=cfg.eval.open_f_measure)


def balanced_accuracy(report: dict[str, Any]) -> float:
    """Mean per-class accuracy over the classes present in the split (the validation selection metric)."""
    values = [v for v in report["per_class_accuracy"] if v is not None]
    return sum(values) / len(values) if values else float("nan")


_RESUME_KEYS = ("epoch", "stage", "model", "optimizer", "loader", "best_val", "elapsed_s", "rng",
                "manifest_sha256")


class Trainer:
    """Runs (or resumes) one configured run inside a run folder."""

    def __init__(self, cfg: RunConfig, run: RunDir, *, progress: bool = True,
                 load_pretrained_weights: bool = True) -> None:
        """Build data, model and runtime; ``load_pretrained_weights=False`` skips ``model.pretrained``
        (a resumed run takes every weight from its checkpoint)."""
        if cfg.logging.tensorboard:
            require_tensorboard()  # fail before any work, not after the first epoch
        self.cfg = cfg
        self.run = run
        self.progress = progress
        self.device = select_device(cfg.device)
        data = build_data(cfg.data)
        check_trainable(cfg, data)
        # The DataLoader path keeps images in host memory and moves each batch; otherwise all on the device.
        self.data = data if cfg.data.loader == "dataloader" else data.to(self.device)
        self.counts = data.class_counts.to(self.device)
        self.runtime = Runtime.resolve(cfg.runtime, self.device)
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model.arch, in_channels=data.in_channels, num_classes=data.num_classes,
                            width=cfg.model.width, bias=cfg.model.bias).to(self.device)
        if cfg.model.pretrained is not None and load_pretrained_weights:
            load_pretrained(model, cfg.model.pretrained, arch=cfg.model.arch, download=cfg.model.download,
                            load_head=cfg.model.pretrained_head)
        model = install_head(model, cfg.model)
        if cfg.stage1.spectral_norm:
            apply_spectral_norm(model)  # before any optimiser or checkpoint: it renames weight parameters
        self.model = prepare_model(model, cfg.runtime, self.runtime)
        self.scalars: TensorBoardScalars | None = None
        self.epoch = 0
        self.best_val = -math.inf
        self.elapsed = 0.0
        self.stage: _Stage | None = None

    # -- checkpoints -------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        assert self.stage is not None
        return {
            "epoch": self.epoch,
            "stage": self.stage.number,
            "model": self.model.state_dict(),
            "optimizer": self.stage.optimizer.state_dict(),
            "loader": self.stage.loader.state_dict(),
            "update_generator": getattr(getattr(self.stage.update, "generator", None), "get_state", lambda: None)(),
            "swa": self.stage.swa.state_dict() if self.stage.swa is not None else None,
            "directions": self.stage.directions.get_state() if self.stage.directions is not None else None,
            "best_val": self.best_val,
            "elapsed_s": self.elapsed,
            "rng": rng_states(),
            "config": self.cfg.model_dump(mode="json"),
            "manifest_sha256": self.data.manifest.sha256(),
        }

    def resume(self, *, refuse_finished: bool = False) -> None:
        """Continue from ``checkpoints/last.pt``: model, optimiser, sampler, RNGs and counters. A run
        folder with no completed epoch restarts from epoch 0 (after checking its split manifest). With
        ``refuse_finished``, a run that wrote its results is an error instead of being re-evaluated."""
        self.run.remove_stale_temp_files()
        if not self.run.last_checkpoint.exists():
            self._check_manifest_file()
            self.run.keep_metrics_before(0)
            self.run.best_val_checkpoint.unlink(missing_ok=True)
            _logger.info("%s has no completed epoch; starting it from epoch 0", self.run.path)
            return
        state = load_checkpoint(self.run.last_checkpoint, required=_RESUME_KEYS)
        if state["manifest_sha256"] != self.data.manifest.sha256():
            raise RunDirError(f"'{self.run.path}': the data split rebuilt from data.root differs from the "
                              "checkpoint's (sha256 mismatch); pass --data-root with the data set this run "
                              "was trained on")
        if refuse_finished and state["epoch"] >= self.cfg.total_epochs and self.run.results_path.is_file():
            raise RunDirError(f"'{self.run.path}' has finished ({state['epoch']} of {self.cfg.total_epochs} "
                              "epochs, results.json written); nothing to resume. Evaluate it with "
                              "`ccsam eval`")
        number = state["stage"]
        params = _stage_parameters(number, self.cfg, self.model)  # stage 2 may change the head's structure
        load_model_state(self.model, state, self.run.last_checkpoint)
        self.epoch, self.best_val, self.elapsed = state["epoch"], state["best_val"], state["elapsed_s"]
        self.stage = _build_stage(number, self.cfg, self.model, self.data, self.runtime, params, self.counts)
        try:
            self.stage.optimizer.load_state_dict(state["optimizer"])
            self.stage.loader.load_state_dict(state["loader"])
            if state.get("update_generator") is not None:
                self.stage.update.generator.set_state(state["update_generator"])
            if state.get("swa") is not None and self.stage.swa is not None:
                self.stage.swa.load_state_dict(state["swa"])
            if state.get("directions") is not None and self.stage.directions is not None:
                self.stage.directions.set_state(state["directions"])
            restore_rng_states(state["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
            raise RunDirError(f"checkpoint '{self.run.last_checkpoint}' does not fit this run's optimiser or "
                              f"sampler ({exc.__class__.__name__}); it is damaged or from another run"
                              ) from None
        self.run.keep_metrics_before(self.epoch)
        _logger.info("resuming %s at epoch %d/%d", self.run.path, self.epoch, self.cfg.total_epochs)

    def _check_manifest_file(self) -> None:
        """A restarted run must rebuild the split its folder records (if it recorded one)."""
        from ccsam.data.splits import SplitManifest

        if not self.run.manifest_path.is_file():
            return
        try:
            stored = SplitManifest.load_json(self.run.manifest_path).sha256()
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise RunDirError(f"'{self.run.manifest_path}' is damaged ({str(exc)[:120]}); delete it to "
                              "rebuild the split from the config") from None
        if stored != self.data.manifest.sha256():
            raise RunDirError(f"'{self.run.path}': the data split rebuilt from data.root differs from "
                              f"'{self.run.manifest_path.name}'; pass --data-root with this run's data set")

    # -- the loop ----------------------------------------------------------------------------------
    def _enter_stage(self, number: int) -> None:
        if number == 2 and self.cfg.stage2.init_from == "best_val" and self.run.best_val_checkpoint.is_file():
            self.model.load_state_dict(load_checkpoint(self.run.best_val_checkpoint)["model"])
            _logger.info("stage 2 starts from the best-validation stage-1 weights")
        params = _stage_parameters(number, self.cfg, self.model)
        self.stage = _build_stage(number, self.cfg, self.model, self.data, self.runtime, params, self.counts)

    def _run_epoch(self) -> None:
        number = 1 if self.epoch < self.cfg.stage1.epochs else 2
        if self.stage is None or self.stage.number != number:
            self._enter_stage(number)
        stage = self.stage
        assert stage is not None
        stage_epoch = self.epoch - stage.first_epoch
        objective = _objective(self.cfg, stage, stage_epoch, self.counts)
        steps = len(stage.loader)
        start = time.perf_counter()
        _set_modes(self.model, self.cfg, stage)
        train_stats = train_one_epoch(
            self.model, stage.loader, objective, stage.optimizer,
            lambda step: learning_rate(stage.config, stage_epoch, step, steps), runtime=self.runtime,
            update=stage.update, description=f"stage{number} {stage_epoch + 1}/{stage.config.epochs}", progress=self.progress,
            on_nonfinite=self.cfg.runtime.on_nonfinite,
        )
        if "nonfinite_step" in train_stats:  # stop before anything of this epoch is written
            message = divergence_message(self.cfg, self.run, number, stage_epoch, train_stats, steps)
            raise DivergenceError(message)
        self._average_weights(stage, stage_epoch)
        record: dict[str, Any] = {"epoch": self.epoch, "stage": number, "stage_epoch": stage_epoch,
                                  "lr": learning_rate(stage.config, stage_epoch, 0, steps), **train_stats}
        if isinstance(objective, CcsamStage2Objective):
            record["alpha"] = objective.alpha
        if len(self.data.val):
            val = evaluate_split(self.model, self.data.val, self.data, self.cfg, self.runtime)
            record["val"] = {k: val[k] for k in ("top1", "many", "medium", "few", "ece", "nll")}
            record["val"]["balanced"] = balanced_accuracy(val)
            if number == 1 and record["val"]["balanced"] > self.best_val:
                self.best_val = record["val"]["balanced"]
                save_checkpoint(self.run.best_val_checkpoint, {"epoch": self.epoch, "model": self.model.state_dict()})
        self.elapsed += time.perf_counter() - start
        record["time_s"] = time.perf_counter() - start
        self.run.append_metrics(record)
        self._write_scalars(record, self.epoch)
        self.epoch += 1
        save_checkpoint(self.run.last_checkpoint, self._state())
        _log_epoch(record, self.cfg)

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

    def _average_weights(self, stage: _Stage, stage_epoch: int) -> None:
        """SWA: add this epoch's weights to the average inside the window; after the stage's last epoch
        the model takes the averaged weights (and, where BN is trained, recomputed BN statistics)."""
        if stage.swa is None:
            return
        if swa_window(stage_epoch, stage.config.epochs, stage.config.swa_start):
            stage.swa.update(self.model)
        if stage_epoch + 1 == stage.config.epochs:
            if stage.number == 2 and self.cfg.stage2.bn_mode == "eval":
                with torch.no_grad():
                    for p, q in zip(self.model.parameters(), stage.swa.averaged.module.parameters(), strict=True):
                        p.copy_(q)
            else:
                batches = (x for x, _ in split_batches(self.data.train, self.cfg.data.eval_batch_size,
                                                       self.data.mean, self.data.std, device=self.device))
                stage.swa.finalize(self.model, batches)

    def fit(self, stop_at: int | None = None, *, evaluate_test: bool = True) -> dict[str, Any] | None:
        """Train to the last epoch, then evaluate the last-epoch model on the test split once.

        ``stop_at`` ends the run early after that many (global) epochs, with no test evaluation, as an
        interruption would: the run folder can then be continued with ``resume``. ``evaluate_test=False``
        trains to the end and returns ``None`` without touching the test split (hyper-parameter search).
        """
        if not self.run.manifest_path.exists():
            self.data.manifest.save_json(self.run.manifest_path)
        while self.epoch < self.cfg.total_epochs:
            if stop_at is not None and self.epoch >= stop_at:
                self._close_scalars()
                return None
            self._run_epoch()
        if not evaluate_test:
            return None
        results = {
            "name": self.cfg.name,
            "seed": self.cfg.seed,
            "epochs": self.cfg.total_epochs,
            "device": str(self.device),
            "train_time_s": self.elapsed,
            "manifest_sha256": self.data.manifest.sha256(),
            "class_counts": self.data.class_counts.tolist(),
            "many_threshold": self.cfg.eval.many_threshold,
            "few_threshold": self.cfg.eval.few_threshold,
            "test": evaluate_split(self.model, self.data.test, self.data, self.cfg, self.runtime, details=True),
            "val": evaluate_split(self.model, self.data.val, self.data, self.cfg, self.runtime) if len(self.data.val) else None,
        }
        if self.cfg.eval.open_set:  # OLTR (spec 3.3): the test split plus the `_open` list's images
            opened = build_open_images(self.cfg.data, self.data)
            results["open_set"] = open_set_results(self.model, self.data.test, opened, self.data, self.cfg,
                                                   self.runtime)
        self.run.write_results(results)
        test = {k: results["test"][k] for k in ("top1", "many", "medium", "few", "ece", "nll")}
        self._write_scalars({"test": test}, self.cfg.total_epochs)
        self._close_scalars()
        return results


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{100 * value:5.1f}"


def _log_epoch(record: dict[str, Any], cfg: RunConfig) -> None:
    total = cfg.stage1.epochs if record["stage"] == 1 else cfg.stage2.epochs
    text = (f"stage{record['stage']} {record['stage_epoch'] + 1:>3}/{total} lr {record['lr']:.4g} "
            f"loss {record['loss']:.4f} train-acc {_fmt(record['accuracy'])}")
    if "val" in record:
        v = record["val"]
        text += (f" | val bal {_fmt(v['balanced'])} many {_fmt(v['many'])} med {_fmt(v['medium'])} "
                 f"few {_fmt(v['few'])}")
    _logger.info("%s (%.1fs, %.0f img/s, data wait %.1fs)", text, record["time_s"], record["img_per_s"],
                 record["data_wait_s"])


def train(cfg: RunConfig, run: RunDir, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train ``cfg`` in ``run`` (resuming from its last checkpoint if asked) and return ``results.json``."""
    # A resumed run takes every weight from its checkpoint (an unstarted one restarts from scratch).
    trainer = Trainer(cfg, run, progress=progress,
                      load_pretrained_weights=not (resume and run.last_checkpoint.exists()))
    if resume:
        trainer.resume()
    results = trainer.fit()
    assert results is not None
    return results
