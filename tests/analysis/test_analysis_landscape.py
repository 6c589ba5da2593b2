"""1-D / 2-D loss landscapes along filter-normalised directions (ccsam-spec §5.2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _analysis_models import MEAN, STD, QuadraticLoss, onehot_arrays, onehot_classifier

from ccsam.analysis import loss_curve_1d, loss_per_class, loss_surface_2d, random_direction

# QuadraticLoss data: sample i marks its own class; class k has loss 1 + (k + 1) ||w||^2.
LABELS = [0, 0, 0, 1, 2]
COUNTS = [200, 50, 5]  # many = class 0, medium = class 1, few = class 2
W0 = torch.tensor([0.3, -0.2, 0.5, 0.1], dtype=torch.float64)


def _quadratic():
    return QuadraticLoss(W0, num_classes=3), onehot_arrays(LABELS, LABELS, width=3, num_classes=3)


def test_curve_has_51_points_by_default_and_equals_the_clean_loss_at_zero():
    model = onehot_classifier(4, 3, seed=0)
    data = onehot_arrays([0, 1, 2, 3, 0], [0, 1, 2, 0, 1], width=4, num_classes=3)
    curve = loss_curve_1d(model, data, MEAN, STD, COUNTS)
    assert curve["points"] == 51 and len(curve["alphas"]) == 51 and len(curve["loss"]["overall"]) == 51
    assert curve["alphas"][0] == -1.0 and curve["alphas"][-1] == 1.0 and curve["alphas"][25] == 0.0
    per_class = loss_per_class(model, data, MEAN, STD)
    counts = torch.tensor([2, 2, 1], dtype=torch.float64)
    clean_overall = float((per_class * counts).sum() / counts.sum())
    assert curve["loss"]["overall"][25] == curve["clean"]["overall"]
    assert curve["clean"]["overall"] == pytest.approx(clean_overall, rel=1e-12)
    for group, c in (("many", 0), ("medium", 1), ("few", 2)):
        assert curve["loss"][group][25] == pytest.approx(float(per_class[c]), rel=1e-12)
    json.dumps(curve, allow_nan=False)


def test_curve_of_a_quadratic_loss_is_the_parabola_along_the_direction():
    model, data = _quadratic()
    curve = loss_curve_1d(model, data, MEAN, STD, COUNTS, points=11, span=2.0, seed=3)
    d = random_direction(model, torch.Generator().manual_seed(3))["weight"].flatten()
    torch.testing.assert_close(d.norm(), W0.norm(), rtol=1e-12, atol=0)  # one filter: ||d|| = ||w||
    # class k: 1 + (k+1) ||w + a d||^2 = (k+1)||d||^2 a^2 + 2 (k+1) (w.d) a + 1 + (k+1)||w||^2
    def coeffs(scale: float) -> list[float]:
        return [scale * float(d @ d), 2 * scale * float(W0 @ d), 1 + scale * float(W0 @ W0)]

    alphas = np.array(curve["alphas"])
    assert len(alphas) == 11 and alphas[0] == -2.0 and alphas[-1] == 2.0
    mean_scale = (3 * 1 + 2 + 3) / 5  # overall = mean over samples of (k_i + 1)
    fit = np.polyfit(alphas, curve["loss"]["overall"], 2)
    np.testing.assert_allclose(fit, coeffs(mean_scale), rtol=1e-9, atol=1e-12)
    for group, k in (("many", 0), ("medium", 1), ("few", 2)):
        fit = np.polyfit(alphas, curve["loss"][group], 2)
        np.testing.assert_allclose(fit, coeffs(k + 1.0), rtol=1e-9, atol=1e-12)
        expected = [1 + (k + 1) * float(((W0 + a * d) ** 2).sum()) for a in alphas]
        np.testing.assert_allclose(curve["loss"][group], expected, rtol=1e-12)


def test_same_seed_gives_the_same_curve_and_the_weights_are_restored():
    model, data = _quadratic()
    before = model.weight.detach().clone()
    a = loss_curve_1d(model, data, MEAN, STD, COUNTS, points=5, seed=1)
    b = loss_curve_1d(model, data, MEAN, STD, COUNTS, points=5, seed=1)
    c = loss_curve_1d(model, data, MEAN, STD, COUNTS, points=5, seed=2)
    assert a == b and a["loss"]["overall"] != c["loss"]["overall"]
    assert torch.equal(model.weight, before)


def test_empty_group_curve_is_none():
    model, data = _quadratic()
    curve = loss_curve_1d(model, data, MEAN, STD, [200, 150, 120], points=3)
    assert curve["groups"] == {"many": [0, 1, 2], "medium": [], "few": []}
    assert curve["loss"]["medium"] is None and curve["loss"]["few"] is None and curve["clean"]["few"] is None


def test_surface_matches_the_quadratic_on_both_directions():
    model, data = _quadratic()
    surface = loss_surface_2d(model, data, MEAN, STD, points=3, seed=4)
    gen = torch.Generator().manual_seed(4)
    d1 = random_direction(model, gen)["weight"].flatten()
    d2 = random_direction(model, gen)["weight"].flatten()
    assert not torch.allclose(d1, d2)
    mean_scale = (3 * 1 + 2 + 3) / 5
    assert surface["alphas"] == surface["betas"] == [-1.0, 0.0, 1.0]
    for i, a in enumerate(surface["alphas"]):
        for j, b in enumerate(surface["betas"]):
            expected = 1 + mean_scale * float(((W0 + a * d1 + b * d2) ** 2).sum())
            assert surface["loss"][i][j] == pytest.approx(expected, rel=1e-12)
    # the first direction is the 1-D curve's direction
    curve = loss_curve_1d(model, data, MEAN, STD, COUNTS, points=3, seed=4)
    assert [row[1] for row in surface["loss"]] == pytest.approx(curve["loss"]["overall"], rel=1e-14)


def test_landscape_rejects_bad_input():
    model, data = _quadratic()
    with pytest.raises(ValueError, match="points"):
        loss_curve_1d(model, data, MEAN, STD, COUNTS, points=0)
    with pytest.raises(ValueError, match="span"):
        loss_curve_1d(model, data, MEAN, STD, COUNTS, span=-1.0)
    with pytest.raises(ValueError, match="ignore"):
        loss_surface_2d(model, data, MEAN, STD, ignore="all")
