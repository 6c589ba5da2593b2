"""Typed configuration, presets and dotted overrides."""

from ccsam.config.io import (
    DEFAULT_PRESET,
    apply_overrides,
    config_differences,
    config_from_tree,
    config_to_yaml,
    known_keys,
    list_presets,
    load_config_file,
    load_preset_tree,
    resolve_config,
)
from ccsam.config.schema import (
    DataConfig,
    EvalConfig,
    ModelConfig,
    RunConfig,
    Stage1Config,
    Stage2Config,
    SyntheticConfig,
)

__all__ = [
    "DEFAULT_PRESET",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "RunConfig",
    "Stage1Config",
    "Stage2Config",
    "SyntheticConfig",
    "apply_overrides",
    "config_differences",
    "config_from_tree",
    "config_to_yaml",
    "known_keys",
    "list_presets",
    "load_config_file",
    "load_preset_tree",
    "resolve_config",
]
