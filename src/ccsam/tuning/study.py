"""Hyper-parameter search on the validation split with Optuna, then a multi-seed final phase.

Study folder::

    STUDY/
      study.db                     Optuna's SQLite storage (one Optuna study per method); resumable
      spec.json                    the study as declared (checked on every resume)
      <method>/space.json          the method's search space, fixed overrides and budget
      <method>/trials/trial-NNNN/  one run folder per trial: validation metrics only, never results.json
      <method>/trials.json         every trial: state, sampled values, per-epoch validation score
      <method>/choice.json         the chosen values: the best validation score among complete trials
      <method>/final/seed-S/       the chosen config on the full schedule, one run folder per seed
      <method>/final.json          per-seed test (and validation) metrics of those runs

The search phase trains with ``evaluate_test=False``: the objective is the last-epoch validation
balanced accuracy (mean per-class accuracy, the engine's selection metric), reported every epoch to a
median or successive-halving pruner. The test split is evaluated only in :func:`run_final`, once per seed.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ccsam.atomic_io import atomic_write_text
from ccsam.config import config_differences, resolve_config
from ccsam.config.migration import migrate_key, migrate_override
from ccsam.config.schema import MACHINE_KEYS, RunConfig
from ccsam.errors import CcsamError, ConfigError, InterruptedRun, RunDirError
from ccsam.training.run_dir import RunDir
from ccsam.training.stage1_reuse import check_stage1_source, start_from_stage1
from ccsam.training.trainer import Trainer, train
from ccsam.tuning.space import ParamSpec, StudySpec

_logger = logging.getLogger(__name__)

__all__ = ["final_run_config", "run_final", "run_search", "study_summary"]

VALIDATION_KEY = "balanced"


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise CcsamError("`ccsam tune` needs Optuna: pip install 'ccsam[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


# Overrides that change speed only, never the numbers (cf. ``ccsam.config.schema.MACHINE_KEYS``); every
# other override, ``runtime.precision`` / ``runtime.on_nonfinite`` included, is part of a recorded spec.
_SPEED_ONLY_OVERRIDES = ("runtime.threads=", "runtime.compile=", "runtime.channels_last=", "device=")
# Config keys a final seed folder may differ in from the config the final phase would train now.
_SPEED_ONLY_KEYS = (*MACHINE_KEYS, ("runtime", "channels_last"))
# Fields of space.json that older study folders lack: a missing one means "not recorded" and is accepted.
_NEWER_SPACE_FIELDS = ("startup_trials", "pruner_startup_trials", "pruner_warmup_epochs")


def _method_part(value: Any) -> Any:
    """A recorded value without speed-only overrides (``runtime.threads`` / ``compile`` /
    ``channels_last``, ``device``): they change speed, not the method or its numbers."""
    if isinstance(value, list):
        return [v for v in value if not (isinstance(v, str) and v.replace(" ", "").startswith(_SPEED_ONLY_OVERRIDES))]
    return value


def migrated_params(params: dict[str, Any]) -> dict[str, Any]:
    """Chosen values recorded by a study of the flat-config version, under today's keys."""
    return {migrate_key(k): v for k, v in params.items()}


def _migrated_record(record: dict[str, Any]) -> dict[str, Any]:
    """A ``space.json`` of the flat-config version under today's keys (searched keys and overrides)."""
    out = dict(record)
    if isinstance(out.get("space"), dict):
        out["space"] = migrated_params(out["space"])
    for name in ("overrides", "search_overrides"):
        if isinstance(out.get(name), list):
            out[name] = [migrate_override(v) if isinstance(v, str) else v for v in out[name]]
    return out


def storage_url(study_dir: Path) -> str:
    return f"sqlite:///{(study_dir / 'study.db').resolve()}"


def stored_trial_count(study_dir: Path, method: str, *, finished_only: bool = False) -> int | None:
    """Trials of ``method`` in the study folder's Optuna storage (``finished_only``: complete + pruned);
    ``None`` without a storage or a study of that name."""
    if not (study_dir / "study.db").is_file():
        return None
    optuna = import_optuna()
    try:
        study = optuna.load_study(study_name=method, storage=storage_url(study_dir))
    except KeyError:
        return None
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=done if finished_only else None))


def _start_over(study_dir: Path, method: str) -> None:
    """Forget a search of ``method`` in which no trial finished (only failed or killed ones)."""
    optuna = import_optuna()
    if stored_trial_count(study_dir, method, finished_only=True) is not None:
        optuna.delete_study(study_name=method, storage=storage_url(study_dir))
    shutil.rmtree(study_dir / method / "trials", ignore_errors=True)
    (study_dir / method / "trials.json").unlink(missing_ok=True)


def space_record(spec: StudySpec, method: str) -> dict[str, Any]:
    """What ``space.json`` records of ``method``'s search: preset, budget, sampler, pruner, overrides, space."""
    m = spec.methods[method]
    return {
        "method": method,
        "preset": m.preset,
        "trials": spec.trials,
        "pruner": spec.pruner,
        "sampler_seed": spec.sampler_seed,
        "startup_trials": spec.startup_trials,
        "pruner_startup_trials": spec.pruner_startup_trials,
        "pruner_warmup_epochs": spec.pruner_warmup_epochs,
        "overrides": [*spec.common_overrides, *m.overrides],
        "search_overrides": [*spec.search_overrides, *m.search_overrides],
        "space": {k: p.model_dump(mode="json") for k, p in m.space.items()},
    }


def space_changes(stored: dict[str, Any], record: dict[str, Any]) -> list[str]:
    """Fields of a stored ``space.json`` (any version) that differ from ``record``, the budget aside (a
    field an older record lacks, and speed-only overrides, are not compared)."""
    stored = _migrated_record(stored)
    return sorted(
        k for k in record
        if k != "trials" and not (k in _NEWER_SPACE_FIELDS and k not in stored)
        and _method_part(stored.get(k)) != _method_part(record[k])
    )


def _check_spec(spec: StudySpec, study_dir: Path, method: str) -> None:
    """Record the spec; refuse a study folder whose record of ``method``'s search differs (a field an
    older record lacks is not compared). A record under which no trial finished binds nothing: the
    search starts over with the new spec."""
    record = space_record(spec, method)
    path = study_dir / method / "space.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        changed = space_changes(stored, record)  # migrates a flat-config record itself
        if changed and not stored_trial_count(study_dir, method, finished_only=True):
            _logger.warning(
                "'%s': no trial of the recorded search finished (%s changed); starting its search over",
                method, ", ".join(changed),
            )
            _start_over(study_dir, method)
            changed = []
        if changed:
            raise ConfigError(
                f"study folder '{study_dir}' searched '{method}' with other "
                f"{', '.join(changed)}; use a new --study-dir or restore the study file"
            )
        stored_trials = int(stored.get("trials", spec.trials))
        if spec.trials < stored_trials:  # a larger budget extends the search; a smaller one would misreport it
            raise ConfigError(
                f"study folder '{study_dir}' searched '{method}' with a budget of {stored_trials} trials; "
                f"trials: {spec.trials} cannot shrink it (restore trials: {stored_trials}, raise it to extend "
                "the search, or use a new --study-dir)"
            )
    study_dir.mkdir(parents=True, exist_ok=True)
    _write_json(study_dir / "spec.json", spec.model_dump(mode="json"))
    _write_json(path, record)


def _suggest(trial: Any, key: str, param: ParamSpec) -> Any:
    if param.type == "categorical":
        return trial.suggest_categorical(key, list(param.choices or ()))
    if param.type == "int":
        low, high = int(param.low or 0), int(param.high or 0)
        return trial.suggest_int(key, low, high, step=int(param.step or 1), log=param.log)
    return trial.suggest_float(key, param.low, param.high, step=param.step, log=param.log)


def _pruner(spec: StudySpec, optuna: Any) -> Any:
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=spec.pruner_startup_trials, n_warmup_steps=spec.pruner_warmup_epochs
        )
    if spec.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, spec.pruner_warmup_epochs))
    return optuna.pruners.NopPruner()


def _objective(spec: StudySpec, method: str, trials_dir: Path, optuna: Any) -> Any:
    def train_trial(trial: Any) -> float:
        params = {key: _suggest(trial, key, p) for key, p in spec.methods[method].space.items()}
        cfg = spec.search_config(method, params)
        cfg = cfg.model_copy(update={"name": f"{method}-trial{trial.number:04d}"})
        run = RunDir.create(trials_dir / f"trial-{trial.number:04d}", cfg, ["ccsam", "tune", method])
        trial.set_user_attr("run_dir", str(run.path))
        score = float("nan")
        try:
            trainer = Trainer(cfg, run, progress=False)
            while trainer.epoch < cfg.total_epochs:
                trainer.fit(stop_at=trainer.epoch + 1, evaluate_test=False)  # validation only, never test
                score = validation_score(run.read_metrics()[-1])
                trial.report(score, trainer.epoch - 1)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        finally:
            shutil.rmtree(run.path / "checkpoints", ignore_errors=True)  # weights are not kept per trial
        return score

    def objective(trial: Any) -> float:
        try:
            score = train_trial(trial)
        except (KeyboardInterrupt, InterruptedRun):
            trial.set_user_attr("interrupted", True)
            raise
        except CcsamError as exc:  # a bad config or a diverged run: one line, the trial fails (not counted)
            return _failed(trial, method, str(exc))
        if not math.isfinite(score):
            return _failed(trial, method, f"validation score {score}")
        return score

    return objective


def _failed(trial: Any, method: str, reason: str) -> float:
    """Mark a trial failed: its reason in the user attrs (and trials.json), one log line, NaN for Optuna."""
    trial.set_user_attr("error", reason)
    _logger.warning("'%s' trial %d failed (not counted): %s", method, trial.number, reason)
    return float("nan")  # Optuna records a NaN objective as FAIL


def validation_score(record: dict[str, Any]) -> float:
    """The search objective of one epoch's metrics record: validation balanced accuracy."""
    if "val" not in record:
        raise ConfigError("the search needs a validation split: set data.val_per_class > 0")
    return float(record["val"][VALIDATION_KEY])


def _requeue_interrupted(study: Any, optuna: Any) -> None:
    """Trials a killed process left RUNNING become FAIL; each interrupted trial is re-queued once with its
    sampled values, so an interruption neither loses nor adds a point of the budget."""
    state = optuna.trial.TrialState
    storage = study._storage  # Optuna has no public call to close a stale trial without heartbeats
    requeued = set(study.user_attrs.get("requeued", []))
    for t in study.get_trials(deepcopy=False):
        killed = t.state == state.RUNNING
        if killed:
            storage.set_trial_state_values(t._trial_id, state.FAIL)
        if (killed or t.user_attrs.get("interrupted")) and t.number not in requeued:
            if t.params:
                study.enqueue_trial(t.params)
            requeued.add(t.number)
    study.set_user_attr("requeued", sorted(requeued))


def trial_records(study: Any) -> list[dict[str, Any]]:
    """Every trial of ``study`` as ``trials.json`` records it (``interrupted`` / ``requeued`` only when set:
    a trial stopped by Ctrl-C, and one already re-queued after an interruption; ``fixed_params`` for a
    WAITING trial: the values it was queued with, e.g. a re-queued interrupted trial's, which it has not
    sampled yet)."""
    requeued = set(study.user_attrs.get("requeued", []))
    waiting = import_optuna().trial.TrialState.WAITING
    return [
        {
            "number": t.number,
            "state": t.state.name,
            "params": t.params,
            "value": t.value,
            "validation_per_epoch": {str(k): v for k, v in sorted(t.intermediate_values.items())},
            "run_dir": t.user_attrs.get("run_dir"),
            "error": t.user_attrs.get("error"),
            "duration_s": t.duration.total_seconds() if t.duration is not None else None,
            **({"interrupted": True} if t.user_attrs.get("interrupted") else {}),
            **({"requeued": True} if t.number in requeued else {}),
            **({"fixed_params": t.system_attrs["fixed_params"]}
               if t.state == waiting and t.system_attrs.get("fixed_params") else {}),
        }
        for t in study.get_trials(deepcopy=False)
    ]


def run_search(spec: StudySpec, study_dir: str | Path, method: str) -> dict[str, Any]:
    """Run (or continue) the search of ``method`` until ``spec.trials`` trials completed or were pruned.

    Writes ``trials.json`` and ``choice.json`` and returns the choice. Only validation metrics are read.
    """
    optuna = import_optuna()
    study_dir = Path(study_dir)
    if method not in spec.methods:
        raise ConfigError(f"study has no method '{method}' (methods: {', '.join(spec.methods)})")
    _check_spec(spec, study_dir, method)
    storage = storage_url(study_dir)
    done_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    study = optuna.create_study(
        study_name=method,
        storage=storage,
        direction="maximize",
        pruner=_pruner(spec, optuna),
        load_if_exists=True,
    )
    # TPE after a restart: a seed offset by the trials so far keeps the random start from repeating points.
    started = len(study.get_trials(deepcopy=False))
    study.sampler = optuna.samplers.TPESampler(
        seed=spec.sampler_seed + started, n_startup_trials=spec.startup_trials
    )
    _requeue_interrupted(study, optuna)
    objective = _objective(spec, method, study_dir / method / "trials", optuna)
    optuna_logger = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is logged once, by _failed
    try:
        for _ in range(3):  # failed trials (a bad config) do not count; retry them, but not forever
            done = len(study.get_trials(deepcopy=False, states=done_states))
            if done >= spec.trials:
                break
            study.optimize(objective, n_trials=spec.trials - done, catch=(CcsamError,))
    finally:
        optuna.logging.set_verbosity(optuna_logger)
        _write_json(study_dir / method / "trials.json", trial_records(study))
    done = len(study.get_trials(deepcopy=False, states=done_states))
    if done < spec.trials:
        _logger.warning(
            "'%s': only %d of %d trials finished after 3 rounds of retrying failed ones (see %s); "
            "run the search again to retry, or fix the space",
            method, done, spec.trials, study_dir / method / "trials.json",
        )
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise CcsamError(f"no trial of '{method}' completed; see {study_dir / method / 'trials.json'}")
    best = max(complete, key=lambda t: (t.value, -t.number))
    choice = {
        "method": method,
        "trial": best.number,
        "params": best.params,
        "validation": best.value,
        "budget": spec.trials,
        "complete": len(complete),
        "pruned": len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))),
        "budget_met": done >= spec.trials,
    }
    _write_json(study_dir / method / "choice.json", choice)
    return choice


def _choice_for_final(spec: StudySpec, study_dir: Path, method: str) -> dict[str, Any]:
    """``method``'s choice.json; refused if missing or stale (another budget, or the budget not met)."""
    if method not in spec.methods:
        raise ConfigError(f"study has no method '{method}' (methods: {', '.join(spec.methods)})")
    choice_path = study_dir / method / "choice.json"
    if not choice_path.is_file():
        raise ConfigError(f"'{method}' has no choice yet ({choice_path}); run the search phase first")
    choice: dict[str, Any] = json.loads(choice_path.read_text())
    budget = choice.get("budget")  # fields an older choice.json lacks are not checked
    if budget is not None and int(budget) != spec.trials:
        raise ConfigError(
            f"'{method}''s choice comes from a search of {budget} trials, but the study file says trials: "
            f"{spec.trials}; run --phase search first"
        )
    if choice.get("complete") is not None and choice.get("pruned") is not None:
        finished = int(choice["complete"]) + int(choice["pruned"])
        if finished < spec.trials:
            raise ConfigError(
                f"the search of '{method}' finished {finished} of {spec.trials} trials (failed ones do not "
                "count); run --phase search first"
            )
    return choice


def check_final_spec(
    spec: StudySpec, study_dir: Path, method: str, params: dict[str, Any], variant: str | None,
    extra_overrides: Sequence[str],
) -> tuple[Path, dict[str, Any]]:
    """The path and record of what the final phase trains; refuse a study folder whose record of it
    differs (a field an older folder lacks is not compared). The caller writes the record."""
    m = spec.methods[method]
    record = {
        "method": method,
        "variant": variant,
        "preset": m.preset,
        "overrides": [*spec.common_overrides, *m.overrides],
        "final_overrides": [*spec.final_overrides, *m.final_overrides],
        "extra_overrides": list(extra_overrides),
        "params": params,
    }
    name = "final_spec.json" if variant is None else f"variants/{variant}.spec.json"
    path = study_dir / method / name
    if path.is_file():
        stored = json.loads(path.read_text())
        if isinstance(stored.get("params"), dict):
            stored["params"] = migrated_params(stored["params"])
        for key in ("overrides", "final_overrides", "extra_overrides"):
            if isinstance(stored.get(key), list):
                stored[key] = [migrate_override(v) if isinstance(v, str) else v for v in stored[key]]
        changed = sorted(
            k for k in record if k in stored and _method_part(stored[k]) != _method_part(record[k])
        )
        if changed:
            folder = study_dir / method / ("final" if variant is None else f"variants/{variant}")
            raise ConfigError(
                f"study folder '{study_dir}' trained the final seeds of '{method}' with other "
                f"{', '.join(changed)}; restore the study file, or move '{folder}' and '{path}' away to "
                "train the new ones"
            )
    return path, record


def final_run_config(
    spec: StudySpec, method: str, params: dict[str, Any], seed: int, extra_overrides: Sequence[str], label: str
) -> RunConfig:
    """The config of one final-phase seed: ``method``'s preset with the study's final overrides, the chosen
    ``params``, ``seed`` and (for an ablation) ``extra_overrides``, named ``<method>-<label>`` for all seeds
    of a method so that ``ccsam report`` puts them in one mean ± std row."""
    cfg = resolve_config(
        spec.methods[method].preset, [*spec.final_overrides_of(method, params, seed), *extra_overrides]
    )
    return cfg.model_copy(update={"name": f"{method}-{label}"})


def run_final(
    spec: StudySpec,
    study_dir: str | Path,
    method: str,
    *,
    variant: str | None = None,
    extra_overrides: Sequence[str] = (),
    stage1_from: str | None = None,
) -> dict[str, Any]:
    """Train ``method``'s chosen config on the full schedule once per seed; evaluate the test split once
    per seed (the only place the study reads it). Finished seeds are kept, interrupted ones resumed.

    With ``variant`` (an ablation of the chosen config) ``extra_overrides`` are applied after the chosen
    values and the runs go to ``<method>/variants/<variant>/`` (summary ``variants/<variant>.json``).
    ``stage1_from`` (``"final"`` or another variant's name) names runs of the same method that declare the
    same stage 1 (an ablation of stage 2 only): a seed whose run there finished its stage 1 trains only
    stage 2 from it (:mod:`ccsam.training.stage1_reuse`; bit-identical to training from scratch), the
    others train from scratch.

    Refused (ConfigError): a choice from another budget or an unfinished search, a final spec (preset,
    overrides, final overrides, chosen values) other than the one recorded, and a seed folder whose config
    differs from the one the phase would train now, so ``final.json`` never mixes configs.
    """
    study_dir = Path(study_dir)
    choice = _choice_for_final(spec, study_dir, method)
    params = migrated_params(choice["params"])
    folder = study_dir / method / ("final" if variant is None else f"variants/{variant}")
    label = "final" if variant is None else variant
    summary_path = study_dir / method / ("final.json" if variant is None else f"variants/{variant}.json")
    record_path, record = check_final_spec(spec, study_dir, method, params, variant, extra_overrides)
    configs = {}
    for seed in spec.seeds:
        configs[seed] = final_run_config(spec, method, params, seed, extra_overrides, label)
        path = folder / f"seed-{seed}"
        if (path / "results.json").is_file() or (path / "checkpoints" / "last.pt").is_file():
            differ = config_differences(RunDir.open(path).load_config(), configs[seed], _SPEED_ONLY_KEYS)
            if differ:
                raise ConfigError(
                    f"seed folder '{path}' was trained with another config than the final phase would train "
                    f"now ({', '.join(differ[:4])}{', ...' if len(differ) > 4 else ''}); restore the study "
                    f"file, or move '{folder}' away"
                )
    _write_json(record_path, record)
    final: dict[str, Any] = {}
    per_seed: dict[str, Any] = {}
    for seed in spec.seeds:
        path = folder / f"seed-{seed}"
        cfg = configs[seed]
        if (path / "results.json").is_file():
            results = RunDir.open(path).read_results()
        elif (path / "checkpoints" / "last.pt").is_file():
            results = train(RunDir.open(path).load_config(), RunDir.open(path), resume=True, progress=False)
        else:
            if path.exists():
                shutil.rmtree(path)  # set up but no epoch finished: start again
            run = RunDir.create(path, cfg, ["ccsam", "tune", method, "final"])
            source = _stage1_source(study_dir / method, stage1_from, seed, cfg)
            if source is not None:
                start_from_stage1(source, run, cfg)
            results = train(cfg, run, resume=source is not None, progress=False)
        per_seed[str(seed)] = {
            "test": _metrics(results["test"]),
            "val": _metrics(results.get("val")),
            "train_time_s": results["train_time_s"],
            "run_dir": str(path),
        }
        # Written after every seed, so a report made while the phase runs shows the seeds finished so far.
        final = {
            "method": method,
            "variant": variant,
            "params": params,
            "seeds": list(spec.seeds),
            "extra_overrides": list(extra_overrides),
            "per_seed": per_seed,
        }
        _write_json(summary_path, final)
    return final


def _stage1_source(method_dir: Path, stage1_from: str | None, seed: int, cfg: RunConfig) -> RunDir | None:
    """The run of ``seed`` under ``stage1_from`` whose finished stage 1 ``cfg`` can start from, if any."""
    if stage1_from is None:
        return None
    runs = method_dir / ("final" if stage1_from == "final" else f"variants/{stage1_from}")
    if not runs.is_dir():
        raise ConfigError(f"stage1_from='{stage1_from}': '{runs}' does not exist; name 'final' or a variant of "
                          f"'{method_dir.name}' that has run")
    path = runs / f"seed-{seed}"
    try:
        source = RunDir.open(path)
        check_stage1_source(source, cfg)
    except RunDirError as exc:  # no finished stage 1 there (e.g. a results-only folder rebuilt from records)
        _logger.warning("seed %d trains its stage 1 too: %s", seed, exc)
        return None
    return source


def _metrics(report: dict[str, Any] | None) -> dict[str, Any] | None:
    if report is None:
        return None
    return {k: report.get(k) for k in ("top1", "many", "medium", "few", "ece", "nll")}


def study_summary(study_dir: str | Path) -> dict[str, Any]:
    """What a study folder holds so far, per method: space, budget, trials, choice and final results."""
    study_dir = Path(study_dir)
    out: dict[str, Any] = {}
    for space_path in sorted(study_dir.glob("*/space.json")):
        folder = space_path.parent
        entry: dict[str, Any] = {"space": _migrated_record(json.loads(space_path.read_text()))}
        for name in ("trials", "choice", "final"):
            path = folder / f"{name}.json"
            entry[name] = json.loads(path.read_text()) if path.is_file() else None
        if entry["choice"] is not None:  # a study of the flat-config version: its values under today's keys
            entry["choice"]["params"] = migrated_params(entry["choice"].get("params", {}))
        variants = sorted(folder.glob("variants/*.json"))
        entry["variants"] = {p.stem: json.loads(p.read_text()) for p in variants}
        out[folder.name] = entry
    return out
