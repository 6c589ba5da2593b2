"""The keys the unions replaced: one line naming the new key for user input; old run folders migrate."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from ccsam.cli.main import main
from ccsam.config import load_config_file, resolve_config
from ccsam.config.choices import CcsamStage2, DirOnlyRadius, GradientPenalty, SamOptimizer
from ccsam.config.migration import MOVED_KEYS, migrate_key, migrate_tree, moved_key_message
from ccsam.errors import ConfigError
from ccsam.training.run_dir import RunDir
from ccsam.training.trainer import Trainer
from ccsam.tuning import load_study_spec, run_final, run_search, study_summary

#: Every old key and the line it must give (written out here, not computed by the code under test).
EXPECTED_LINES = {
    "stage1.rho": "stage1.rho moved: write stage1.optimizer.rho (with stage1.optimizer=sam|asam|imbsam)",
    "stage1.asam_eta": "stage1.asam_eta moved: write stage1.optimizer.eta (with stage1.optimizer=asam)",
    "stage1.imbsam_tail_threshold": "stage1.imbsam_tail_threshold moved: write stage1.optimizer.tail_threshold "
    "(with stage1.optimizer=imbsam)",
    "stage1.radius_mode": "stage1.radius_mode moved: write stage1.radius=ccsam|dir_only|mag_only|none",
    "stage1.ablation_rho": "stage1.ablation_rho moved: write stage1.radius.rho (with stage1.radius=dir_only)",
    **{f"{s}.gp_radius": f"{s}.gp_radius moved: write {s}.flattening.radius (with {s}.flattening=gp)"
       for s in ("stage1", "stage2")},
    **{f"{s}.gp_alpha": f"{s}.gp_alpha moved: write {s}.flattening.alpha (with {s}.flattening=gp)"
       for s in ("stage1", "stage2")},
    **{f"{s}.mp_bound": f"{s}.mp_bound moved: write {s}.flattening.bound (with {s}.flattening=mp)"
       for s in ("stage1", "stage2")},
    **{f"{s}.mp_copies": f"{s}.mp_copies moved: write {s}.flattening.copies (with {s}.flattening=mp)"
       for s in ("stage1", "stage2")},
    "stage2.up_limit": "stage2.up_limit moved: write stage2.method.up_limit (with stage2.method=ccsam)",
    "stage2.div": "stage2.div moved: write stage2.method.div (with stage2.method=ccsam)",
    "stage2.step": "stage2.step moved: write stage2.method.feature_step (with stage2.method=ccsam)",
    "stage2.loss": "stage2.loss moved: write stage2.method.loss (with stage2.method=retrain|lws)",
    "stage2.reinit_head": "stage2.reinit_head moved: write stage2.method.reinit_head (with stage2.method=retrain)",
}


def _override(old: str) -> str:
    return f"{old}.name=ce" if old == "stage2.loss" else f"{old}=1"


def test_the_table_lists_exactly_the_old_keys():
    assert set(MOVED_KEYS) == set(EXPECTED_LINES)


@pytest.mark.parametrize("old", sorted(EXPECTED_LINES))
def test_old_key_as_override_names_the_new_key(old):
    with pytest.raises(ConfigError) as info:
        resolve_config("digits-lt", [_override(old)])
    assert str(info.value) == EXPECTED_LINES[old] == moved_key_message(old)


@pytest.mark.parametrize("old", sorted(EXPECTED_LINES))
def test_old_key_in_a_preset_file_names_the_new_key(tmp_path, old):
    section, leaf = old.split(".")
    value = {"name": "ce"} if leaf == "loss" else 1
    preset = tmp_path / "old.yaml"
    preset.write_text(yaml.safe_dump({"base": "digits-lt", section: {leaf: value}}))
    with pytest.raises(ConfigError, match="^" + EXPECTED_LINES[old].replace("|", r"\|").replace("(", r"\(")
                       .replace(")", r"\)") + "$"):
        resolve_config(str(preset))


@pytest.mark.parametrize("where", ["space", "overrides"])
def test_old_key_in_a_study_file_names_the_new_key(where):
    method = {"preset": "fmnist-lt-sam", "space": {"stage1.lr": {"type": "float", "low": 0.01, "high": 0.1}}}
    if where == "space":
        method["space"]["stage1.rho"] = {"type": "float", "low": 0.05, "high": 0.2}
    else:
        method["overrides"] = ["stage1.rho=0.1"]
    with pytest.raises(ConfigError) as info:
        load_study_spec({"trials": 2, "methods": {"sam": method}})
    assert str(info.value) == f"study method 'sam': {EXPECTED_LINES['stage1.rho']}"


def test_old_key_on_the_command_line_exits_2_with_one_line(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run"), "stage1.optimizer=sam", "stage1.rho=0.1"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"ccsam: error: {EXPECTED_LINES['stage1.rho']}"
    assert "Traceback" not in err and not (tmp_path / "run").exists()


# The stage sections of a run folder written by the flat-config version (its resolved config.yaml).
OLD_STAGE1 = {
    "epochs": 2, "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0005, "nesterov": False,
    "schedule": "official_step", "warmup_epochs": 1, "warmup_start_factor": 1 / 3, "milestones": [1],
    "gamma": 0.1, "flattening": "gp", "gp_radius": 0.07, "gp_alpha": 0.6, "mp_bound": 0.01, "mp_copies": 2,
    "spectral_norm": False, "swa": False, "swa_start": 0.75, "method": "ccsam",
    "loss": {"name": "ce", "options": {}, "drw": {"start_epoch": None, "beta": 0.9999}},
    "sampler": "instance", "mixup_alpha": 1.0, "flat_ratio": 0.3, "noise_scale": 0.01,
    "radius_mode": "fixed_rho", "ablation_rho": 0.05, "perturb_scope": "head", "perturb_last_k": 1,
    "optimizer": "sgd", "rho": 0.05, "asam_eta": 0.01, "imbsam_tail_threshold": 20,
}
OLD_STAGE2 = {
    "epochs": 2, "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0002, "nesterov": False, "schedule": "constant",
    "warmup_epochs": 0, "warmup_start_factor": 1 / 3, "milestones": [], "gamma": 0.1, "flattening": "none",
    "gp_radius": 0.05, "gp_alpha": 0.8, "mp_bound": 0.01, "mp_copies": 2, "spectral_norm": False, "swa": False,
    "swa_start": 0.75, "method": "ccsam",
    "loss": {"name": "ce", "options": {}, "drw": {"start_epoch": None, "beta": 0.9999}},
    "reinit_head": False, "train_bn": False, "sampler": "class_aware", "bn_mode": "train", "up_limit": 0.5,
    "div": 3.0, "step": 0.7, "init_from": "last",
}


def test_migrate_tree_moves_each_old_key_into_the_chosen_member():
    new = migrate_tree({"stage1": OLD_STAGE1, "stage2": OLD_STAGE2})
    s1, s2 = new["stage1"], new["stage2"]
    assert s1["optimizer"] == {"name": "sgd"}  # rho, asam_eta, tail threshold belong to other members
    assert s1["radius"] == {"name": "dir_only", "rho": 0.05}  # fixed_rho was dir_only under another name
    assert s1["flattening"] == {"name": "gp", "radius": 0.07, "alpha": 0.6}
    assert s2["flattening"] == {"name": "none"}
    assert s2["method"] == {"name": "ccsam", "up_limit": 0.5, "div": 3.0, "feature_step": 0.7}
    assert not set(s1) & {"rho", "asam_eta", "imbsam_tail_threshold", "radius_mode", "ablation_rho", "gp_radius"}
    assert not set(s2) & {"up_limit", "div", "step", "loss", "reinit_head", "mp_bound"}
    assert migrate_tree(new) == new  # the union form is left as it is
    retrain = migrate_tree({"stage1": {**OLD_STAGE1, "optimizer": "sam", "rho": 0.2},
                            "stage2": {**OLD_STAGE2, "method": "retrain", "reinit_head": True,
                                       "loss": {"name": "focal"}}})
    assert retrain["stage1"]["optimizer"] == {"name": "sam", "rho": 0.2}
    assert retrain["stage2"]["method"] == {"name": "retrain", "loss": {"name": "focal"}, "reinit_head": True}


def test_a_radius_tagged_mode_migrates_in_run_folders_and_is_one_line_in_user_input(tmp_path):
    # run folders of the union version before the radius tag was renamed wrote `radius: {mode: ...}`
    old = {"stage1": {"radius": {"mode": "dir_only", "rho": 0.05}}}
    assert migrate_tree(old)["stage1"]["radius"] == {"name": "dir_only", "rho": 0.05}
    for overrides in (["stage1.radius.mode=dir_only"], ["stage1.radius={mode: dir_only, rho: 0.1}"]):
        with pytest.raises(ConfigError, match=r"^stage1.radius.mode was renamed: write stage1.radius.name"):
            resolve_config("digits-lt", overrides)
    # the documented form; a tag-less mapping naming another member's field says whose field it is
    assert resolve_config("digits-lt", ["stage1.radius={name: dir_only, rho: 0.1}"]).stage1.radius.rho == 0.1
    with pytest.raises(ConfigError, match="belongs to stage1.radius=dir_only"):
        resolve_config("digits-lt", ["stage1.radius={rho: 0.1}"])
    with pytest.raises(ConfigError, match="unknown config key 'stage1.radius.foo'"):
        resolve_config("digits-lt", ["stage1.radius={name: dir_only, foo: 1, rho: 0.1}"])


def _write_old_config(run: RunDir) -> None:
    tree = yaml.safe_load(run.config_path.read_text())
    tree["stage1"], tree["stage2"] = copy.deepcopy(OLD_STAGE1), copy.deepcopy(OLD_STAGE2)
    run.config_path.write_text(yaml.safe_dump(tree, sort_keys=False))


def test_a_run_folder_of_the_flat_config_version_resumes_evaluates_reports_and_analyses(
    tmp_path, tiny_overrides, capsys
):
    overrides = tiny_overrides(**{"stage1.epochs": 2, "stage2.epochs": 2, "stage1.milestones": "[1]"})
    cfg = resolve_config("digits-lt", overrides)
    run = RunDir.create(tmp_path / "old", cfg, [])
    _write_old_config(run)
    migrated = load_config_file(run.config_path)
    assert migrated.stage1.radius == DirOnlyRadius(rho=0.05)
    assert migrated.stage1.flattening == GradientPenalty(radius=0.07, alpha=0.6)
    assert migrated.stage2.method == CcsamStage2(up_limit=0.5, div=3.0, feature_step=0.7)
    assert Trainer(migrated, run, progress=False).fit(stop_at=1) is None  # interrupted inside stage 1
    _write_old_config(run)  # the folder keeps its old config.yaml

    assert main(["train", "--resume", str(run.path), "--no-progress"]) == 0
    assert run.results_path.is_file()
    assert main(["eval", str(run.path)]) == 0
    assert main(["landscape", str(run.path), "--points", "3"]) == 0
    assert main(["report", str(run.path), "--out", str(tmp_path / "report")]) == 0
    assert "ccsam: error" not in capsys.readouterr().err
    assert json.loads((run.path / "analysis" / "landscape.json").read_text())


def test_old_and_new_run_configs_get_the_same_report_hash():
    from ccsam.reporting.collect import config_hash

    new = resolve_config("digits-lt", ["stage1.flattening=gp", "stage1.flattening.radius=0.07",
                                       "stage1.flattening.alpha=0.6"]).model_dump(mode="json")
    old = copy.deepcopy(new)
    old["stage1"] = {**{k: v for k, v in new["stage1"].items() if k not in ("optimizer", "radius", "flattening")},
                     "flattening": "gp", "gp_radius": 0.07, "gp_alpha": 0.6, "mp_bound": 0.01, "mp_copies": 2,
                     "radius_mode": "ccsam", "ablation_rho": 1.0, "optimizer": "sgd", "rho": 0.05,
                     "asam_eta": 0.01, "imbsam_tail_threshold": 20}
    assert config_hash(migrate_tree(old)) == config_hash(new)


def test_migrate_key_renames_recorded_keys_only_where_they_moved():
    assert migrate_key("stage1.rho") == "stage1.optimizer.rho"
    assert migrate_key("stage1.radius_mode") == "stage1.radius"
    assert migrate_key("stage2.step") == "stage2.method.feature_step"
    assert migrate_key("stage2.loss.options.eps_head") == "stage2.method.loss.options.eps_head"
    assert migrate_key("stage1.loss.options.tau") == "stage1.loss.options.tau"
    assert migrate_key("stage1.lr") == "stage1.lr"


def test_a_study_folder_of_the_flat_config_version_keeps_its_search_and_choice(tmp_path, tiny_overrides):
    pytest.importorskip("optuna")
    common = tiny_overrides(**{"stage1.epochs": 1, "stage2.epochs": 0, "stage1.milestones": "[1]"})
    spec = load_study_spec({
        "trials": 1, "seeds": [0], "startup_trials": 1, "common_overrides": common,
        "methods": {"sam": {"preset": "fmnist-lt-sam",
                            "space": {"stage1.optimizer.rho": {"type": "float", "low": 0.05, "high": 0.2}}}},
    })
    run_search(spec, tmp_path, "sam")
    for name, old_key in (("space", "stage1.rho"), ("choice", "stage1.rho")):  # as the old version wrote them
        path = tmp_path / "sam" / f"{name}.json"
        record = json.loads(path.read_text())
        field = "space" if name == "space" else "params"
        record[field] = {old_key: record[field]["stage1.optimizer.rho"]}
        path.write_text(json.dumps(record))
    rho = json.loads((tmp_path / "sam" / "choice.json").read_text())["params"]["stage1.rho"]
    run_search(spec, tmp_path, "sam")  # the recorded search is the same search: no refusal
    assert study_summary(tmp_path)["sam"]["choice"]["params"] == {"stage1.optimizer.rho": rho}
    (tmp_path / "sam" / "choice.json").write_text(json.dumps({"params": {"stage1.rho": rho}}))
    run_final(spec, tmp_path, "sam")
    run = RunDir.open(tmp_path / "sam" / "final" / "seed-0")
    assert run.load_config().stage1.optimizer == SamOptimizer(rho=rho)
