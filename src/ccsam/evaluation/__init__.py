"""Prediction over a split and the metrics that reduce its logits: top-1, per-class / shot-group accuracy,
NLL, calibration, OLTR open set."""

from ccsam.evaluation.calibration import expected_calibration_error, reliability_bins
from ccsam.evaluation.metrics import classification_report, confusion_matrix, per_class_accuracy, shot_groups
from ccsam.evaluation.open_set import (
    NO_PREDICTION,
    OPEN_LABEL,
    open_set_f_measure,
    open_set_predictions,
    open_set_report,
    with_open_samples,
)
from ccsam.evaluation.predict import (
    adjust_logits,
    balanced_accuracy,
    evaluate_split,
    predict,
    prediction_head,
)

__all__ = [
    "NO_PREDICTION",
    "OPEN_LABEL",
    "adjust_logits",
    "balanced_accuracy",
    "classification_report",
    "confusion_matrix",
    "evaluate_split",
    "expected_calibration_error",
    "open_set_f_measure",
    "open_set_predictions",
    "open_set_report",
    "per_class_accuracy",
    "predict",
    "prediction_head",
    "reliability_bins",
    "shot_groups",
    "with_open_samples",
]
