"""The option unions of the stage configs: each choice is a member that holds only its own fields.

``stage1.optimizer`` (sgd | sam | asam | imbsam), ``stage1.radius`` (the CC-SAM radius ablation:
ccsam | dir_only | mag_only | none), ``stage*.flattening`` (none | gp | mp) and ``stage2.method``
(ccsam | retrain | lws) are pydantic discriminated unions, tagged by ``name``, so a field of another
member (``stage1.optimizer.rho`` with ``name: sgd``) cannot be written.
Each union also accepts the member's name alone (``stage1.optimizer=sam``: :class:`~ccsam.config.base.Section`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from ccsam.config.base import Section
from ccsam.config.loss import LossConfig

__all__ = [
    "AsamOptimizer",
    "CcsamRadius",
    "CcsamStage2",
    "DirOnlyRadius",
    "Flattening",
    "GradientPenalty",
    "ImbsamOptimizer",
    "LwsStage2",
    "MagOnlyRadius",
    "ModelPerturbation",
    "NoFlattening",
    "NoRadius",
    "OptimizerChoice",
    "RadiusChoice",
    "RetrainStage2",
    "RhoSchedule",
    "SamOptimizer",
    "SgdOptimizer",
    "Stage2Method",
]

_RHO = "SAM radius |eps| = rho"


# -- stage1.optimizer -------------------------------------------------------------------------------------
class SgdOptimizer(Section):
    """SGD with momentum (the stage's schedule fields): one pass per step."""

    name: Literal["sgd"] = "sgd"


class RhoSchedule(Section):
    """A piecewise-constant SAM radius over stage 1 (Saddle-LongTail's ``--rho_schedule step``): ``rho_values[0]``
    before the first of ``rho_milestones`` (0-based epochs), ``rho_values[k]`` from milestone ``k`` on; with no
    milestones the constant ``rho``."""

    name: str  # each member's tag, first in the dumped config (members narrow it to their Literal)
    rho: float = Field(0.05, ge=0.0, description=_RHO)
    rho_milestones: tuple[int, ...] = Field(
        (), description="0-based stage-1 epochs at which rho moves to the next of rho_values (e.g. 5 60 75 of 90)"
    )
    rho_values: tuple[float, ...] = Field((), description="rho before and after each milestone (one more)")

    @model_validator(mode="after")
    def _values_fit_milestones(self) -> RhoSchedule:
        if (self.rho_milestones or self.rho_values) and len(self.rho_values) != len(self.rho_milestones) + 1:
            raise ValueError(f"rho_values needs one more value than rho_milestones (before the first and after "
                             f"each), got {len(self.rho_values)} values for {len(self.rho_milestones)} milestones")
        if list(self.rho_milestones) != sorted(set(self.rho_milestones)) or any(m < 1 for m in self.rho_milestones):
            raise ValueError(f"rho_milestones must be increasing epochs >= 1, got {list(self.rho_milestones)}")
        if any(v < 0 for v in self.rho_values):
            raise ValueError(f"rho_values must be >= 0, got {list(self.rho_values)}")
        return self

    def rho_at(self, epoch: int) -> float:
        """The radius of 0-based stage-1 ``epoch``."""
        if not self.rho_milestones:
            return self.rho
        return self.rho_values[sum(1 for m in self.rho_milestones if m <= epoch)]


class SamOptimizer(RhoSchedule):
    """SAM (Foret et al.): ``eps = rho g / ||g||``, then the SGD step with the gradient at ``w + eps``."""

    name: Literal["sam"] = "sam"


class AsamOptimizer(RhoSchedule):
    """ASAM (Kwon et al.): SAM with the elementwise scaling ``T_w = |w| + eta``."""

    name: Literal["asam"] = "asam"
    eta: float = Field(0.01, ge=0.0, description="T_w = |w| + eta")


class ImbsamOptimizer(Section):
    """ImbSAM (Zhou et al.): SAM on the tail-class loss only; classes with ``n_c < tail_threshold`` are tail."""

    name: Literal["imbsam"] = "imbsam"
    rho: float = Field(0.05, ge=0.0, description=_RHO)
    tail_threshold: int = Field(20, ge=1, description="classes with n_c below it are tail")
    tail_weight: float = Field(
        1.0, gt=0.0, allow_inf_nan=False,
        description="lambda: weight of the tail gradient at w + eps (1: the paper's sum; 2: the authors' code)",
    )


OptimizerChoice = Annotated[
    SgdOptimizer | SamOptimizer | AsamOptimizer | ImbsamOptimizer, Field(discriminator="name")
]


# -- stage1.radius (ccsam-spec §4.4 "Stage 1 + dir / + mag") ----------------------------------------------
class CcsamRadius(Section):
    """The CC-SAM radius rho_c* along the class gradient direction (the method)."""

    name: Literal["ccsam"] = "ccsam"


class DirOnlyRadius(Section):
    """"Stage 1 + dir": the class gradient direction with a constant ``|eps| = rho`` (with ``rho`` = SAM's
    radius it is plain per-class SAM)."""

    name: Literal["dir_only"] = "dir_only"
    rho: float = Field(1.0, ge=0.0, description="|eps| per class and tensor (the slides' fixed magnitude 1)")


class MagOnlyRadius(Section):
    """"Stage 1 + mag": the CC-SAM radius along a random unit direction per class and tensor."""

    name: Literal["mag_only"] = "mag_only"


class NoRadius(Section):
    """No perturbation: the class-conditional term is the criterion at the clean logits. Without mixup, or
    with ``stage1.flat_targets=mixup``, that is the clean loss (the objective is ERM's); with mixup and the
    released code's ``flat_targets=y_a`` it scores the mixed images against ``y_a`` alone, which is not ERM."""

    name: Literal["none"] = "none"


RadiusChoice = Annotated[
    CcsamRadius | DirOnlyRadius | MagOnlyRadius | NoRadius, Field(discriminator="name")
]


# -- stage*.flattening (naive flattening, spec 5.3) -------------------------------------------------------
class NoFlattening(Section):
    """The stage optimiser's own update."""

    name: Literal["none"] = "none"


class GradientPenalty(Section):
    """GP: gradient-norm penalty through a finite-difference step of length ``radius``."""

    name: Literal["gp"] = "gp"
    radius: float = Field(0.05, gt=0.0, description="r of the finite-difference step")
    alpha: float = Field(0.8, ge=0.0, le=1.0, description="a = lambda / r")


class ModelPerturbation(Section):
    """MP (F2M): the gradient averaged over ``copies`` copies of the weights with uniform noise U[-bound, bound]."""

    name: Literal["mp"] = "mp"
    bound: float = Field(0.01, ge=0.0, description="uniform noise U[-b, b]")
    copies: int = Field(2, ge=1, description="noisy copies averaged per step")


Flattening = Annotated[NoFlattening | GradientPenalty | ModelPerturbation, Field(discriminator="name")]


# -- stage2.method ----------------------------------------------------------------------------------------
class CcsamStage2(Section):
    """CC-SAM stage 2 (spec 2.2): the head against adversarially displaced features, weight alpha ramped
    to ``up_limit``, class weights ``w_c = ln(n_max / n_c + 0.01) / div``."""

    name: Literal["ccsam"] = "ccsam"
    up_limit: float = Field(1.0, ge=0.0, le=1.0, description="cap of the adversarial weight alpha")
    div: float = Field(2.0, gt=0.0, description="w_c = ln(n_max / n_c + 0.01) / div")
    feature_step: float = Field(1.0, ge=0.0, description="feature step length (the official code's adver_reg)")


class RetrainStage2(Section):
    """Head re-training with ``loss`` (cRT, MiSLAS, GCL); ``reinit_head`` starts from a fresh head (cRT);
    ``lws`` also learns per-class scales ``f_c`` jointly with the head, ``logits_c = f_c (w_c . x + b_c)``,
    the head at ``head_lr_factor * stage2.lr`` and the scales at ``stage2.lr`` (MiSLAS's stage 2)."""

    name: Literal["retrain"] = "retrain"
    loss: LossConfig = LossConfig()
    reinit_head: bool = Field(False, description="start from a fresh head (cRT)")
    lws: bool = Field(False, description="also learn per-class weight scales, jointly with the head (MiSLAS)")
    head_lr_factor: float = Field(
        1.0, gt=0.0, le=1.0, description="with lws: the head's rate as a fraction of stage2.lr, the scales' being "
        "stage2.lr (MiSLAS lr_factor)"
    )

    @model_validator(mode="after")
    def _head_lr_factor_needs_lws(self) -> RetrainStage2:
        if self.head_lr_factor != 1.0 and not self.lws:
            raise ValueError("stage2.method.head_lr_factor sets the head's rate against the LWS scales' rate; "
                             "without stage2.method.lws=true set stage2.lr instead")
        return self


class LwsStage2(Section):
    """Learnable weight scaling: per-class scales of the stage-1 head, trained with ``loss``."""

    name: Literal["lws"] = "lws"
    loss: LossConfig = LossConfig()


Stage2Method = Annotated[CcsamStage2 | RetrainStage2 | LwsStage2, Field(discriminator="name")]
