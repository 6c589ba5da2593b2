"""The declared search of a study: per method a preset, fixed overrides and a typed search space.

A study file (YAML) looks like::

    trials: 16                       # the same budget for every method
    seeds: [0, 1, 2, 3, 4]           # final phase: one run per seed, test split evaluated once each
    common_overrides: [runtime.threads=2]
    search_overrides: [stage1.epochs=30, "stage1.milestones=[24, 27]"]   # the proxy schedule
    final_overrides: []              # the full schedule (the presets' own, by default)
    methods:
      ce:
        preset: fmnist-lt-ce
        space:
          stage1.lr: {type: float, low: 0.02, high: 0.3, log: true}
          stage1.weight_decay: {type: float, low: 5.0e-5, high: 1.0e-3, log: true}

Every key of a space is a dotted config key; :func:`load_study_spec` checks it (and every fixed override)
against the config schema by resolving the method's config at the ends of each range, so a typo stops
the study before any training.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ccsam.config import resolve_config
from ccsam.config.schema import LIST_DATASETS, RunConfig
from ccsam.errors import ConfigError

__all__ = ["MethodSearch", "ParamSpec", "StudySpec", "load_study_spec"]

Choice = str | int | float | bool


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamSpec(_Strict):
    """One searched hyper-parameter: a float or int range (optionally log-scaled or stepped) or choices."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)
    choices: tuple[Choice, ...] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices or self.low is not None or self.high is not None:
                raise ValueError("a categorical parameter takes a non-empty 'choices' list and no low/high")
            if self.log or self.step is not None:
                raise ValueError("a categorical parameter takes no 'log' or 'step' (drop them, or use int/float)")
            return self
        if self.choices is not None or self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"a {self.type} parameter takes 'low' < 'high' and no 'choices'")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("a log-scaled parameter needs low > 0 and no step")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("an int parameter needs integer low and high")
        if self.step is not None:
            if self.type == "int" and self.step != int(self.step):
                raise ValueError(f"an int parameter needs an integer step >= 1, got step {self.step:g}")
            steps = (self.high - self.low) / self.step
            if not math.isclose(steps, round(steps), rel_tol=1e-9, abs_tol=1e-9):
                raise ValueError(
                    f"step {self.step:g} does not divide high - low = {self.high - self.low:g} into whole steps; "
                    "choose a step (or high) so that (high - low) / step is a whole number"
                )
        return self

    def extremes(self) -> list[Choice]:
        """Values that bound the space (used to check the key and the types against the schema)."""
        if self.type == "categorical":
            return list(self.choices or ())
        cast = int if self.type == "int" else float
        return [cast(self.low), cast(self.high)]  # type: ignore[arg-type]


class MethodSearch(_Strict):
    """One method of the study: its preset, fixed overrides per phase, and its search space."""

    preset: str
    overrides: tuple[str, ...] = ()
    search_overrides: tuple[str, ...] = ()
    final_overrides: tuple[str, ...] = ()
    space: dict[str, ParamSpec] = Field(default_factory=dict)


class StudySpec(_Strict):
    """A whole study: the budget, the seeds of the final phase, the pruner and the methods."""

    trials: int = Field(16, ge=1, description="trials per method (the same for every method)")
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    sampler_seed: int = 0
    startup_trials: int = Field(5, ge=1, description="random trials before TPE models the history")
    pruner: Literal["median", "successive_halving", "none"] = "median"
    pruner_startup_trials: int = Field(3, ge=0, description="median: complete trials before pruning starts")
    pruner_warmup_epochs: int = Field(5, ge=0, description="epochs before a trial may be pruned")
    common_overrides: tuple[str, ...] = ()
    search_overrides: tuple[str, ...] = ()
    final_overrides: tuple[str, ...] = ()
    methods: dict[str, MethodSearch]

    @model_validator(mode="after")
    def _names(self) -> StudySpec:
        bad = [m for m in self.methods if not m.replace("-", "").replace("_", "").isalnum()]
        if bad or not self.methods:
            raise ValueError(f"method names must be letters, digits, '-' or '_' (and at least one): {bad}")
        return self

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: tuple[int, ...]) -> tuple[int, ...]:
        if not seeds:
            raise ValueError("seeds needs at least one seed for the final phase, e.g. seeds: [0, 1, 2]")
        if len(set(seeds)) != len(seeds):
            twice = sorted({s for s in seeds if seeds.count(s) > 1})
            raise ValueError(f"seeds must be unique; {twice} given twice (drop the repeats)")
        if min(seeds) < 0:
            raise ValueError(f"seeds must be >= 0 (a run's seed is), got {min(seeds)}")
        return seeds

    def search_overrides_of(self, method: str, params: dict[str, Any]) -> list[str]:
        """Overrides of one search trial: common, method, proxy schedule, then the sampled values."""
        m = self.methods[method]
        sampled = [f"{key}={_format(value)}" for key, value in params.items()]
        return [*self.common_overrides, *m.overrides, *self.search_overrides, *m.search_overrides, *sampled]

    def final_overrides_of(self, method: str, params: dict[str, Any], seed: int) -> list[str]:
        """Overrides of one final run: common, method, full schedule, the chosen values, the seed."""
        m = self.methods[method]
        chosen = [f"{key}={_format(value)}" for key, value in params.items()]
        return [*self.common_overrides, *m.overrides, *self.final_overrides, *m.final_overrides, *chosen,
                f"seed={seed}"]

    def search_config(self, method: str, params: dict[str, Any]) -> RunConfig:
        return resolve_config(self.methods[method].preset, self.search_overrides_of(method, params))

    def final_config(self, method: str, params: dict[str, Any], seed: int) -> RunConfig:
        return resolve_config(self.methods[method].preset, self.final_overrides_of(method, params, seed))


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def _check_selection_split(cfg: RunConfig) -> None:
    """Refuse a search config without the split the objective is scored on (validation / selection)."""
    data = cfg.data
    if data.dataset in LIST_DATASETS:
        if not data.has_val_list and data.selection_per_class == 0:
            raise ConfigError(
                f"the search scores trials on a selection split, but {data.dataset} has no val list and "
                "data.selection_per_class=0; set data.selection_per_class >= 1 in the search overrides"
            )
    elif data.val_per_class == 0:
        raise ConfigError(
            "the search scores trials on the validation split, but data.val_per_class=0; "
            "set data.val_per_class >= 1 (e.g. drop data.val_per_class=0 from the overrides)"
        )


def _check_method(spec: StudySpec, name: str) -> None:
    """Resolve the method's search and final configs at the first value of every range / choice list and
    at each other extreme of each one in turn, and check the search has a validation split (one
    ConfigError line)."""
    method = spec.methods[name]
    lows = {k: p.extremes()[0] for k, p in method.space.items()}
    try:
        _check_selection_split(spec.search_config(name, lows))
        spec.final_config(name, lows, spec.seeds[0])
        for key, param in method.space.items():
            for value in param.extremes()[1:]:
                spec.search_config(name, {**lows, key: value})
                spec.final_config(name, {**lows, key: value}, spec.seeds[0])
    except ConfigError as exc:
        raise ConfigError(f"study method '{name}': {exc}") from None


def load_study_spec(source: str | Path | dict[str, Any]) -> StudySpec:
    """Read and validate a study file (or an already-parsed mapping); every problem is one ConfigError."""
    if isinstance(source, dict):
        tree: Any = source
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"study file '{path}' not found")
        try:
            tree = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"study file '{path}' is not valid YAML: {exc}") from None
    try:
        spec = StudySpec.model_validate(tree)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"study file: {where}: {first['msg']}") from None
    for name in spec.methods:
        _check_method(spec, name)
    return spec
