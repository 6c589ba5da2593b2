"""CC-SAM, in one place: the radius and norm helpers, the head closed form, the scoped (last-k / all)
form, the stage-1 objective and stage 2 (ccsam-spec §1-§2).

The engine's objectives (:mod:`ccsam.training.objectives`) and the user-loop optimiser
(:class:`ccsam.optim.CCSAM`) both call these functions; :mod:`ccsam.functional` is the public facade.
"""

from ccsam.method.head import class_conditional_logits, random_head_directions
from ccsam.method.radius import (
    GRAD_NORM_FLOOR,
    PARAM_NORM_EPS,
    RADIUS_MODES,
    RadiusMode,
    ccsam_radius,
    global_norm,
)
from ccsam.method.scoped import ClassPassBn, PerturbScope, class_conditional_loss, select_parameters
from ccsam.method.stage1 import stage1_loss
from ccsam.method.stage2 import adversarial_class_weights, adversarial_feature_losses

__all__ = [
    "GRAD_NORM_FLOOR",
    "PARAM_NORM_EPS",
    "RADIUS_MODES",
    "ClassPassBn",
    "PerturbScope",
    "RadiusMode",
    "adversarial_class_weights",
    "adversarial_feature_losses",
    "ccsam_radius",
    "class_conditional_logits",
    "class_conditional_loss",
    "global_norm",
    "random_head_directions",
    "select_parameters",
    "stage1_loss",
]
