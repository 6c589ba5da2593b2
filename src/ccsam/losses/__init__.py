"""Long-tailed recognition losses: ``loss(logits [B, C], targets [B]) -> scalar`` modules.

Losses that depend on the label distribution take ``class_counts`` in the constructor and keep it in a
buffer (STYLE G13). ``ldam`` and ``gcl`` expect cosine logits (``CosineHead(d, C, scale=1.0)``); ``ldam``
with DRW needs ``set_epoch(epoch)`` every epoch. See :data:`LOSSES` for these flags.

Example:
    >>> import torch
    >>> from ccsam.losses import build_loss
    >>> build_loss("balanced_softmax", [100, 10])(torch.zeros(2, 2), torch.tensor([0, 1])).shape
    torch.Size([])
"""

from ccsam.losses.ce import CrossEntropyLoss
from ccsam.losses.drw import DeferredReweighting, GlobalBatchWeightedMean, effective_class_weights
from ccsam.losses.focal import FocalLoss, focal_term
from ccsam.losses.gcl import GCLLoss, gcl_cloud_sizes
from ccsam.losses.label_aware_smoothing import LabelAwareSmoothingLoss, SmoothingShape, label_aware_epsilons
from ccsam.losses.ldam import LDAMLoss, ldam_margins
from ccsam.losses.logit_adjustment import BalancedSoftmaxLoss, LogitAdjustedLoss, posthoc_logit_adjustment
from ccsam.losses.registry import LOSSES, LossEntry, build_loss, list_losses
from ccsam.losses.vs import VSLoss
from ccsam.losses.weights import drw_weights, effective_number_weights

__all__ = [
    "LOSSES",
    "BalancedSoftmaxLoss",
    "CrossEntropyLoss",
    "DeferredReweighting",
    "FocalLoss",
    "GCLLoss",
    "GlobalBatchWeightedMean",
    "LDAMLoss",
    "LabelAwareSmoothingLoss",
    "LogitAdjustedLoss",
    "LossEntry",
    "SmoothingShape",
    "VSLoss",
    "build_loss",
    "drw_weights",
    "effective_class_weights",
    "effective_number_weights",
    "focal_term",
    "gcl_cloud_sizes",
    "label_aware_epsilons",
    "ldam_margins",
    "list_losses",
    "posthoc_logit_adjustment",
]
