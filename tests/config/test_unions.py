"""The option unions of the stage configs: members, shorthand, nested overrides, rejected combinations."""

from __future__ import annotations

import json

import pytest
import yaml

from ccsam.config import list_presets, resolve_config
from ccsam.config.choices import (
    AsamOptimizer,
    CcsamRadius,
    CcsamStage2,
    DirOnlyRadius,
    GradientPenalty,
    ImbsamOptimizer,
    LwsStage2,
    MagOnlyRadius,
    ModelPerturbation,
    NoFlattening,
    NoRadius,
    RetrainStage2,
    SamOptimizer,
    SgdOptimizer,
)
from ccsam.config.schema import RunConfig, Stage1Config, Stage2Config
from ccsam.config.unions import UNIONS
from ccsam.errors import ConfigError

# (dotted union key, the member as written in YAML, the member expected)
MEMBERS = [
    ("stage1.optimizer", {"name": "sgd"}, SgdOptimizer()),
    ("stage1.optimizer", {"name": "sam", "rho": 0.1}, SamOptimizer(rho=0.1)),
    ("stage1.optimizer", {"name": "asam", "rho": 0.5, "eta": 0.02}, AsamOptimizer(rho=0.5, eta=0.02)),
    ("stage1.optimizer", {"name": "imbsam", "rho": 0.1, "tail_threshold": 7},
     ImbsamOptimizer(rho=0.1, tail_threshold=7)),
    ("stage1.radius", {"name": "ccsam"}, CcsamRadius()),
    ("stage1.radius", {"name": "dir_only", "rho": 0.05}, DirOnlyRadius(rho=0.05)),
    ("stage1.radius", {"name": "mag_only"}, MagOnlyRadius()),
    ("stage1.radius", {"name": "none"}, NoRadius()),
    ("stage1.flattening", {"name": "none"}, NoFlattening()),
    ("stage1.flattening", {"name": "gp", "radius": 0.07, "alpha": 0.6}, GradientPenalty(radius=0.07, alpha=0.6)),
    ("stage2.flattening", {"name": "mp", "bound": 0.02, "copies": 3}, ModelPerturbation(bound=0.02, copies=3)),
    ("stage2.method", {"name": "ccsam", "up_limit": 0.3, "div": 4.0, "feature_step": 0.5},
     CcsamStage2(up_limit=0.3, div=4.0, feature_step=0.5)),
    ("stage2.method", {"name": "retrain", "loss": {"name": "focal"}, "reinit_head": True},
     RetrainStage2.model_validate({"loss": {"name": "focal"}, "reinit_head": True})),
    ("stage2.method", {"name": "lws", "loss": {"name": "balanced_softmax"}},
     LwsStage2.model_validate({"loss": {"name": "balanced_softmax"}})),
]


def _at(cfg: RunConfig, dotted: str) -> object:
    node: object = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def _erm(key: str) -> list[str]:
    """stage1.method=erm where the member needs it (ImbSAM, flattening with an SGD stage 1 is fine)."""
    return ["stage1.method=erm"] if key == "stage1.optimizer" else []


@pytest.mark.parametrize(("key", "written", "expected"), MEMBERS, ids=lambda v: str(v)[:40])
def test_each_member_parses_from_an_override_and_from_yaml(tmp_path, key, written, expected):
    value = json.dumps(written)  # a flow mapping is valid YAML
    assert _at(resolve_config("digits-lt", [*_erm(key), f"{key}={value}"]), key) == expected
    section, leaf = key.split(".")
    preset = tmp_path / "p.yaml"
    preset.write_text(yaml.safe_dump({"base": "digits-lt", section: {leaf: written}}))
    assert _at(resolve_config(str(preset), _erm(key)), key) == expected


@pytest.mark.parametrize("key", sorted(UNIONS))
def test_a_name_alone_is_the_member_with_its_defaults(key):
    union = UNIONS[key]
    for tag, member in union.members.items():
        cfg = resolve_config("digits-lt", [*_erm(key), f"{key}={tag}"])
        assert _at(cfg, key) == member()
    assert _at(RunConfig(), key) == union.field.default


def test_the_python_api_takes_the_shorthand_too():
    assert Stage1Config(optimizer="sam").optimizer == SamOptimizer()
    assert Stage1Config.model_validate({"radius": {"rho": 0.5, "name": "dir_only"}}).radius == DirOnlyRadius(rho=0.5)
    assert Stage2Config(method="retrain").method == RetrainStage2()


@pytest.mark.parametrize("overrides", [
    ["stage1.optimizer=sam", "stage1.optimizer.rho=0.1"],
    ["stage1.optimizer.rho=0.1", "stage1.optimizer=sam"],
])
def test_shorthand_and_nested_override_in_either_order(overrides):
    assert resolve_config("digits-lt", ["stage1.method=erm", *overrides]).stage1.optimizer == SamOptimizer(rho=0.1)


def test_nested_override_keeps_the_preset_member_and_another_member_replaces_it():
    assert resolve_config("cifar10-lt-sam", ["stage1.optimizer.rho=0.3"]).stage1.optimizer == SamOptimizer(rho=0.3)
    assert resolve_config("cifar10-lt-sam", ["stage1.optimizer=sam"]).stage1.optimizer == SamOptimizer(rho=0.1)
    assert resolve_config("cifar10-lt-sam", ["stage1.optimizer=sgd"]).stage1.optimizer == SgdOptimizer()
    assert resolve_config("cifar10-lt-sam", ["stage1.optimizer=asam"]).stage1.optimizer == AsamOptimizer()
    crt = resolve_config("cifar10-lt-crt", ["stage2.method.loss.name=focal"]).stage2.method
    assert isinstance(crt, RetrainStage2) and crt.reinit_head and crt.loss.name == "focal"


def test_a_mapping_override_of_the_same_choice_keeps_the_fields_set_before_it():
    kept = resolve_config("cifar10-lt-sam", ["stage1.optimizer.rho=0.3", "stage1.optimizer={name: sam}"])
    assert kept.stage1.optimizer == SamOptimizer(rho=0.3)  # not the preset's 0.1
    both = ["stage1.optimizer={name: asam, eta: 0.2}", "stage1.optimizer={rho: 0.4}"]
    assert resolve_config("cifar10-lt-sam", both).stage1.optimizer == AsamOptimizer(rho=0.4, eta=0.2)


def test_a_mapping_override_replaces_the_member_a_name_alone_merges():
    tuned = ["stage2.method.up_limit=0.4"]  # e.g. a tuned CC-SAM value, then an ablation to cRT
    replaced = resolve_config("digits-lt", [*tuned, "stage2.method={name: retrain, reinit_head: true}"])
    assert replaced.stage2.method == RetrainStage2(reinit_head=True)
    with pytest.raises(ConfigError, match="'stage2.method.up_limit' is not a field of stage2.method=retrain"):
        resolve_config("digits-lt", [*tuned, "stage2.method=retrain"])


def test_a_preset_may_refine_or_replace_its_base_member(tmp_path):
    refine = tmp_path / "refine.yaml"
    refine.write_text("base: cifar10-lt-crt\nstage2:\n  method:\n    loss:\n      name: focal\n")
    method = resolve_config(str(refine)).stage2.method
    assert isinstance(method, RetrainStage2) and method.reinit_head and method.loss.name == "focal"
    replace = tmp_path / "replace.yaml"
    replace.write_text("base: cifar10-lt-crt\nstage2:\n  method: lws\n")
    assert resolve_config(str(replace)).stage2.method == LwsStage2()


@pytest.mark.parametrize(("overrides", "line"), [
    (["stage1.optimizer.rho=0.1"],
     "'stage1.optimizer.rho' is not a field of stage1.optimizer=sgd (it belongs to stage1.optimizer=sam|asam|imbsam)"),
    (["stage1.method=erm", "stage1.optimizer=sam", "stage1.optimizer.eta=0.1"],
     "'stage1.optimizer.eta' is not a field of stage1.optimizer=sam (it belongs to stage1.optimizer=asam)"),
    (["stage1.radius.rho=0.1"],
     "'stage1.radius.rho' is not a field of stage1.radius=ccsam (it belongs to stage1.radius=dir_only)"),
    (["stage1.flattening=gp", "stage1.flattening.copies=3"],
     "'stage1.flattening.copies' is not a field of stage1.flattening=gp (it belongs to stage1.flattening=mp)"),
    (["stage2.method=lws", "stage2.method.reinit_head=true"],
     "'stage2.method.reinit_head' is not a field of stage2.method=lws (it belongs to stage2.method=retrain)"),
    (["stage2.method.loss.name=focal"],
     "'stage2.method.loss' is not a field of stage2.method=ccsam (it belongs to stage2.method=retrain|lws)"),
    (["stage1.optimizer=adam"], "unknown stage1.optimizer 'adam'; choose one of sgd, sam, asam, imbsam"),
    (["stage1.optimizer=3"], "config key 'stage1.optimizer' takes one of sgd|sam|asam|imbsam"),
    (["stage1.radius=fixed_rho"],
     "stage1.radius=fixed_rho was removed (the same formula as dir_only): write stage1.radius=dir_only"),
    (["stage1.method=erm", "stage1.optimizer=sam", "stage1.optimizer.rho=-1"],
     "invalid value for 'stage1.optimizer.rho': Input should be greater than or equal to 0 (got -1)"),
    (["stage1.optimizer=imbsam"], "stage1.optimizer=imbsam works with stage1.method=erm"),
    (["stage1.method=erm", "stage1.optimizer=sam", "stage1.flattening=gp"],
     "stage1.flattening (gp / mp) replaces the update; use it with stage1.optimizer=sgd"),
    (["stage1.perturb_scope=all", "stage1.radius=none"],
     "stage1.radius ablations are implemented for stage1.perturb_scope=head"),
    (["stage2.train_bn=true"], "stage2.train_bn=true needs stage2.method=retrain|lws: "),
    (["stage1.optimizer.name={a: 1}"], "unknown stage1.optimizer"),
    (["stage1.optimizer={name: [1]}"], "unknown stage1.optimizer"),
])
def test_invalid_combinations_give_one_line(overrides, line):
    with pytest.raises(ConfigError) as info:
        resolve_config("digits-lt", overrides)
    assert line in str(info.value) and "\n" not in str(info.value)


# Pre-migration values (the flat-config version's resolved presets), one per moved field family.
PRE_MIGRATION = [
    ("cifar10-lt-sam", "stage1.optimizer", SamOptimizer(rho=0.1)),
    ("cifar100-lt-sam", "stage1.optimizer", SamOptimizer(rho=0.2)),
    ("cifar10-lt-imbsam", "stage1.optimizer", ImbsamOptimizer(rho=0.05, tail_threshold=20)),
    ("cifar10-lt-ccsam-official", "stage2.method", CcsamStage2(up_limit=1.0, div=2.0, feature_step=1.0)),
    ("cifar100-lt-ccsam-official", "stage2.method", CcsamStage2(up_limit=0.3, div=2.0, feature_step=1.0)),
    ("cifar10-lt-ccsam-first-release", "stage2.method", CcsamStage2(up_limit=0.8, div=2.0, feature_step=1.0)),
    ("cifar10-lt-crt", "stage2.method", RetrainStage2(reinit_head=True)),
    ("fmnist-lt-ccsam", "stage1.radius", CcsamRadius()),
    ("fmnist-lt-ccsam", "stage1.flattening", NoFlattening()),
]


def test_every_preset_resolves():
    for name, _ in list_presets():
        resolve_config(name)


@pytest.mark.parametrize(("preset", "key", "expected"), PRE_MIGRATION, ids=lambda v: str(v)[:30])
def test_migrated_presets_keep_their_values(preset, key, expected):
    assert _at(resolve_config(preset), key) == expected


def test_migrated_loss_presets_keep_their_stage2_loss():
    gcl = resolve_config("cifar10-lt-gcl").stage2.method
    assert isinstance(gcl, RetrainStage2) and not gcl.reinit_head
    assert (gcl.loss.name, gcl.loss.options) == ("gcl", {"scale": 20.0, "noise_mul": 0.5, "margin": 0.1, "gamma": 1.0})
    mislas = resolve_config("cifar100-lt-mislas").stage2  # shift learning: BN statistics only
    assert isinstance(mislas.method, RetrainStage2) and not mislas.train_bn and mislas.bn_mode == "train"
    assert (mislas.method.loss.name, mislas.method.loss.options) == (
        "label_aware_smoothing", {"eps_head": 0.4, "eps_tail": 0.1}
    )
