"""What `ccsam tune` refuses (one ConfigError line naming the problem and the fix) and what it records:
the final phase's spec and seed configs, resumed searches with other pruner / sampler / runtime settings,
stale choices, failed trials, study files with a bad space, seeds or no validation split."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from conftest import synthetic_overrides

from ccsam.errors import ConfigError, DivergenceError
from ccsam.training.trainer import Trainer
from ccsam.tuning import load_study_spec, run_final, run_search

optuna = pytest.importorskip("optuna")


def _tree(trials: int = 1, seeds: tuple[int, ...] = (0,), **top: object) -> dict:
    """A study of one method, one-epoch trials and one-epoch final runs on the synthetic data set."""
    common = synthetic_overrides(**{"stage1.epochs": 1, "stage2.epochs": 0, "stage1.method": "erm"})
    tree = {
        "trials": trials, "seeds": list(seeds), "startup_trials": 1, "pruner": "median",
        "pruner_startup_trials": 1, "pruner_warmup_epochs": 1, "common_overrides": common,
        "search_overrides": ["stage1.epochs=1", "stage1.milestones=[1]"],
        "final_overrides": ["stage1.epochs=1", "stage1.milestones=[1]"],
        "methods": {"ce": {"preset": "fmnist-lt-ce", "space": {
            "stage1.lr": {"type": "float", "low": 0.01, "high": 0.2, "log": True},
        }}},
    }
    tree.update(top)
    return tree


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    """A study folder whose one-trial search of 'ce' finished (copied per test by ``study``)."""
    study_dir = tmp_path_factory.mktemp("searched") / "study"
    run_search(load_study_spec(_tree()), study_dir, "ce")
    return study_dir


@pytest.fixture
def study(searched: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(searched, tmp_path / "study"))


def test_final_refuses_a_changed_final_spec_and_seed_folders_of_another_config(study: Path) -> None:
    spec = load_study_spec(_tree())
    final = run_final(spec, study, "ce")
    results = json.loads((study / "ce" / "final" / "seed-0" / "results.json").read_text())
    assert results["name"] == "ce-final" and results["seed"] == 0  # the seed is not in the name
    record = json.loads((study / "ce" / "final_spec.json").read_text())
    assert record["final_overrides"] == list(spec.final_overrides) and record["preset"] == "fmnist-lt-ce"

    changed = _tree(seeds=(0, 1))
    changed["final_overrides"] = ["stage1.epochs=1", "stage1.milestones=[1]", "stage1.weight_decay=0.001"]
    with pytest.raises(ConfigError, match="with other final_overrides; restore the study file"):
        run_final(load_study_spec(changed), study, "ce")
    other_preset = _tree()
    other_preset["methods"]["ce"]["preset"] = "fmnist-lt-balanced-softmax"
    with pytest.raises(ConfigError, match="with other preset"):
        run_final(load_study_spec(other_preset), study, "ce")

    # A folder without the record (an older study): the seed folder's own config is compared.
    (study / "ce" / "final_spec.json").unlink()
    with pytest.raises(ConfigError, match=r"seed folder .*seed-0' was trained with another config .*weight_decay"):
        run_final(load_study_spec(changed), study, "ce")
    assert not (study / "ce" / "final" / "seed-1").exists()  # refused before anything trained
    assert json.loads((study / "ce" / "final.json").read_text()) == final

    # The unchanged spec (speed-only overrides aside) resumes without training anything.
    same = _tree()
    same["common_overrides"] = [*same["common_overrides"], "runtime.threads=1"]
    assert run_final(load_study_spec(same), study, "ce") == final


def test_search_resume_refuses_other_pruner_sampler_and_runtime_settings(study: Path) -> None:
    choice = json.loads((study / "ce" / "choice.json").read_text())
    for change, field in (
        ({"pruner_warmup_epochs": 7}, "pruner_warmup_epochs"),
        ({"pruner_startup_trials": 9}, "pruner_startup_trials"),
        ({"startup_trials": 9}, "startup_trials"),
    ):
        with pytest.raises(ConfigError, match=f"searched 'ce' with other {field}; use a new --study-dir"):
            run_search(load_study_spec(_tree(**change)), study, "ce")
    for override in ("runtime.precision=bf16", "runtime.on_nonfinite=skip"):
        tree = _tree()
        tree["common_overrides"] = [*tree["common_overrides"], override]
        with pytest.raises(ConfigError, match="with other overrides"):
            run_search(load_study_spec(tree), study, "ce")
    speed = _tree()
    speed["common_overrides"] = [*speed["common_overrides"], "runtime.threads=1", "runtime.channels_last=false"]
    assert run_search(load_study_spec(speed), study, "ce") == choice
    # A record written before these fields were recorded: accepted, and completed with them.
    record = json.loads((study / "ce" / "space.json").read_text())
    for field in ("startup_trials", "pruner_startup_trials", "pruner_warmup_epochs"):
        del record[field]
    (study / "ce" / "space.json").write_text(json.dumps(record))
    assert run_search(load_study_spec(_tree(pruner_warmup_epochs=7)), study, "ce") == choice
    assert json.loads((study / "ce" / "space.json").read_text())["pruner_warmup_epochs"] == 7


def test_final_refuses_a_stale_choice_and_an_unknown_method(study: Path) -> None:
    with pytest.raises(ConfigError, match="search of 1 trials, but the study file says trials: 2; run --phase search"):
        run_final(load_study_spec(_tree(trials=2)), study, "ce")
    choice_path = study / "ce" / "choice.json"
    choice = json.loads(choice_path.read_text())
    choice_path.write_text(json.dumps({**choice, "complete": 0, "pruned": 0}))
    with pytest.raises(ConfigError, match="finished 0 of 1 trials .*run --phase search first"):
        run_final(load_study_spec(_tree()), study, "ce")
    with pytest.raises(ConfigError, match="study has no method 'nope' \\(methods: ce\\)"):
        run_final(load_study_spec(_tree()), study, "nope")
    assert not (study / "ce" / "final").exists()


def test_failed_trials_log_one_line_record_the_error_and_an_unmet_budget(
    tmp_path: Path, monkeypatch, caplog, capfd
) -> None:
    real_fit = Trainer.fit

    def fit(self, *args, **kwargs):
        if not self.cfg.name.endswith("trial0000"):  # every trial but the first diverges
            raise DivergenceError("loss became nan at epoch 0")
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", fit)
    spec = load_study_spec(_tree(trials=2))
    with caplog.at_level(logging.WARNING, logger="ccsam.tuning.study"):
        choice = run_search(spec, tmp_path, "ce")
    assert choice["budget_met"] is False and choice["complete"] == 1 and choice["budget"] == 2
    trials = json.loads((tmp_path / "ce" / "trials.json").read_text())
    failed = [t for t in trials if t["state"] == "FAIL"]
    assert len(failed) == 3 and all(t["error"] == "loss became nan at epoch 0" for t in failed)
    messages = [r.getMessage() for r in caplog.records if r.name == "ccsam.tuning.study"]
    assert sum("failed (not counted): loss became nan" in m for m in messages) == 3
    assert any("only 1 of 2 trials finished" in m for m in messages)
    err = capfd.readouterr().err
    assert "failed with" not in err  # not Optuna's "Trial N failed with parameters ..." line + traceback
    with pytest.raises(ConfigError, match="finished 1 of 2 trials"):
        run_final(spec, tmp_path, "ce")


def test_a_record_no_trial_finished_under_does_not_bind_the_corrected_study_file(tmp_path: Path) -> None:
    (tmp_path / "ce").mkdir()
    (tmp_path / "ce" / "space.json").write_text(json.dumps({"method": "ce", "preset": "fmnist-lt-sam"}))
    failed = optuna.create_study(study_name="ce", storage=f"sqlite:///{(tmp_path / 'study.db').resolve()}")
    int_lr = {"stage1.lr": optuna.distributions.IntDistribution(1, 3)}  # Optuna refuses a float lr after it
    failed.tell(failed.ask(int_lr), state=optuna.trial.TrialState.FAIL)
    choice = run_search(load_study_spec(_tree()), tmp_path, "ce")
    assert choice["trial"] == 0 and choice["budget_met"] is True  # the failed search was forgotten
    assert json.loads((tmp_path / "ce" / "space.json").read_text())["preset"] == "fmnist-lt-ce"


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ({"type": "int", "low": 1, "high": 5, "step": 0.5}, "integer step >= 1"),
        ({"type": "int", "low": 1, "high": 4, "step": 2}, "does not divide high - low"),
        ({"type": "float", "low": 0.01, "high": 0.1, "step": 0.04}, "does not divide high - low"),
        ({"type": "categorical", "choices": [0.0, 1.0], "log": True}, "no 'log' or 'step'"),
        ({"type": "categorical", "choices": [0.0, 1.0], "step": 3}, "no 'log' or 'step'"),
    ],
)
def test_bad_steps_and_categorical_options_are_refused_at_load(param: dict, message: str) -> None:
    tree = _tree()
    tree["methods"]["ce"]["space"]["stage1.mixup_alpha"] = param
    with pytest.raises(ConfigError, match=message):
        load_study_spec(tree)


def test_whole_steps_are_accepted() -> None:
    tree = _tree()
    tree["methods"]["ce"]["space"]["data.batch_size"] = {"type": "int", "low": 8, "high": 20, "step": 4}
    tree["methods"]["ce"]["space"]["stage1.mixup_alpha"] = {"type": "float", "low": 0.01, "high": 0.1, "step": 0.03}
    assert load_study_spec(tree).methods["ce"].space["data.batch_size"].step == 4


@pytest.mark.parametrize(
    ("seeds", "message"),
    [([], "at least one seed"), ([0, 1, 0], r"unique; \[0\] given twice"), ([-1], "seeds must be >= 0")],
)
def test_seeds_are_at_least_one_unique_and_non_negative(seeds: list, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_study_spec(_tree(seeds=tuple(seeds)))


@pytest.mark.parametrize("where", ["common_overrides", "search_overrides"])
def test_a_search_without_validation_split_is_refused_at_load(where: str) -> None:
    tree = _tree()
    tree[where] = [*tree[where], "data.val_per_class=0"]
    with pytest.raises(ConfigError, match="study method 'ce': the search scores trials on the validation split"):
        load_study_spec(tree)


def test_final_config_is_checked_at_every_extreme_of_the_space() -> None:
    tree = _tree()
    tree["final_overrides"] = [*tree["final_overrides"], "stage1.optimizer=imbsam"]
    tree["methods"]["ce"]["space"] = {"stage1.method": {"type": "categorical", "choices": ["erm", "ccsam"]}}
    with pytest.raises(ConfigError, match="study method 'ce'"):
        load_study_spec(tree)  # the final config of the second choice is refused by the schema
