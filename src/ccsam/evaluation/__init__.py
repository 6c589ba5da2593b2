"""Metrics that reduce raw logits: top-1, per-class / shot-group accuracy, NLL, calibration, OLTR open set."""

from ccsam.evaluation.calibration import expected_calibration_error, reliability_bins
from ccsam.evaluation.metrics import classification_report, confusion_matrix, per_class_accuracy, shot_groups
from ccsam.evaluation.open_set import (
    OPEN_LABEL,
    open_set_f_measure,
    open_set_predictions,
    open_set_report,
    with_open_samples,
)

__all__ = [
    "OPEN_LABEL",
    "classification_report",
    "confusion_matrix",
    "expected_calibration_error",
    "open_set_f_measure",
    "open_set_predictions",
    "open_set_report",
    "per_class_accuracy",
    "reliability_bins",
    "shot_groups",
    "with_open_samples",
]
