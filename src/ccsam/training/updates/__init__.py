"""Parameter updates, all in one place: ``update(model, objective, batch, optimizer, autocast)``.

The loop calls one update per batch and knows nothing else about the optimiser. Which update a stage
uses is looked up here: the naive-flattening update (GP / MP, spec 5.3) when the stage asks for one,
else the update that belongs to the stage's optimiser (SGD, SAM / ASAM, ImbSAM).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ccsam.config.schema import ScheduleFields
from ccsam.training.updates.flattening import (
    GradientPenaltyUpdate,
    ModelPerturbationUpdate,
    make_gradient_penalty_update,
    make_model_perturbation_update,
)
from ccsam.training.updates.sharpness import Autocast, Update, imbsam_update, sam_update, sgd_update

__all__ = [
    "FLATTENING_UPDATES",
    "OPTIMIZER_UPDATES",
    "Autocast",
    "GradientPenaltyUpdate",
    "ModelPerturbationUpdate",
    "Update",
    "build_update",
    "imbsam_update",
    "make_gradient_penalty_update",
    "make_model_perturbation_update",
    "sam_update",
    "sgd_update",
]

#: The update that goes with each optimiser choice (``stage1.optimizer``; stage 2 uses SGD).
OPTIMIZER_UPDATES: dict[str, Update] = {
    "sgd": sgd_update,
    "sam": sam_update,
    "asam": sam_update,
    "imbsam": imbsam_update,
}

#: Naive-flattening updates (``stage*.flattening``), built from the stage config and a noise generator.
FLATTENING_UPDATES: dict[str, Callable[[ScheduleFields, torch.Generator | None], Update]] = {
    "gp": lambda stage, _: make_gradient_penalty_update(r=stage.gp_radius, a=stage.gp_alpha),
    "mp": lambda stage, noise: make_model_perturbation_update(
        bound=stage.mp_bound, copies=stage.mp_copies, generator=noise
    ),
}


def build_update(stage: ScheduleFields, optimizer: str, noise: torch.Generator | None = None) -> Update:
    """The update of a stage: ``FLATTENING_UPDATES[stage.flattening]`` unless it is ``"none"``, else
    ``OPTIMIZER_UPDATES[optimizer]``. ``noise`` is the generator MP draws from."""
    if stage.flattening in FLATTENING_UPDATES:
        return FLATTENING_UPDATES[stage.flattening](stage, noise)
    return OPTIMIZER_UPDATES[optimizer]
