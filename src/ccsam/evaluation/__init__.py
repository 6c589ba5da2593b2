"""Metrics that reduce raw logits: top-1, per-class and shot-group accuracy, NLL, calibration."""

from ccsam.evaluation.calibration import expected_calibration_error, reliability_bins
from ccsam.evaluation.metrics import classification_report, confusion_matrix, per_class_accuracy, shot_groups

__all__ = [
    "classification_report",
    "confusion_matrix",
    "expected_calibration_error",
    "per_class_accuracy",
    "reliability_bins",
    "shot_groups",
]
