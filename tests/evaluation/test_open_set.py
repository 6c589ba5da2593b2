"""OLTR open-set evaluation against a hand-computed example (ccsam-spec section 3.3)."""

from __future__ import annotations

import math

import pytest
import torch

from ccsam.evaluation.open_set import (
    open_set_f_measure,
    open_set_predictions,
    open_set_report,
    with_open_samples,
)

PEAK = math.log(8.0)  # logits [ln 8, 0, 0] -> softmax max 8 / 10 = 0.8


def _peak(c: int) -> list[float]:
    return [PEAK if k == c else 0.0 for k in range(3)]


# Known samples: (label, logits); max softmax of [0, 0.5, 0] is e^0.5 / (e^0.5 + 2) = 0.452.
KNOWN = [(0, _peak(0)), (0, _peak(1)), (1, _peak(1)), (1, [0.0, 0.5, 0.0]), (2, _peak(2))]
OPEN = [_peak(0), [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]  # max softmax 0.8, 1/3, 1/3
COUNTS = [150, 50, 10]  # training counts: class 0 many, 1 medium, 2 few


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    known_logits = torch.tensor([z for _, z in KNOWN])
    known_labels = torch.tensor([y for y, _ in KNOWN])
    return with_open_samples(known_logits, known_labels, torch.tensor(OPEN))


def test_predictions_reject_below_threshold() -> None:
    logits, labels = _data()
    assert labels.tolist() == [0, 0, 1, 1, 2, -1, -1, -1]
    assert open_set_predictions(logits, 0.5).tolist() == [0, 1, 1, -1, 2, 0, -1, -1]
    assert open_set_predictions(logits, 0.1).tolist() == [0, 1, 1, 1, 2, 0, 0, 0]  # nothing below 1/3


def test_report_matches_hand_computation() -> None:
    logits, labels = _data()
    report = open_set_report(logits, labels, COUNTS, threshold=0.5)
    # TP = 3 (samples 1, 3, 5); FP = 2 (wrong class, rejected known); FN = 1 (accepted open sample)
    # P = 3/5, R = 3/4, F = 2PR / (P + R) = 0.9 / 1.35 = 2/3
    assert report["f_measure"] == pytest.approx(2 / 3)
    assert report["closed_top1"] == pytest.approx(4 / 5)  # argmax of sample 4 is its class 1
    assert report["known_top1"] == pytest.approx(3 / 5)  # rejected sample 4 counts as wrong
    assert (report["many"], report["medium"], report["few"]) == pytest.approx((0.5, 0.5, 1.0))
    assert report["open_rejected"] == pytest.approx(2 / 3)
    assert (report["num_known"], report["num_open"]) == (5, 3)
    # The pre-2020 OLTR variant leaves rejected known samples out of FP: P = 3/4, R = 3/4.
    assert open_set_report(logits, labels, COUNTS, threshold=0.5, variant="oltr_2019")["f_measure"] == 0.75
    # OLTR's theta = 0.1 rejects nothing here: TP 4, FP 1, FN 3 -> P = 4/5, R = 4/7, F = (32/35) / (48/35)
    default = open_set_report(logits, labels, COUNTS)
    assert default["f_measure"] == pytest.approx(2 / 3) and default["open_rejected"] == 0.0
    assert default["known_top1"] == pytest.approx(4 / 5)


def test_non_finite_rows_never_score() -> None:
    """A NaN/inf row is wrong when known (closed and open-set) and not a rejection when open.

    Without the guard the NaN row of class 0 below would count as right (argmax of a NaN row is
    arbitrary; here index 0) and the NaN open row as rejected (NaN < theta is false, so accepted, but
    its class index is arbitrary either way).
    """
    nan, inf = float("nan"), float("inf")
    logits, labels = _data()
    broken = torch.cat([logits, torch.tensor([[nan, 0.0, 0.0], [inf, 0.0, 0.0], [nan, nan, nan]])])
    broken_labels = torch.cat([labels, torch.tensor([0, 0, -1])])
    predictions = open_set_predictions(broken, 0.5)
    assert predictions.tolist() == [0, 1, 1, -1, 2, 0, -1, -1, -2, -2, -2]
    report = open_set_report(broken, broken_labels, COUNTS, threshold=0.5)
    # TP 3; FP 2 + the two broken known rows = 4; FN 1 + the broken open row = 2 -> P = 3/7, R = 3/5
    p, r = 3 / 7, 3 / 5
    assert report["f_measure"] == pytest.approx(2 * p * r / (p + r))
    assert report["closed_top1"] == pytest.approx(4 / 7)
    assert report["known_top1"] == pytest.approx(3 / 7)
    assert report["open_rejected"] == pytest.approx(2 / 4)
    # the old variant leaves rejected known rows out of FP, but a broken row is not a rejection
    p_2019 = 3 / 6
    assert open_set_report(broken, broken_labels, COUNTS, threshold=0.5, variant="oltr_2019")[
        "f_measure"
    ] == pytest.approx(2 * p_2019 * r / (p_2019 + r))


def test_f_measure_edge_cases_and_errors() -> None:
    assert open_set_f_measure(torch.tensor([-1, -1]), torch.tensor([0, -1])) == 0.0  # TP = 0
    assert open_set_f_measure(torch.tensor([1, -1]), torch.tensor([1, -1])) == 1.0
    with pytest.raises(ValueError, match="variant"):
        open_set_f_measure(torch.tensor([0]), torch.tensor([0]), variant="other")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"labels must lie in \[-1, 3\)"):
        open_set_report(torch.zeros(2, 3), torch.tensor([0, -2]), COUNTS)
    with pytest.raises(ValueError, match="at least one known"):
        open_set_report(torch.zeros(2, 3), torch.tensor([-1, -1]), COUNTS)
    with pytest.raises(ValueError, match="threshold"):
        open_set_predictions(torch.zeros(1, 3), 1.5)


def test_trainer_helper_appends_open_images_as_unknown(tmp_path, tiny_overrides) -> None:
    from ccsam.config import resolve_config
    from ccsam.evaluation.predict import open_set_results
    from ccsam.training.run_dir import RunDir
    from ccsam.training.trainer import Trainer

    with pytest.raises(ValueError, match="eval.open_set=true needs a data set with an `_open` list"):
        resolve_config("digits-lt", tiny_overrides(**{"eval.open_set": "true"}))
    config = resolve_config("digits-lt", tiny_overrides(**{"eval.open_threshold": 0.5}))
    trainer = Trainer(config, RunDir.create(tmp_path / "run", config, []), progress=False)
    data = trainer.data  # the validation images stand in for an `_open` list here
    report = open_set_results(trainer.model, data.test, data.val, data, config, trainer.runtime)
    assert (report["num_known"], report["num_open"]) == (len(data.test), len(data.val))
    assert report["threshold"] == 0.5 and report["variant"] == "oltr" and 0.0 <= report["f_measure"] <= 1.0
