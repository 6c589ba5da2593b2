"""A study's JSON records, kept apart from its study folder so that a study survives the loss of the
machine it ran on.

A study folder holds Optuna's SQLite storage and one run folder (weights, logs) per trial and seed: too
large to commit, and lost with the machine. Its JSON records are small and hold everything the study's
results and its continuation need::

    RECORDS/
      spec.json                          the study as declared
      <method>/space.json                search space, fixed overrides, budget
      <method>/trials.json               every trial: number, state, values, per-epoch validation score
      <method>/choice.json               the chosen trial
      <method>/final_spec.json           what the final phase trains
      <method>/final.json                per-seed test (and validation) metrics
      <method>/variants/<name>.json      the same for an ablation of the chosen config (+ .spec.json)

:func:`export_records` copies them out of a study folder; :func:`restore_study` rebuilds a study folder
from them on a new machine: the Optuna storage from ``trials.json`` (same trial numbers, states, values,
per-epoch scores and durations, so a finished search is not run again and an unfinished one continues
where it stopped), and one *results-only* run folder per recorded seed (``config.yaml`` as the final phase
resolves it, ``results.json`` with the recorded metrics and ``restored_from``), so the final phase keeps
finished seeds instead of training them again. Nothing already in the study folder is overwritten.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ccsam.atomic_io import atomic_write_text
from ccsam.config.migration import migrate_override
from ccsam.errors import ConfigError
from ccsam.training.run_dir import RunDir
from ccsam.tuning.space import StudySpec
from ccsam.tuning.study import (
    _check_final_spec,
    _migrated_params,
    _optuna,
    _storage_url,
    _trial_records,
    final_run_config,
)

__all__ = ["export_records", "restore_study"]

_METHOD_FILES = ("space.json", "trials.json", "choice.json", "final_spec.json", "final.json")
# Start time given to a restored trial (its recorded duration is kept, its wall-clock start is not).
_RESTORED_START = datetime(2000, 1, 1, tzinfo=timezone.utc)


def _record_paths(folder: Path) -> list[Path]:
    """The record files under a study or records folder, relative to it."""
    paths = [Path("spec.json")] if (folder / "spec.json").is_file() else []
    for space in sorted(folder.glob("*/space.json")):
        method = space.parent
        paths += [Path(method.name) / n for n in _METHOD_FILES if (method / n).is_file()]
        paths += [p.relative_to(folder) for p in sorted(method.glob("variants/*.json"))]
    return paths


def _live_trials(study_dir: Path) -> dict[Path, str]:
    """``<method>/trials.json`` as the Optuna storage holds it now (a search writes its file only when it
    stops, so a search still running is recorded up to its last finished trial, the running one as
    RUNNING: restored, it is re-queued with its values)."""
    if not (study_dir / "study.db").is_file():
        return {}
    optuna = _optuna()
    storage = _storage_url(study_dir)
    out = {}
    for summary in optuna.get_all_study_summaries(storage=storage):
        if (study_dir / summary.study_name / "space.json").is_file():
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            out[Path(summary.study_name) / "trials.json"] = json.dumps(_trial_records(study), indent=2) + "\n"
    return out


def export_records(study_dir: str | Path, records_dir: str | Path) -> list[Path]:
    """Copy the JSON records of ``study_dir`` into ``records_dir``; returns the files that changed.

    ``trials.json`` is written from the Optuna storage, so a search that is still running is recorded too.
    Files of the same name are replaced (the study folder is the newer record); other files in
    ``records_dir`` (a README, a report) are left alone.
    """
    study_dir, records_dir = Path(study_dir), Path(records_dir)
    live = _live_trials(study_dir)
    changed = []
    for rel in sorted({*_record_paths(study_dir), *live}):
        text = live[rel] if rel in live else (study_dir / rel).read_text()
        target = records_dir / rel
        if target.is_file() and target.read_text() == text:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, text)
        changed.append(target)
    return changed


def _distribution(param: dict[str, Any], optuna: Any) -> Any:
    """The Optuna distribution of one recorded ``space.json`` entry (what ``_suggest`` asked for)."""
    if param["type"] == "categorical":
        return optuna.distributions.CategoricalDistribution(list(param["choices"]))
    if param["type"] == "int":
        return optuna.distributions.IntDistribution(
            int(param["low"]), int(param["high"]), log=bool(param.get("log")), step=int(param.get("step") or 1)
        )
    return optuna.distributions.FloatDistribution(
        float(param["low"]), float(param["high"]), log=bool(param.get("log")), step=param.get("step")
    )


def _restore_trials(study_dir: Path, method: str, space: dict[str, Any], trials: list[dict[str, Any]]) -> int:
    """Re-create ``method``'s Optuna study from its trial records; 0 if the storage already has one."""
    optuna = _optuna()
    storage = _storage_url(study_dir)
    if method in {s.study_name for s in optuna.get_all_study_summaries(storage=storage)}:
        return 0
    distributions = {key: _distribution(p, optuna) for key, p in space.items()}
    study = optuna.create_study(study_name=method, storage=storage, direction="maximize")
    state = optuna.trial.TrialState
    for expected, record in enumerate(sorted(trials, key=lambda r: r["number"])):
        if record["number"] != expected:
            raise ConfigError(
                f"'{method}/trials.json' skips trial {expected} (numbers must run 0, 1, 2, ...); restore the "
                "file from the study that wrote it"
            )
        params = record.get("params") or {}
        unknown = sorted(set(params) - set(distributions))
        if unknown:
            raise ConfigError(f"'{method}/trials.json' trial {expected} has values for {', '.join(unknown)}, "
                              "which its space.json does not declare; restore both from the same study")
        attrs = {k: record[k] for k in ("run_dir", "error") if record.get(k) is not None}
        duration = record.get("duration_s")
        finished = record["state"] != "RUNNING"
        study.add_trial(
            optuna.trial.FrozenTrial(
                number=expected,
                state=state[record["state"]],
                value=record.get("value"),
                datetime_start=_RESTORED_START,
                datetime_complete=(
                    _RESTORED_START + timedelta(seconds=float(duration)) if finished and duration is not None
                    else None
                ),
                params=params,
                distributions={k: distributions[k] for k in params},
                user_attrs=attrs,
                system_attrs={},
                intermediate_values={int(k): v for k, v in (record.get("validation_per_epoch") or {}).items()},
                trial_id=expected,
            )
        )
    return len(trials)


def _restore_seed_folders(
    spec: StudySpec, study_dir: Path, records_dir: Path, method: str, summary_rel: Path,
    variant_overrides: Mapping[str, Sequence[str]],
) -> int:
    """Results-only run folders for the seeds a final-phase summary records and the study folder lacks."""
    summary = json.loads((records_dir / summary_rel).read_text())
    variant = summary.get("variant")
    if variant in variant_overrides:
        extra = list(variant_overrides[variant])
    else:  # as recorded (keys of the flat-config version under today's names)
        extra = [migrate_override(o) for o in summary.get("extra_overrides") or []]
    label = "final" if variant is None else variant
    folder = study_dir / method / ("final" if variant is None else f"variants/{variant}")
    params = _migrated_params(summary.get("params") or {})
    # The study file must still declare what the recorded seeds trained (final_spec.json, when recorded):
    # a seed folder resolved from a changed study file would pass off old results as the new config's.
    _check_final_spec(spec, study_dir, method, params, variant, extra)
    restored = 0
    for seed_key, entry in sorted((summary.get("per_seed") or {}).items()):
        path = folder / f"seed-{seed_key}"
        if (path / "results.json").is_file() or (path / "checkpoints" / "last.pt").is_file():
            continue  # the study folder has it (finished, or resumable)
        cfg = final_run_config(spec, method, params, int(seed_key), extra, label)
        run = RunDir.create(path, cfg, ["ccsam", "tune", "restore", str(records_dir / summary_rel)],
                            overwrite=True)
        run.write_results({
            "test": entry["test"],
            "val": entry.get("val"),
            "train_time_s": entry["train_time_s"],
            "restored_from": str(summary_rel),
        })
        restored += 1
    return restored


def restore_study(
    spec: StudySpec,
    records_dir: str | Path,
    study_dir: str | Path,
    *,
    variant_overrides: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, int]:
    """Rebuild what ``study_dir`` lacks from the records in ``records_dir``; returns counts of what was
    restored (``files``, ``trials``, ``seeds``).

    Record files are copied where the study folder has none; each method's Optuna study is re-created
    from ``trials.json`` where the storage has none; each recorded seed gets a results-only run folder
    where the study folder has no finished or resumable one. ``spec`` (the study file) resolves the seeds'
    configs, as :func:`ccsam.tuning.run_final` would; ``variant_overrides`` gives an ablation's overrides
    as the caller passes them to ``run_final`` (default: as its summary recorded them).
    """
    records_dir, study_dir = Path(records_dir), Path(study_dir)
    if not records_dir.is_dir():
        raise ConfigError(f"records folder '{records_dir}' does not exist; pass the folder export_records wrote")
    counts = {"files": 0, "trials": 0, "seeds": 0}
    for rel in _record_paths(records_dir):
        target = study_dir / rel
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(target, (records_dir / rel).read_text())
            counts["files"] += 1
    for space_path in sorted(records_dir.glob("*/space.json")):
        method = space_path.parent.name
        trials_path = space_path.parent / "trials.json"
        if trials_path.is_file():
            space = json.loads(space_path.read_text()).get("space", {})
            counts["trials"] += _restore_trials(study_dir, method, space, json.loads(trials_path.read_text()))
        if method not in spec.methods:
            continue  # its records are kept; its seeds' configs cannot be resolved without the study file
        summaries = [Path(method) / "final.json"] if (space_path.parent / "final.json").is_file() else []
        summaries += [
            p.relative_to(records_dir) for p in sorted(space_path.parent.glob("variants/*.json"))
            if not p.name.endswith(".spec.json")
        ]
        for rel in summaries:
            counts["seeds"] += _restore_seed_folders(
                spec, study_dir, records_dir, method, rel, variant_overrides or {}
            )
    return counts
