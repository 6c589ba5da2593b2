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
resolves it, ``results.json`` with the recorded metrics and ``restored_from``, and an ``env.json`` that names
the restoring machine as such, not as the one that trained the run), so the final phase keeps
finished seeds instead of training them again. Nothing already in the study folder is overwritten.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ccsam import strict_json
from ccsam.atomic_io import atomic_write_text
from ccsam.config.migration import migrate_key, migrate_override
from ccsam.config.schema import RunConfig
from ccsam.errors import ConfigError
from ccsam.training.environment import environment
from ccsam.training.run_dir import RunDir
from ccsam.tuning.space import StudySpec
from ccsam.tuning.study import (
    check_final_spec,
    final_run_config,
    import_optuna,
    migrated_params,
    space_changes,
    space_record,
    storage_url,
    stored_trial_count,
    trial_records,
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
    optuna = import_optuna()
    storage = storage_url(study_dir)
    out = {}
    for summary in optuna.get_all_study_summaries(storage=storage):
        if (study_dir / summary.study_name / "space.json").is_file():
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            out[Path(summary.study_name) / "trials.json"] = json.dumps(trial_records(study), indent=2) + "\n"
    return out


def export_records(study_dir: str | Path, records_dir: str | Path) -> list[Path]:
    """Copy the JSON records of ``study_dir`` into ``records_dir``; returns the files that changed.

    ``trials.json`` is written from the Optuna storage, so a search that is still running is recorded too.
    Files of the same name are replaced (the study folder is the newer record), except by one that holds
    fewer trials or seeds (a study folder that is not the one the records came from: ConfigError, nothing
    lost); other files in ``records_dir`` (a README, a report) are left alone.
    """
    study_dir, records_dir = Path(study_dir), Path(records_dir)
    live = _live_trials(study_dir)
    updates = []
    for rel in sorted({*_record_paths(study_dir), *live}):  # every file checked before any is written
        text = live[rel] if rel in live else (study_dir / rel).read_text()
        target = records_dir / rel
        old = target.read_text() if target.is_file() else None
        if old == text:
            continue
        lost = _entries(old) - _entries(text) if old is not None else set()
        if lost:
            raise ConfigError(
                f"'{study_dir / rel}' holds fewer trials or seeds than '{target}' (missing {_shown(lost)}); "
                "the records would lose them: export to another records folder, or restore the study "
                "folder from these records first"
            )
        updates.append((target, text))
    for target, text in updates:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, text)
    return [target for target, _ in updates]


def _entries(text: str) -> set[str]:
    """What a record holds that a newer one must keep: trial numbers (``trials.json``) or seeds (a
    final-phase summary); empty for other files and for text that is not JSON."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return set()
    if isinstance(data, list):
        return {f"trial {t.get('number')}" for t in data if isinstance(t, dict)}
    if isinstance(data, dict) and isinstance(data.get("per_seed"), dict):
        return {f"seed {s}" for s in data["per_seed"]}
    return set()


def _shown(entries: set[str]) -> str:
    ordered = sorted(entries, key=lambda e: (e.split()[0], int(e.split()[1]) if e.split()[1].isdigit() else 0))
    return ", ".join(ordered[:6]) + (", ..." if len(ordered) > 6 else "")


def _read(records_dir: Path, rel: Path) -> Any:
    """A record file's JSON; one ConfigError naming it if it is not JSON."""
    try:
        return json.loads((records_dir / rel).read_text(errors="replace"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"record '{records_dir / rel}' is not valid JSON ({exc.msg}, line {exc.lineno}); "
                          "restore it from the study that wrote it (e.g. git checkout)") from None


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


def _frozen_trials(where: Path, space: Any, trials: Any) -> list[Any]:
    """Optuna trials from the records of one method, every record checked first; ConfigError naming the
    file and the trial otherwise."""
    optuna = import_optuna()
    fix = "restore the file from the study that wrote it (e.g. git checkout)"
    try:  # keyed by today's names: a space.json rewritten under them still holds the old trials' keys
        distributions = {migrate_key(key): _distribution(p, optuna) for key, p in dict(space).items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"'{where.parent / 'space.json'}' holds an unreadable space ({exc!r}); {fix}") from None
    if not isinstance(trials, list) or not all(isinstance(t, dict) for t in trials):
        raise ConfigError(f"'{where}' is not a list of trial records; {fix}")
    numbers = [t.get("number") for t in trials]
    if numbers != list(range(len(trials))):
        raise ConfigError(f"'{where}' numbers its trials {numbers[:8]}{'...' if len(numbers) > 8 else ''}; "
                          f"they must run 0, 1, 2, ... in order; {fix}")
    states = optuna.trial.TrialState
    out = []
    for record in trials:
        n = record["number"]
        try:
            state = states[record.get("state")]
            params = dict(record.get("params") or {})
            fixed = dict(record.get("fixed_params") or {}) if state == states.WAITING else {}
            unknown = sorted(k for k in {**params, **fixed} if migrate_key(k) not in distributions)
            if unknown:
                raise ValueError(f"values for {', '.join(unknown)}, which space.json does not declare")
            param_distributions = {k: distributions[migrate_key(k)] for k in params}
            for key, value in {**params, **fixed}.items():
                distribution = distributions[migrate_key(key)]
                if not distribution._contains(distribution.to_internal_repr(value)):
                    raise ValueError(f"{key}={value!r} lies outside its space")
            value = record.get("value")
            if state == states.COMPLETE and not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"a complete trial with the value {value!r}")
            duration = float(record.get("duration_s") or 0.0)
            attrs = {k: record[k] for k in ("run_dir", "error", "interrupted") if record.get(k) is not None}
            out.append(optuna.trial.FrozenTrial(
                number=n,
                state=state,
                value=value if state in (states.COMPLETE, states.PRUNED) else None,
                datetime_start=None if state == states.WAITING else _RESTORED_START,
                datetime_complete=None if state in (states.RUNNING, states.WAITING)
                else _RESTORED_START + timedelta(seconds=duration),
                params=params,
                distributions=param_distributions,
                user_attrs=attrs,
                system_attrs={"fixed_params": {migrate_key(k): v for k, v in fixed.items()}} if fixed else {},
                intermediate_values={int(k): float(v) for k, v in (record.get("validation_per_epoch") or {}).items()},
                trial_id=n,
            ))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"'{where}' trial {n}: {exc}; {fix}") from None
    return out


def _stored_trial_count(study_dir: Path, method: str) -> int | None:
    """Trials of ``method`` in the study folder's Optuna storage; ``None`` without a storage or study."""
    if not (study_dir / "study.db").is_file():
        return None
    optuna = import_optuna()
    try:
        return len(optuna.load_study(study_name=method, storage=storage_url(study_dir)).get_trials(deepcopy=False))
    except KeyError:
        return None


def _add_study(study_dir: Path, method: str, trials: list[Any], requeued: list[int]) -> None:
    """Create ``method``'s Optuna study holding ``trials``; nothing is left of it if that fails."""
    optuna = import_optuna()
    storage = storage_url(study_dir)
    study = optuna.create_study(study_name=method, storage=storage, direction="maximize")
    try:
        for trial in trials:
            study.add_trial(trial)
        if requeued:
            study.set_user_attr("requeued", requeued)
    except BaseException:
        optuna.delete_study(study_name=method, storage=storage)
        raise


def _seed_entry(where: Path, seed: str, entry: Any) -> dict[str, Any]:
    if not (seed.isdigit() and isinstance(entry, dict) and isinstance(entry.get("test"), dict)
            and isinstance(entry.get("train_time_s"), (int, float))):
        raise ConfigError(f"'{where}' seed '{seed}' lacks its test metrics or training time; restore the file "
                          "from the study that wrote it (e.g. git checkout)")
    return entry


def _planned_seeds(
    spec: StudySpec, study_dir: Path, records_dir: Path, method: str, summary_rel: Path,
    variant_overrides: Mapping[str, Sequence[str]],
) -> list[tuple[Path, RunConfig, dict[str, Any]]]:
    """The seed folders a final-phase summary records and the study folder lacks, with their configs and
    results; checked against the study file (nothing written)."""
    summary = _read(records_dir, summary_rel)
    if not isinstance(summary, dict):
        raise ConfigError(f"'{records_dir / summary_rel}' is not a final-phase summary; restore it from the study "
                          "that wrote it")
    variant = summary.get("variant")
    if isinstance(variant, str) and variant in variant_overrides:
        extra = list(variant_overrides[variant])
    else:  # as recorded (keys of the flat-config version under today's names)
        extra = [migrate_override(o) for o in summary.get("extra_overrides") or []]
    label = "final" if variant is None else variant
    folder = study_dir / method / ("final" if variant is None else f"variants/{variant}")
    params = migrated_params(summary.get("params") or {})
    # The study file must still declare what the recorded seeds trained (final_spec.json, when recorded):
    # a seed folder resolved from a changed study file would pass off old results as the new config's.
    check_final_spec(spec, records_dir, method, params, variant, extra)
    planned = []
    for seed, entry in sorted((summary.get("per_seed") or {}).items()):
        entry = _seed_entry(records_dir / summary_rel, seed, entry)
        path = folder / f"seed-{seed}"
        if (path / "results.json").is_file() or (path / "checkpoints" / "last.pt").is_file():
            continue  # the study folder has it (finished, or resumable)
        cfg = final_run_config(spec, method, params, int(seed), extra, label)
        results = {
            "name": cfg.name, "seed": cfg.seed, "epochs": cfg.total_epochs,  # what `ccsam report` groups by
            "test": entry["test"], "val": entry.get("val"), "train_time_s": entry["train_time_s"],
            "restored_from": summary_rel.as_posix(),
        }
        planned.append((path, cfg, results))
    return planned


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
    from ``trials.json`` where the storage has none (with its interrupted and re-queued marks, so a trial
    that was running or interrupted is re-run once with its values); each recorded seed gets a
    results-only run folder where the study folder has no finished or resumable one. ``spec`` (the study
    file) resolves the seeds' configs, as :func:`ccsam.tuning.run_final` would; ``variant_overrides``
    gives an ablation's overrides as the caller passes them to ``run_final`` (default: as its summary
    recorded them).

    Everything is checked before anything is written: unreadable or inconsistent records, records of a
    search or final phase other than the study file declares, and a storage that holds fewer trials of a
    method than its records (a restore that stopped part-way, or another study) are one ConfigError each.
    """
    records_dir, study_dir = Path(records_dir), Path(study_dir)
    if not records_dir.is_dir():
        raise ConfigError(f"records folder '{records_dir}' does not exist; pass the folder export_records wrote")
    studies: list[tuple[str, list[Any], list[int]]] = []
    seeds: list[tuple[Path, RunConfig, dict[str, Any]]] = []
    for space_path in sorted(records_dir.glob("*/space.json")):
        method, folder = space_path.parent.name, space_path.parent
        stored_space = _read(records_dir, Path(method) / "space.json")
        if not isinstance(stored_space, dict):
            raise ConfigError(f"'{space_path}' is not a search record; restore it from the study that wrote it")
        trials = _read(records_dir, Path(method) / "trials.json") if (folder / "trials.json").is_file() else []
        frozen = _frozen_trials(folder / "trials.json", stored_space.get("space", {}), trials)
        finished = sum(t.state.is_finished() and t.state.name != "FAIL" for t in frozen)
        if method in spec.methods and finished:
            changed = space_changes(stored_space, space_record(spec, method))
            if changed:
                raise ConfigError(
                    f"records '{records_dir}' hold a search of '{method}' with other {', '.join(changed)} than "
                    "the study file; restore the study file that wrote them, or use another records folder"
                )
        stored = stored_trial_count(study_dir, method)
        if stored is not None and stored < len(frozen):
            raise ConfigError(
                f"'{study_dir / 'study.db'}' holds {stored} trials of '{method}', its records {len(frozen)}: the "
                "storage is behind its records (a restore that stopped part-way, or another study); move "
                "study.db away and run again to rebuild it from the records"
            )
        if stored is None and frozen:
            studies.append((method, frozen, [t["number"] for t in trials if t.get("requeued")]))
        if method not in spec.methods:
            continue  # its records are kept; its seeds' configs cannot be resolved without the study file
        summaries = [Path(method) / "final.json"] if (folder / "final.json").is_file() else []
        summaries += [
            p.relative_to(records_dir) for p in sorted(folder.glob("variants/*.json"))
            if not p.name.endswith(".spec.json")
        ]
        for rel in summaries:
            seeds += _planned_seeds(spec, study_dir, records_dir, method, rel, variant_overrides or {})

    counts = {"files": 0, "trials": 0, "seeds": 0}
    for rel in _record_paths(records_dir):
        target = study_dir / rel
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(target, (records_dir / rel).read_text())
            counts["files"] += 1
    for method, frozen, requeued in studies:
        _add_study(study_dir, method, frozen, requeued)
        counts["trials"] += len(frozen)
    for path, cfg, results in seeds:
        run = RunDir.create(path, cfg, ["ccsam", "tune", "restore", str(records_dir)], overwrite=True)
        # The records keep each seed's config and metrics, not the machine that trained it: env.json says
        # so instead of presenting the restoring machine as the one the run ran on.
        restored_env = {
            "restored_from": results.get("restored_from"),
            "trained_on": None,
            "note": "rebuilt from the study records on the machine below, which did not train this run; the "
            "records do not keep the training machine's environment (the study report states it)",
            "restored_on": environment(),
        }
        atomic_write_text(run.path / "env.json", strict_json.dumps(restored_env, indent=2) + "\n")
        run.write_results(results)
        counts["seeds"] += 1
    return counts
