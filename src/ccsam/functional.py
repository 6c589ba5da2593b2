"""Public pure functions of CC-SAM (the facade of :mod:`ccsam.method`, where they are implemented).

* :func:`class_conditional_logits`: stage-1 logits under each class's head perturbation (spec §1.3).
* :func:`ccsam_radius`: the class-conditional radius ``rho_c`` (spec §1.1).
* :func:`adversarial_feature_losses`, :func:`adversarial_class_weights`: stage 2 (spec §2.2).
* :func:`random_head_directions`: the random unit directions of the ``mag_only`` ablation.

Example:
    >>> import torch
    >>> z, W, y = torch.randn(4, 3), torch.randn(2, 3), torch.tensor([0, 0, 1, 1])
    >>> class_conditional_logits(z, W, None, y, [100, 10], noise_scale=1e-2).shape
    torch.Size([4, 2])
"""

from ccsam.method.head import class_conditional_logits, random_head_directions
from ccsam.method.radius import RADIUS_MODES, RadiusMode, ccsam_radius
from ccsam.method.stage2 import adversarial_class_weights, adversarial_feature_losses

__all__ = [
    "RADIUS_MODES",
    "RadiusMode",
    "adversarial_class_weights",
    "adversarial_feature_losses",
    "ccsam_radius",
    "class_conditional_logits",
    "random_head_directions",
]
