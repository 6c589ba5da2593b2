"""Parameter updates, all in one place: ``update(model, objective, batch, optimizer, autocast)``.

The loop calls one update per batch and knows nothing else about the optimiser. Which update a stage
uses is looked up here: the naive-flattening update (GP / MP, spec 5.3) when the stage asks for one,
else the update that belongs to the stage's optimiser (SGD, SAM / ASAM, ImbSAM).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ccsam.config.choices import Flattening, GradientPenalty, ModelPerturbation
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

def _gradient_penalty(choice: GradientPenalty, noise: torch.Generator | None) -> Update:
    return make_gradient_penalty_update(r=choice.radius, a=choice.alpha)


def _model_perturbation(choice: ModelPerturbation, noise: torch.Generator | None) -> Update:
    return make_model_perturbation_update(bound=choice.bound, copies=choice.copies, generator=noise)


#: Naive-flattening updates by ``stage*.flattening`` member, built from the member and a noise generator.
FLATTENING_UPDATES: dict[str, Callable[..., Update]] = {"gp": _gradient_penalty, "mp": _model_perturbation}


def build_update(flattening: Flattening, optimizer: str, noise: torch.Generator | None = None) -> Update:
    """The update of a stage: ``FLATTENING_UPDATES[flattening.name]`` unless it is ``none``, else
    ``OPTIMIZER_UPDATES[optimizer]``. ``noise`` is the generator MP draws from."""
    if flattening.name in FLATTENING_UPDATES:
        return FLATTENING_UPDATES[flattening.name](flattening, noise)
    return OPTIMIZER_UPDATES[optimizer]
