"""Optimisers (SAM, ASAM, ImbSAM, CC-SAM for your own loop) and schedules of explicit counters."""

from ccsam.models.bn import bn_stats_frozen, disable_running_stats, enable_running_stats
from ccsam.optim.base import SharpnessOptimizer
from ccsam.optim.ccsam import CCSAM
from ccsam.optim.imbsam import ImbSAM, split_head_tail_loss
from ccsam.optim.perturbation import global_grad_norm, sam_epsilon
from ccsam.optim.sam import SAM, maybe_no_sync
from ccsam.optim.schedules import adversarial_weight, learning_rate

__all__ = [
    "CCSAM",
    "SAM",
    "ImbSAM",
    "SharpnessOptimizer",
    "adversarial_weight",
    "bn_stats_frozen",
    "disable_running_stats",
    "enable_running_stats",
    "global_grad_norm",
    "learning_rate",
    "maybe_no_sync",
    "sam_epsilon",
    "split_head_tail_loss",
]
