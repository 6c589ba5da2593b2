"""Metrics: shot groups (thresholds, spec table), per-class accuracy, classification_report."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from ccsam.evaluation import classification_report, per_class_accuracy, shot_groups
from ccsam.evaluation.metrics import confusion_matrix, predicted_classes

# Hand-made example: 4 classes with training counts [200, 50, 30, 5] -> many {0}, medium {1, 2}, few {3}.
COUNTS = [200, 50, 30, 5]
LABELS = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3, 3])
LOGITS = torch.tensor(
    [
        [3.0, 1.0, 0.5, 0.0],  # y=0, pred 0
        [2.0, 1.5, 0.0, -1.0],  # y=0, pred 0
        [0.5, 1.0, 0.2, 0.1],  # y=0, pred 1
        [0.0, 2.0, 1.0, 0.0],  # y=1, pred 1
        [0.0, 1.0, 1.5, 0.0],  # y=1, pred 2
        [0.1, 0.2, 0.9, 0.3],  # y=2, pred 2
        [-1.0, -1.0, 0.0, -2.0],  # y=2, pred 2
        [0.0, 0.0, 4.0, 1.0],  # y=2, pred 2
        [1.0, 0.0, 0.0, 0.5],  # y=3, pred 0
        [0.0, 0.3, 0.0, 0.7],  # y=3, pred 3
    ]
)


def test_per_class_accuracy_hand_example() -> None:
    # class 0: 2/3, class 1: 1/2, class 2: 3/3, class 3: 1/2
    acc = per_class_accuracy(LOGITS, LABELS, 4)
    assert torch.allclose(acc, torch.tensor([2 / 3, 1 / 2, 1.0, 1 / 2]))


def test_report_hand_example() -> None:
    report = classification_report(LOGITS, LABELS, COUNTS)
    assert report["top1"] == pytest.approx(7 / 10)  # 2 + 1 + 3 + 1 correct out of 10
    assert report["many"] == pytest.approx(2 / 3)
    # class mean (1/2 + 1) / 2 = 0.75, not the sample mean 4/5 of the medium group
    assert report["medium"] == pytest.approx(0.75)
    assert report["few"] == pytest.approx(0.5)
    assert report["per_class_accuracy"] == pytest.approx([2 / 3, 0.5, 1.0, 0.5])
    assert report["group_sizes"] == {"many": 1, "medium": 2, "few": 1}
    assert report["thresholds"] == {"many": 100, "few": 20}
    assert report["num_samples"] == 10
    json.dumps(report)  # plain Python values only


def test_report_nll_equals_cross_entropy_and_top1_equals_loop() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 12, generator=g) * 3
    labels = torch.randint(0, 12, (300,), generator=g)
    report = classification_report(logits, labels, torch.arange(12) * 20)
    assert report["nll"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)
    rows, targets = logits.tolist(), labels.tolist()
    correct = sum(row.index(max(row)) == y for row, y in zip(rows, targets, strict=False))
    assert report["top1"] == pytest.approx(correct / 300)
    assert 0.0 <= report["ece"] <= 1.0


def test_per_class_accuracy_matches_loop_on_random_data() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(400, 30, generator=g)
    labels = torch.randint(0, 25, (400,), generator=g)  # classes 25..29 never appear
    acc = per_class_accuracy(logits, labels, 30)
    pred = logits.argmax(dim=1)
    for c in range(30):
        idx = [i for i in range(400) if labels[i] == c]
        if idx:
            assert acc[c].item() == pytest.approx(sum(int(pred[i] == c) for i in idx) / len(idx))
        else:
            assert math.isnan(acc[c].item())


def test_argmax_ties_go_to_lowest_index() -> None:
    acc = per_class_accuracy(torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]]), torch.tensor([0, 2]), 3)
    assert acc[0].item() == 1.0 and acc[2].item() == 0.0 and math.isnan(acc[1].item())


def test_empty_groups_are_none() -> None:
    report = classification_report(LOGITS, LABELS, [200, 150, 120, 101])
    assert report["many"] == pytest.approx((2 / 3 + 1 / 2 + 1 + 1 / 2) / 4)
    assert report["medium"] is None and report["few"] is None
    assert report["group_sizes"] == {"many": 4, "medium": 0, "few": 0}


def test_classes_absent_from_test_labels_are_skipped() -> None:
    keep = LABELS != 3  # drop the only few-shot class from the test set
    report = classification_report(LOGITS[keep], LABELS[keep], COUNTS)
    assert report["per_class_accuracy"][3] is None
    assert report["few"] is None and report["group_sizes"]["few"] == 1
    assert report["medium"] == pytest.approx(0.75)
    assert report["top1"] == pytest.approx(6 / 8)


def test_threshold_boundaries_are_medium() -> None:
    groups = shot_groups(torch.tensor([100, 20, 101, 19, 0]))
    assert groups["many"].tolist() == [False, False, True, False, False]
    assert groups["medium"].tolist() == [True, True, False, False, False]
    assert groups["few"].tolist() == [False, False, False, True, True]


def test_code_convention_via_thresholds() -> None:
    # released CC-SAM code: many n >= 100, few n <= 20  ==  many > 99, few < 21 for integer counts
    groups = shot_groups([100, 20, 21, 99], many_threshold=99, few_threshold=21)
    assert groups["many"].tolist() == [True, False, False, False]
    assert groups["few"].tolist() == [False, True, False, False]
    assert groups["medium"].tolist() == [False, False, True, True]


@pytest.mark.parametrize(
    ("num_classes", "n_max", "imbalance", "standard", "code"),
    # ccsam-spec.md section 3.1 table: many/medium/few class counts per convention
    [
        (10, 5000, 100, (8, 2, 0), (8, 2, 0)),
        (10, 5000, 50, (9, 1, 0), (10, 0, 0)),
        (100, 500, 200, (30, 31, 39), (31, 29, 40)),
        (100, 500, 100, (35, 35, 30), (35, 34, 31)),
        (100, 500, 50, (41, 41, 18), (41, 40, 19)),
    ],
)
def test_group_sizes_match_cifar_lt_table(num_classes, n_max, imbalance, standard, code) -> None:
    counts = [int(n_max * (1 / imbalance) ** (i / (num_classes - 1))) for i in range(num_classes)]
    for thresholds, expected in (((100, 20), standard), ((99, 21), code)):
        groups = shot_groups(counts, *thresholds)
        assert tuple(int(groups[k].sum()) for k in ("many", "medium", "few")) == expected


def test_groups_partition_classes() -> None:
    counts = torch.randint(0, 300, (200,), generator=torch.Generator().manual_seed(2))
    groups = shot_groups(counts, 50, 50)
    total = groups["many"].int() + groups["medium"].int() + groups["few"].int()
    assert torch.equal(total, torch.ones(200, dtype=torch.int32))
    assert torch.equal(groups["medium"], counts == 50)


@pytest.mark.parametrize(
    ("counts", "kwargs", "match"),
    [
        ([10, 20], {"many_threshold": 10, "few_threshold": 20}, "few_threshold"),
        ([[1, 2]], {}, "1-D"),
        ([], {}, "1-D"),
        ([5, -1], {}, "non-negative"),
        ([5.0, float("nan")], {}, "finite"),
    ],
)
def test_shot_groups_validation(counts, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        shot_groups(counts, **kwargs)


def test_report_accepts_half_precision_logits() -> None:
    report = classification_report(LOGITS.half(), LABELS, COUNTS)
    assert report["top1"] == pytest.approx(0.7)


@pytest.mark.parametrize(
    ("logits", "labels", "num_classes", "match"),
    [
        (LOGITS, LABELS, 5, "num_classes"),
        (LOGITS, LABELS[:-1], 4, "labels must have shape"),
        (LOGITS[0], LABELS, 4, r"\[N, C\]"),
        (LOGITS, LABELS.float(), 4, "integer"),
        (LOGITS, LABELS + 1, 4, r"\[0, 4\)"),
        (LOGITS.long(), LABELS, 4, "floating-point"),
    ],
)
def test_per_class_accuracy_validation(logits, labels, num_classes, match) -> None:
    with pytest.raises(ValueError, match=match):
        per_class_accuracy(logits, labels, num_classes)


def test_report_validation() -> None:
    with pytest.raises(ValueError, match="class_counts has 3 entries"):
        classification_report(LOGITS, LABELS, [200, 50, 30])
    with pytest.raises(ValueError, match="at least one sample"):
        classification_report(LOGITS[:0], LABELS[:0], COUNTS)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_report_on_cuda_matches_cpu_under_deterministic_mode() -> None:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(1000, 20, generator=g)
    labels = torch.randint(0, 20, (1000,), generator=g)
    counts = torch.arange(20) * 12
    expected = classification_report(logits, labels, counts)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        got = classification_report(logits.cuda(), labels.cuda(), counts.cuda())
    finally:
        torch.use_deterministic_algorithms(previous)
    for key in ("top1", "many", "medium", "few", "nll", "ece"):
        assert got[key] == pytest.approx(expected[key], abs=1e-5)
    assert got["per_class_accuracy"] == pytest.approx(expected["per_class_accuracy"], abs=1e-6)


def test_rows_with_non_finite_logits_are_wrong_not_right_by_chance():
    nan = float("nan")
    logits = torch.tensor([[nan, nan, nan], [2.0, 0.0, 0.0], [0.0, float("inf"), 0.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 2])  # argmax of the NaN row is 0, of the inf row 1: both would "hit"
    report = classification_report(logits, labels, [50, 30, 5], many_threshold=40, few_threshold=10)
    assert report["top1"] == 0.5  # rows 1 and 3 only
    assert report["per_class_accuracy"] == [0.5, 0.0, 1.0]
    assert math.isnan(report["nll"])
    assert confusion_matrix(logits, labels, 3) == [[1, 0, 0], [0, 0, 0], [0, 0, 1]]
    finite = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert torch.equal(predicted_classes(finite), finite.argmax(dim=1))


def test_a_minus_inf_logit_rules_a_class_out_and_every_metric_agrees():
    """-inf is probability 0 (a valid row): top-1, NLL, ECE and the reliability bins all see the same
    prediction; only an all -inf row has none (and NaN NLL / ECE, as a NaN row)."""
    from ccsam.evaluation.calibration import expected_calibration_error

    inf = float("inf")
    logits = torch.tensor([[2.0, -inf], [0.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1])
    report = classification_report(logits, labels, [50, 5], many_threshold=40, few_threshold=10)
    assert report["top1"] == 1.0  # row 0 predicts class 0 with probability 1
    p1 = math.exp(1.0) / (1.0 + math.exp(1.0))
    assert report["nll"] == pytest.approx(-math.log(p1) / 2)
    # ECE (15 bins): row 0 at confidence 1 (correct), row 1 at p1 (correct): |1 - 1| / 2 + |1 - p1| / 2
    assert report["ece"] == pytest.approx((1.0 - p1) / 2)
    on_label = torch.tensor([[-inf, 2.0], [0.0, 1.0]], dtype=torch.float64)
    assert classification_report(on_label, labels, [50, 5], many_threshold=40, few_threshold=10)["nll"] == inf
    none = torch.tensor([[-inf, -inf], [0.0, 1.0]], dtype=torch.float64)
    assert predicted_classes(none).tolist() == [-1, 1]
    assert math.isnan(expected_calibration_error(none, labels))
