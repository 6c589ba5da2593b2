"""Presets, dotted overrides and validation errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ccsam.config import (
    RunConfig,
    apply_overrides,
    config_from_tree,
    config_to_yaml,
    list_presets,
    load_config_file,
    resolve_config,
)
from ccsam.errors import ConfigError

REQUIRED_PRESETS = {
    "digits-lt",
    "fmnist-lt-ce",
    "fmnist-lt-ccsam",
    "cifar10-lt-ce",
    "cifar10-lt-ccsam-official",
    "cifar100-lt-ccsam-official",
}


def test_every_required_preset_ships_and_validates():
    names = {name for name, _ in list_presets()}
    assert REQUIRED_PRESETS <= names
    for name in names:
        config = resolve_config(name)
        assert config.name == name


def test_official_cifar10_recipe_matches_the_released_code():
    c = resolve_config("cifar10-lt-ccsam-official")
    assert (c.data.batch_size, c.stage1.epochs, c.stage2.epochs) == (64, 200, 30)
    assert (c.stage1.lr, c.stage1.weight_decay, c.stage1.warmup_epochs) == (0.1, 2e-4, 5)
    assert (c.stage1.mixup_alpha, c.stage1.flat_ratio, c.stage1.noise_scale) == (1.0, 0.3, 1e-6)
    method = c.stage2.method
    assert (c.stage2.lr, c.stage2.schedule, method.up_limit, method.div) == (0.01, "constant", 1.0, 2.0)
    assert c.model.arch == "resnet32" and c.stage2.sampler == "class_aware"
    c100 = resolve_config("cifar100-lt-ccsam-official")
    assert (c100.data.dataset, c100.stage1.flat_ratio, c100.stage2.method.up_limit) == ("cifar100", 0.5, 0.3)


def test_overrides_are_typed_and_nested():
    c = resolve_config("digits-lt", ["stage1.lr=0.05", "stage1.noise_scale=1e-3", "stage1.milestones=[3, 4]",
                                     "data.synthetic.num_classes=7", "seed=3"])
    assert c.stage1.lr == 0.05 and c.stage1.noise_scale == 1e-3
    assert c.stage1.milestones == (3, 4) and c.data.synthetic.num_classes == 7 and c.seed == 3


def test_unknown_key_names_it_and_suggests_close_matches():
    with pytest.raises(ConfigError) as info:
        resolve_config("digits-lt", ["stage1.flat_ration=0.5"])
    message = str(info.value)
    assert "stage1.flat_ration" in message and "stage1.flat_ratio" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("stage1.lr=-1", "stage1.lr"),
        ("stage1.flat_ratio=1.5", "stage1.flat_ratio"),
        ("data.dataset=imagenet", "data.dataset"),
        ("stage1.milestones=[5, 2]", "milestones"),
        ("eval.few_threshold=500", "few_threshold"),
        ("stage1=3", "section"),
        ("novalue", "key.sub=value"),
    ],
)
def test_bad_values_give_one_line_naming_the_key(override, fragment):
    with pytest.raises(ConfigError) as info:
        resolve_config("digits-lt", [override])
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_unknown_preset_suggests_names():
    with pytest.raises(ConfigError, match="fmnist-lt-ccsam"):
        resolve_config("fmnist-lt-ccsa")


def test_a_preset_file_that_is_missing_a_folder_or_empty_is_one_line_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=r"^preset file '.*mine.yaml' not found"):
        resolve_config(str(tmp_path / "mine.yaml"))
    with pytest.raises(ConfigError, match="is a folder"):
        resolve_config(str(tmp_path))
    (tmp_path / "empty.yaml").write_text("# only a comment\n\n")
    with pytest.raises(ConfigError, match="is empty; write the settings it changes"):
        resolve_config(str(tmp_path / "empty.yaml"))
    (tmp_path / "mine.yaml").write_text("base: digits-lt\nstage1: {epochs: 3}\n")
    config = resolve_config(str(tmp_path / "mine.yaml"))
    assert config.stage1.epochs == 3 and config.name == resolve_config("digits-lt").name


def test_config_flag_points_to_preset_file(capsys):
    from ccsam.cli.main import main

    assert main(["train", "--config", "x.yaml"]) == 2
    assert "a YAML config file is given as --preset FILE" in capsys.readouterr().err


def test_resolved_yaml_round_trips(tmp_path):
    config = resolve_config("cifar10-lt-ccsam-official", ["seed=7"])
    path = tmp_path / "config.yaml"
    path.write_text(config_to_yaml(config))
    assert load_config_file(path) == config


def test_apply_overrides_leaves_the_input_untouched():
    tree = {"stage1": {"lr": 0.1}}
    out = apply_overrides(tree, ["stage1.lr=0.2"])
    assert tree == {"stage1": {"lr": 0.1}} and out["stage1"]["lr"] == 0.2
    assert config_from_tree(out).stage1.lr == 0.2


def test_config_is_immutable():
    config = RunConfig()
    with pytest.raises(ValidationError):
        config.seed = 3  # type: ignore[misc]


def test_an_unknown_key_inside_a_section_lists_that_sections_keys_and_a_scalar_list_shows_the_syntax():
    with pytest.raises(ConfigError, match=r"unknown config key 'eval.foo'; eval has many_threshold, .*posthoc_tau"):
        resolve_config("digits-lt", ["eval.foo=1"])
    with pytest.raises(ConfigError, match=r"did you mean stage1.flat_ratio"):
        resolve_config("digits-lt", ["stage1.flat_ration=0.5"])
    with pytest.raises(ConfigError, match=r"write a list, e.g. stage1.milestones=\[30\]"):
        resolve_config("digits-lt", ["stage1.milestones=30"])
