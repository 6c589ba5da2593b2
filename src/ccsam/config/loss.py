"""The loss section: a registered loss, its options and the optional DRW wrapper."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from ccsam.config.base import Section, registered
from ccsam.losses.registry import LOSSES, loss_options

__all__ = ["NOT_CONFIG_OPTIONS", "DrwConfig", "LossConfig"]

#: Loss constructor arguments that are objects, not settings (GCL's noise ``generator``): library API only.
NOT_CONFIG_OPTIONS = frozenset({"generator"})


class DrwConfig(Section):
    """Deferred re-weighting of the stage's loss (``ccsam.losses.DeferredReweighting``, Cao et al. 2019)."""

    start_epoch: int | None = Field(None, ge=0, description="first 0-based stage epoch with class-balanced "
                                    "weights; None = no DRW (LDAM-DRW CIFAR: 160)")
    beta: float = Field(0.9999, ge=0.0, lt=1.0, description="effective-number beta of the DRW weights")


class LossConfig(Section):
    """A registered loss (``ccsam.losses.LOSSES``), its constructor options (e.g. ``{max_margin: 0.5}``)
    and an optional DRW wrapper (``drw.start_epoch``): CE-DRW is ``name=ce`` plus ``drw.start_epoch``."""

    name: str = Field("ce", description="a key of ccsam.losses.LOSSES (`ccsam presets` lists them)")
    options: dict[str, bool | int | float | str | list[float] | None] = Field(
        default_factory=dict, description="constructor options; per-class vectors (ce.weight, focal.alpha) "
        "as lists of C numbers"
    )
    drw: DrwConfig = DrwConfig()

    @field_validator("name")
    @classmethod
    def _registered_loss(cls, name: str) -> str:
        return registered("loss", name, LOSSES)

    @model_validator(mode="after")
    def _known_options(self) -> LossConfig:
        accepted = [option for option in loss_options(self.name) if option not in NOT_CONFIG_OPTIONS]
        unknown = sorted(set(self.options) - set(accepted))
        if unknown:
            raise ValueError(f"loss '{self.name}' has no option {', '.join(unknown)}; it takes {', '.join(accepted)}")
        if self.drw.start_epoch is not None and self.options.get("drw_start_epoch") is not None:
            raise ValueError("set DRW once: drop options.drw_start_epoch when drw.start_epoch is set")
        return self
