"""A study's JSON records rebuild its study folder on a new machine: a finished search is not run again,
an unfinished one continues with the trials it lacks, finished seeds are kept, and nothing the study
folder already holds is overwritten."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import synthetic_overrides

from ccsam.errors import ConfigError
from ccsam.training import trainer as trainer_module
from ccsam.training.trainer import Trainer
from ccsam.tuning import export_records, load_study_spec, restore_study, run_final, run_search
from ccsam.tuning.study import storage_url, trial_records

optuna = pytest.importorskip("optuna")


def _tree(trials: int) -> dict:
    common = synthetic_overrides(**{"stage1.epochs": 2, "stage2.epochs": 0, "stage1.method": "erm"})
    return {
        "trials": trials, "seeds": [0, 1], "startup_trials": 1, "pruner": "median",
        "pruner_startup_trials": 1, "pruner_warmup_epochs": 0, "common_overrides": common,
        "search_overrides": ["stage1.epochs=2"], "final_overrides": ["stage1.epochs=2"],
        "methods": {"ce": {"preset": "fmnist-lt-ce", "space": {
            "stage1.lr": {"type": "float", "low": 0.01, "high": 0.2, "log": True},
            "stage1.mixup_alpha": {"type": "categorical", "choices": [0.0, 1.0]},
            "stage1.warmup_epochs": {"type": "int", "low": 0, "high": 1},
        }}},
    }


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory) -> tuple[Path, Path]:
    """A study of 3 trials and 2 final seeds, and its records exported to another folder."""
    root = tmp_path_factory.mktemp("records")
    spec = load_study_spec(_tree(trials=3))
    run_search(spec, root / "study", "ce")
    run_final(spec, root / "study", "ce")
    changed = export_records(root / "study", root / "records")
    assert {p.relative_to(root / "records").as_posix() for p in changed} == {
        "spec.json", "ce/space.json", "ce/trials.json", "ce/choice.json", "ce/final_spec.json", "ce/final.json",
    }
    assert export_records(root / "study", root / "records") == []  # unchanged files are not rewritten
    return root / "study", root / "records"


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a restored study trained a model")

    monkeypatch.setattr(Trainer, "__init__", refuse)
    monkeypatch.setattr(trainer_module, "train", refuse)
    monkeypatch.setattr("ccsam.tuning.study.train", refuse)


def test_a_study_rebuilt_from_its_records_trains_nothing_and_reports_the_same(
    finished_study: tuple[Path, Path], tmp_path: Path, no_training
) -> None:
    study, records = finished_study
    spec = load_study_spec(_tree(trials=3))
    counts = restore_study(spec, records, tmp_path / "new")
    assert counts == {"files": 6, "trials": 3, "seeds": 2}
    # The Optuna storage holds the same trials: numbers, states, values, per-epoch scores, durations.
    rebuilt = trial_records(optuna.load_study(study_name="ce", storage=storage_url(tmp_path / "new")))
    recorded = json.loads((study / "ce" / "trials.json").read_text())
    for new, old in zip(rebuilt, recorded, strict=True):
        assert new.pop("duration_s") == pytest.approx(old.pop("duration_s"), abs=1e-6)
        assert new == old
    # The search is finished (no trial trains) and chooses the same; the seeds are kept, not trained.
    assert run_search(spec, tmp_path / "new", "ce") == json.loads((study / "ce" / "choice.json").read_text())
    final = run_final(spec, tmp_path / "new", "ce")
    before = json.loads((study / "ce" / "final.json").read_text())
    kept = ("test", "val", "train_time_s")
    for seed, row in final["per_seed"].items():
        assert {k: row[k] for k in kept} == {k: before["per_seed"][seed][k] for k in kept}
        results = json.loads((Path(row["run_dir"]) / "results.json").read_text())
        assert results["restored_from"] == "ce/final.json"
        env = json.loads((Path(row["run_dir"]) / "env.json").read_text())  # not claimed as the training machine
        assert env["restored_from"] == "ce/final.json" and env["trained_on"] is None
        assert "torch" not in env and env["restored_on"]["torch"] == torch.__version__
    # `ccsam report` reads the restored seeds as one mean ± std row, like the originals.
    from ccsam.reporting.collect import collect_runs

    def grouped(folder: Path) -> dict:
        runs = collect_runs(sorted((folder / "ce" / "final").glob("seed-*")))
        return {label: sorted(r["seed"] for r in rows) for label, rows in runs.groups.items()}

    assert grouped(tmp_path / "new") == grouped(study) == {"ce-final": [0, 1]}


def test_an_unfinished_search_continues_with_the_trials_it_lacks(
    finished_study: tuple[Path, Path], tmp_path: Path, monkeypatch
) -> None:
    _, records = finished_study
    spec = load_study_spec(_tree(trials=5))  # a larger budget: the restored 3 trials count toward it
    restore_study(spec, records, tmp_path / "new")
    trained = {"n": 0}
    real_init = Trainer.__init__

    def counting_init(self, *args, **kwargs):
        trained["n"] += 1
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "__init__", counting_init)
    choice = run_search(spec, tmp_path / "new", "ce")
    assert trained["n"] == 2
    trials = json.loads((tmp_path / "new" / "ce" / "trials.json").read_text())
    assert [t["number"] for t in trials] == [0, 1, 2, 3, 4]
    assert trials[:3] == [
        {**t, "duration_s": pytest.approx(t["duration_s"], abs=1e-6)}
        for t in json.loads((records / "ce" / "trials.json").read_text())
    ]
    assert choice["budget"] == 5 and choice["complete"] + choice["pruned"] == 5


def test_restore_keeps_what_the_study_folder_holds(finished_study: tuple[Path, Path], tmp_path: Path) -> None:
    study, records = finished_study
    spec = load_study_spec(_tree(trials=3))
    target = tmp_path / "study"
    shutil.copytree(study, target)
    (target / "ce" / "final.json").write_text('{"kept": true}\n')
    seed_results = target / "ce" / "final" / "seed-0" / "results.json"
    original_results = seed_results.read_text()
    assert restore_study(spec, records, target) == {"files": 0, "trials": 0, "seeds": 0}
    assert json.loads((target / "ce" / "final.json").read_text()) == {"kept": True}
    assert seed_results.read_text() == original_results


def _damage(records: Path, name: str) -> None:
    trials_path, final_path = records / "ce" / "trials.json", records / "ce" / "final.json"
    trials, final = json.loads(trials_path.read_text()), json.loads(final_path.read_text())
    if name == "not json":
        trials_path.write_text(trials_path.read_text()[:-20])
    elif name == "a gap":
        trials_path.write_text(json.dumps(trials[1:]))
    elif name == "no state":
        del trials[1]["state"]
        trials_path.write_text(json.dumps(trials))
    elif name == "complete without value":
        complete = next(t for t in trials if t["state"] == "COMPLETE")
        complete["value"] = None
        trials_path.write_text(json.dumps(trials))
    elif name == "outside the space":
        trials[0]["params"]["stage1.lr"] = 5.0
        trials_path.write_text(json.dumps(trials))
    elif name == "seed without test":
        del final["per_seed"]["1"]["test"]
        final_path.write_text(json.dumps(final))


@pytest.mark.parametrize(("damage", "message"), [
    ("not json", "trials.json' is not valid JSON"),
    ("a gap", r"numbers its trials \[1, 2\]; they must run 0, 1, 2"),
    ("no state", "trial 1: "),
    ("complete without value", "a complete trial with the value None"),
    ("outside the space", "stage1.lr=5.0 lies outside its space"),
    ("seed without test", "seed '1' lacks its test metrics"),
])
def test_damaged_records_are_one_clear_error_and_nothing_is_written(
    finished_study: tuple[Path, Path], tmp_path: Path, damage: str, message: str
) -> None:
    _, records = finished_study
    broken = tmp_path / "broken"
    shutil.copytree(records, broken)
    _damage(broken, damage)
    with pytest.raises(ConfigError, match=message):
        restore_study(load_study_spec(_tree(trials=3)), broken, tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_restore_refuses_a_missing_folder_and_a_storage_behind_its_records_and_undoes_a_failed_study(
    finished_study: tuple[Path, Path], tmp_path: Path, monkeypatch
) -> None:
    _, records = finished_study
    spec = load_study_spec(_tree(trials=3))
    with pytest.raises(ConfigError, match="does not exist"):
        restore_study(spec, tmp_path / "nowhere", tmp_path / "new")
    # A study that fails while its trials are added leaves nothing behind; the next restore completes it.
    real_add, calls = optuna.Study.add_trial, {"n": 0}

    def failing_add(self, trial):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_add(self, trial)

    monkeypatch.setattr(optuna.Study, "add_trial", failing_add)
    with pytest.raises(KeyboardInterrupt):
        restore_study(spec, records, tmp_path / "new")
    monkeypatch.setattr(optuna.Study, "add_trial", real_add)
    assert restore_study(spec, records, tmp_path / "new")["trials"] == 3
    assert len(optuna.load_study(study_name="ce", storage=storage_url(tmp_path / "new")).trials) == 3
    # A storage that holds fewer trials than the records is refused, not silently kept.
    behind = tmp_path / "behind"
    restore_study(spec, records, behind)
    optuna.delete_study(study_name="ce", storage=storage_url(behind))
    partial = optuna.create_study(study_name="ce", storage=storage_url(behind), direction="maximize")
    partial.add_trial(optuna.load_study(study_name="ce", storage=storage_url(tmp_path / "new")).trials[0])
    with pytest.raises(ConfigError, match="holds 1 trials of 'ce', its records 3"):
        restore_study(spec, records, behind)


def test_records_of_another_search_are_refused(finished_study: tuple[Path, Path], tmp_path: Path) -> None:
    _, records = finished_study
    other = _tree(trials=3)
    other["methods"]["ce"]["space"]["stage1.lr"]["high"] = 0.3
    with pytest.raises(ConfigError, match="hold a search of 'ce' with other space than the study file"):
        restore_study(load_study_spec(other), records, tmp_path / "new")


def _restore_and_search(tmp_path: Path, monkeypatch, *, trials: int) -> list:
    """Restore ``tmp_path/records`` into ``tmp_path/new``, continue its search to ``trials`` trials and
    return the configs it trained."""
    spec = load_study_spec(_tree(trials=trials))
    restore_study(spec, tmp_path / "records", tmp_path / "new")
    trained = []
    real_init = Trainer.__init__

    def recording_init(self, cfg, *args, **kwargs):
        trained.append(cfg)
        real_init(self, cfg, *args, **kwargs)

    monkeypatch.setattr(Trainer, "__init__", recording_init)
    run_search(spec, tmp_path / "new", "ce")
    return trained


def test_a_running_search_is_recorded_and_its_running_trial_re_queued_on_restore(
    finished_study: tuple[Path, Path], tmp_path: Path, monkeypatch
) -> None:
    study, _ = finished_study
    live = tmp_path / "live"
    shutil.copytree(study, live)
    running = optuna.load_study(study_name="ce", storage=storage_url(live)).ask()  # its process was killed
    values = {
        "stage1.lr": running.suggest_float("stage1.lr", 0.01, 0.2, log=True),
        "stage1.mixup_alpha": running.suggest_categorical("stage1.mixup_alpha", [0.0, 1.0]),
        "stage1.warmup_epochs": running.suggest_int("stage1.warmup_epochs", 0, 1),
    }
    export_records(live, tmp_path / "records")
    recorded = json.loads((tmp_path / "records" / "ce" / "trials.json").read_text())
    assert [t["state"] for t in recorded][-1] == "RUNNING" and recorded[-1]["params"] == values

    trained = _restore_and_search(tmp_path, monkeypatch, trials=4)
    assert len(trained) == 1 and trained[0].stage1.lr == values["stage1.lr"]  # the killed trial, re-run
    trials = json.loads((tmp_path / "new" / "ce" / "trials.json").read_text())
    assert [t["state"] for t in trials][3] == "FAIL" and trials[4]["params"] == values


def test_a_queued_trial_keeps_its_values_through_the_records(
    finished_study: tuple[Path, Path], tmp_path: Path, monkeypatch
) -> None:
    """A trial re-queued after an interruption (WAITING, its values not sampled yet) when the machine was
    lost: the records hold its values, and the restored study trains it with them."""
    study, _ = finished_study
    live = tmp_path / "live"
    shutil.copytree(study, live)
    values = {"stage1.lr": 0.0123, "stage1.mixup_alpha": 1.0, "stage1.warmup_epochs": 1}
    optuna.load_study(study_name="ce", storage=storage_url(live)).enqueue_trial(values)
    export_records(live, tmp_path / "records")
    recorded = json.loads((tmp_path / "records" / "ce" / "trials.json").read_text())[-1]
    assert (recorded["state"], recorded["params"], recorded["fixed_params"]) == ("WAITING", {}, values)

    trained = _restore_and_search(tmp_path, monkeypatch, trials=4)
    assert len(trained) == 1
    assert (trained[0].stage1.lr, trained[0].stage1.mixup_alpha, trained[0].stage1.warmup_epochs) == (0.0123, 1.0, 1)
    trials = json.loads((tmp_path / "new" / "ce" / "trials.json").read_text())
    assert trials[3]["state"] in ("COMPLETE", "PRUNED") and trials[3]["params"] == values


def test_restore_refuses_seeds_that_the_changed_study_file_would_train_otherwise(
    finished_study: tuple[Path, Path], tmp_path: Path
) -> None:
    _, records = finished_study
    changed = _tree(trials=3)
    changed["final_overrides"] = ["stage1.epochs=3"]  # not what the recorded seeds trained
    with pytest.raises(ConfigError, match="trained the final seeds of 'ce' with other final_overrides"):
        restore_study(load_study_spec(changed), records, tmp_path / "new")
    assert not (tmp_path / "new" / "ce" / "final").exists()


def test_a_stage2_ablation_trains_only_stage2_on_the_final_runs_stage1_and_equals_training_it_whole(
    finished_study: tuple[Path, Path], tmp_path: Path, trained_stages: list[int]
) -> None:
    study, _ = finished_study
    target = tmp_path / "study"
    shutil.copytree(study, target)
    spec = load_study_spec(_tree(trials=3))
    crt = ["stage2.epochs=1", "stage2.method={name: retrain, reinit_head: true}", "stage2.sampler=class_balanced"]
    stages = trained_stages
    whole = run_final(spec, target, "ce", variant="crt-whole", extra_overrides=crt)
    assert stages == [1, 1, 2] * 2
    stages.clear()
    shared = run_final(spec, target, "ce", variant="crt-shared", extra_overrides=crt, stage1_from="final")
    assert stages == [2, 2]  # the final seeds' stage 1 (2 epochs each) is not trained again
    for seed in ("0", "1"):
        assert shared["per_seed"][seed]["test"] == whole["per_seed"][seed]["test"]
        assert (Path(shared["per_seed"][seed]["run_dir"]) / "stage1_from.json").is_file()


def test_trials_under_old_keys_restore_against_a_space_rewritten_under_new_ones(tmp_path: Path) -> None:
    # A study of the flat-config version, continued since: space.json under today's key, the trials (and
    # Optuna's parameter names) under the old one.
    from ccsam.tuning.records import _frozen_trials

    space = {"stage1.optimizer.rho": {"type": "float", "low": 0.02, "high": 1.0, "log": True}}
    record = {"number": 0, "state": "COMPLETE", "params": {"stage1.rho": 0.1}, "value": 0.5,
              "validation_per_epoch": {"0": 0.5}, "duration_s": 2.0}
    (trial,) = _frozen_trials(tmp_path / "trials.json", space, [record])
    assert trial.params == {"stage1.rho": 0.1} and trial.duration.total_seconds() == 2.0
    with pytest.raises(ConfigError, match=r"stage1.rho=2.0 lies outside its space"):
        _frozen_trials(tmp_path / "trials.json", space, [{**record, "params": {"stage1.rho": 2.0}}])


def test_export_never_drops_recorded_trials_or_seeds(finished_study: tuple[Path, Path], tmp_path: Path) -> None:
    study, records = finished_study
    kept = tmp_path / "records"
    shutil.copytree(records, kept)
    smaller = tmp_path / "quick"  # e.g. a quick check with one seed, exported to the same records by mistake
    restore_study(load_study_spec(_tree(trials=3)), records, smaller)
    (smaller / "ce" / "final.json").write_text(json.dumps({
        **json.loads((smaller / "ce" / "final.json").read_text()),
        "per_seed": {"0": json.loads((smaller / "ce" / "final.json").read_text())["per_seed"]["0"]},
    }))
    before = (kept / "ce" / "final.json").read_text()
    with pytest.raises(ConfigError, match=r"holds fewer trials or seeds .* \(missing seed 1\)"):
        export_records(smaller, kept)
    assert (kept / "ce" / "final.json").read_text() == before
