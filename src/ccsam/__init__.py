"""ccsam: Class-Conditional Sharpness-Aware Minimization (CVPR 2023) for deep long-tailed recognition.

Example:
    >>> from ccsam import resolve_config
    >>> resolve_config("digits-lt", ["stage1.epochs=2"]).stage1.epochs
    2
"""

from ccsam._version import __version__
from ccsam.config import RunConfig, resolve_config
from ccsam.functional import adversarial_feature_losses, class_conditional_logits
from ccsam.models import Classifier, build_model
from ccsam.training import RunDir, evaluate_run, train

__all__ = [
    "__version__",
    "Classifier",
    "RunConfig",
    "RunDir",
    "adversarial_feature_losses",
    "build_model",
    "class_conditional_logits",
    "evaluate_run",
    "resolve_config",
    "train",
]
