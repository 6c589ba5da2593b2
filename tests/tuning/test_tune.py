"""``ccsam tune`` on a tiny synthetic study: resumes after an interruption, searches on validation only,
and its final phase writes per-seed test results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import synthetic_overrides

from ccsam.errors import ConfigError
from ccsam.training import trainer as trainer_module
from ccsam.training.trainer import Trainer
from ccsam.tuning import load_study_spec, run_final, run_search, study_summary

optuna = pytest.importorskip("optuna")


def _spec(trials: int = 3, seeds: tuple[int, ...] = (0, 1)) -> dict:
    common = synthetic_overrides(**{"stage1.epochs": 2, "stage2.epochs": 0, "stage1.method": "erm"})
    return {
        "trials": trials, "seeds": list(seeds), "startup_trials": 2, "pruner": "median",
        "pruner_startup_trials": 1, "pruner_warmup_epochs": 1, "common_overrides": common,
        "search_overrides": ["stage1.epochs=2"], "final_overrides": ["stage1.epochs=3"],
        "methods": {"ce": {"preset": "fmnist-lt-ce", "space": {
            "stage1.lr": {"type": "float", "low": 0.01, "high": 0.2, "log": True},
            "stage1.mixup_alpha": {"type": "categorical", "choices": [0.0, 1.0]},
        }}},
    }


@pytest.fixture
def test_split_reads(monkeypatch):
    """Record, for every evaluate_split call of the engine, whether it evaluated the test split."""
    calls: list[bool] = []
    original = trainer_module.evaluate_split

    def spy(model, arrays, data, *args, **kwargs):
        calls.append(arrays is data.test)
        return original(model, arrays, data, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "evaluate_split", spy)
    return calls


def test_search_resumes_after_interruption_and_never_reads_test(
    tmp_path: Path, monkeypatch, test_split_reads
) -> None:
    spec = load_study_spec(_spec())
    study_dir = tmp_path / "study"
    real_fit, calls = Trainer.fit, {"n": 0}

    def interrupted_fit(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # trial 0 trains 2 epochs; trial 1 is interrupted in its first epoch
            raise KeyboardInterrupt
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", interrupted_fit)
    with pytest.raises(KeyboardInterrupt):
        run_search(spec, study_dir, "ce")
    monkeypatch.setattr(Trainer, "fit", real_fit)
    # A hard kill as well: a trial left RUNNING in the database.
    storage = f"sqlite:///{(study_dir / 'study.db').resolve()}"
    killed = optuna.load_study(study_name="ce", storage=storage).ask()
    killed.suggest_float("stage1.lr", 0.01, 0.2, log=True)
    killed.suggest_categorical("stage1.mixup_alpha", [0.0, 1.0])

    choice = run_search(spec, study_dir, "ce")
    trials = json.loads((study_dir / "ce" / "trials.json").read_text())
    finished = [t for t in trials if t["state"] in ("COMPLETE", "PRUNED")]
    failed = [t for t in trials if t["state"] == "FAIL"]
    assert len(finished) == spec.trials and len(failed) == 2  # the interrupted and the killed trial
    for lost in failed:  # each was re-run once with the same values
        assert sum(t["params"] == lost["params"] for t in finished) >= 1
    assert choice["validation"] == max(t["value"] for t in trials if t["state"] == "COMPLETE")
    assert set(choice["params"]) == {"stage1.lr", "stage1.mixup_alpha"}
    assert all(len(t["validation_per_epoch"]) >= 1 for t in finished)
    assert not any((study_dir / "ce" / "trials").glob("*/results.json"))
    assert test_split_reads and not any(test_split_reads)  # validation only, every epoch
    assert json.loads((study_dir / "ce" / "space.json").read_text())["space"]["stage1.lr"]["log"] is True

    # Resuming a finished search trains nothing more; the final phase reads the test split once per seed.
    assert run_search(spec, study_dir, "ce") == choice
    test_split_reads.clear()
    final = run_final(spec, study_dir, "ce")
    assert sum(test_split_reads) == len(spec.seeds)
    assert set(final["per_seed"]) == {"0", "1"}
    for seed, row in final["per_seed"].items():
        assert 0.0 <= row["test"]["top1"] <= 1.0
        results = json.loads((Path(row["run_dir"]) / "results.json").read_text())
        assert results["seed"] == int(seed) and results["epochs"] == 3
        assert results["name"] == "ce-final"  # one name for all seeds: one report row
    summary = study_summary(study_dir)
    assert summary["ce"]["choice"] == choice and summary["ce"]["final"] == final


def test_spec_is_validated_against_the_schema(tmp_path: Path) -> None:
    bad_key = _spec()
    bad_key["methods"]["ce"]["space"]["stage1.lrr"] = {"type": "float", "low": 0.1, "high": 0.2}
    with pytest.raises(ConfigError, match="lrr"):
        load_study_spec(bad_key)
    bad_range = _spec()
    bad_range["methods"]["ce"]["space"]["stage1.lr"] = {"type": "float", "low": 0.2, "high": 0.1}
    with pytest.raises(ConfigError, match="low"):
        load_study_spec(bad_range)
    with pytest.raises(ConfigError, match="has no choice"):
        run_final(load_study_spec(_spec()), tmp_path, "ce")
    changed = _spec()
    spec = load_study_spec(changed)
    (tmp_path / "ce").mkdir()
    (tmp_path / "ce" / "space.json").write_text(json.dumps({"preset": "fmnist-lt-sam"}))
    finished = optuna.create_study(study_name="ce", storage=f"sqlite:///{(tmp_path / 'study.db').resolve()}")
    finished.tell(finished.ask(), 0.5)  # a record binds once a trial of it finished
    with pytest.raises(ConfigError, match="other"):
        run_search(spec, tmp_path, "ce")


def test_a_smaller_trial_budget_for_a_searched_method_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "ce").mkdir()
    stored = {"method": "ce", "preset": "fmnist-lt-ce", "trials": 3}
    (tmp_path / "ce" / "space.json").write_text(json.dumps(stored))
    tree = _spec(trials=2)
    record = json.loads((tmp_path / "ce" / "space.json").read_text())
    spec = load_study_spec(tree)
    for key in ("pruner", "sampler_seed", "overrides", "search_overrides", "space"):  # as the search wrote it
        record[key] = {
            "pruner": spec.pruner, "sampler_seed": spec.sampler_seed,
            "overrides": [*spec.common_overrides, *spec.methods["ce"].overrides],
            "search_overrides": [*spec.search_overrides, *spec.methods["ce"].search_overrides],
            "space": {k: v.model_dump(mode="json") for k, v in spec.methods["ce"].space.items()},
        }[key]
    record["preset"] = spec.methods["ce"].preset
    (tmp_path / "ce" / "space.json").write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="budget of 3 trials; trials: 2 cannot shrink it"):
        run_search(spec, tmp_path, "ce")
    assert json.loads((tmp_path / "ce" / "space.json").read_text())["trials"] == 3
    assert not (tmp_path / "spec.json").exists()


def test_cli_runs_search_and_final_from_a_study_file(tmp_path: Path, capsys, monkeypatch) -> None:
    import yaml

    from ccsam.cli.main import main

    tree = _spec(trials=1, seeds=(3,))
    tree["search_overrides"], tree["final_overrides"] = ["stage1.epochs=1"], ["stage1.epochs=1"]
    spec_file = tmp_path / "study.yaml"
    spec_file.write_text(yaml.safe_dump(tree))
    records = ["--records", str(tmp_path / "records")]
    assert main(["tune", "--spec", str(spec_file), "--study-dir", str(tmp_path / "s"), *records]) == 0
    out = capsys.readouterr().out
    assert "ce: chose trial 0" in out and "test top-1 per seed" in out
    assert (tmp_path / "s" / "ce" / "final" / "seed-3" / "results.json").is_file()
    recorded = json.loads((tmp_path / "records" / "ce" / "final.json").read_text())
    assert recorded == json.loads((tmp_path / "s" / "ce" / "final.json").read_text())
    # A new machine: the same command with the records rebuilds the study folder and trains nothing.
    monkeypatch.setattr(Trainer, "__init__", None)  # any training would fail
    assert main(["tune", "--spec", str(spec_file), "--study-dir", str(tmp_path / "new"), *records]) == 0
    out = capsys.readouterr().out
    assert "restored from" in out and "1 trials, 1 finished seeds" in out
    assert json.loads((tmp_path / "new" / "ce" / "final.json").read_text())["per_seed"] == {
        "3": {**recorded["per_seed"]["3"], "run_dir": str(tmp_path / "new" / "ce" / "final" / "seed-3")}
    }
    assert main(["tune", "--spec", str(tmp_path / "missing.yaml"), "--study-dir", str(tmp_path / "s")]) == 2
