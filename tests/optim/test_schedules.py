"""Learning-rate and stage-2 alpha schedules against the official code's values (spec 1.4, 2.2)."""

from __future__ import annotations

import math

import pytest

from ccsam.config import resolve_config
from ccsam.optim.schedules import adversarial_weight, learning_rate


def test_official_per_epoch_lr_table():
    stage1 = resolve_config("cifar10-lt-ccsam-official").stage1
    lrs = [learning_rate(stage1, e) for e in range(200)]
    # spec 1.4: epoch 0: 0.0467, 1: 0.0600, 2: 0.0733, 3: 0.0867, 4..158: 0.1, 159..178: 0.01, 179..199: 0.001
    assert [round(v, 4) for v in lrs[:4]] == [0.0467, 0.06, 0.0733, 0.0867]
    assert all(math.isclose(v, 0.1) for v in lrs[4:159])
    assert all(math.isclose(v, 0.01) for v in lrs[159:179])
    assert all(math.isclose(v, 0.001) for v in lrs[179:200])


def test_ldam_protocol_lr_for_the_ce_baseline():
    stage1 = resolve_config("cifar10-lt-ce").stage1
    # LDAM-DRW: lr * epoch / 5 for (1-indexed) epoch <= 5, x0.01 after 160, x0.0001 after 180.
    expected = []
    for e in range(200):
        t = e + 1
        factor = t / 5 if t <= 5 else (1e-4 if t > 180 else (1e-2 if t > 160 else 1.0))
        expected.append(0.1 * factor)
    assert [learning_rate(stage1, e) for e in range(200)] == pytest.approx(expected, rel=1e-12)


def test_cosine_warms_up_then_decays_to_zero():
    stage = resolve_config("digits-lt", ["stage1.schedule=cosine", "stage1.epochs=10",
                                         "stage1.warmup_epochs=2", "stage1.warmup_start_factor=0.1"]).stage1
    assert learning_rate(stage, 0, 0, 10) == pytest.approx(0.1 * stage.lr)
    assert learning_rate(stage, 2, 0, 10) == pytest.approx(stage.lr)
    assert learning_rate(stage, 6, 0, 10) == pytest.approx(stage.lr * 0.5)
    assert learning_rate(stage, 9, 9, 10) < 0.01 * stage.lr
    values = [learning_rate(stage, e, s, 10) for e in range(2, 10) for s in range(10)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_constant_stage2_lr():
    stage2 = resolve_config("cifar10-lt-ccsam-official").stage2
    assert {learning_rate(stage2, e, s, 50) for e in range(30) for s in (0, 49)} == {0.01}


def test_stage2_alpha_ramp_and_cap():
    assert [adversarial_weight(t, 30, 1.0) for t in range(30)] == [(t + 1) / 30 for t in range(30)]
    capped = [adversarial_weight(t, 30, 0.3) for t in range(30)]
    assert capped[:8] == [(t + 1) / 30 for t in range(8)]
    assert all(v == 0.3 for v in capped[8:])  # the cap binds from the 9th stage-2 epoch on
