"""The random weight perturbation probe (ccsam-spec §5.1) against losses computed by hand."""

from __future__ import annotations

import copy
import json
import statistics

import pytest
import torch
import torch.nn.functional as F
from _analysis_models import MEAN, STD, onehot_arrays, onehot_classifier

from ccsam.analysis import loss_per_class, probe_generator, weight_noise, weight_perturbation_probe

# 3 classes, 4 input positions. Class 0: 3 images, class 1: 2, class 2: 1.
POSITIONS = [0, 1, 2, 3, 0, 2]
LABELS = [0, 0, 0, 1, 1, 2]
COUNTS = [200, 50, 5]  # training counts: class 0 many, 1 medium, 2 few


def _data():
    return onehot_arrays(POSITIONS, LABELS, width=4, num_classes=3)


def _hand_per_class(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """CE of logits W[:, k_i] + b, averaged within each class."""
    logits = weight[:, POSITIONS].T + bias
    ce = F.cross_entropy(logits, torch.tensor(LABELS), reduction="none")
    return torch.stack([ce[torch.tensor(LABELS) == c].mean() for c in range(3)]), ce.mean()


def _hand_delta(model, sigma: float, seed: int, draw: int, mode: str = "isotropic", eps: float = 0.0):
    """Overall and per-class loss change for draw ``draw``: z drawn weight-then-bias from (seed, draw)."""
    w, b = model.head.weight.detach(), model.head.bias.detach()
    gen = probe_generator(seed, draw)
    z_w = torch.randn(w.shape, generator=gen, dtype=torch.float64)
    z_b = torch.randn(b.shape, generator=gen, dtype=torch.float64)
    s_w = sigma if mode == "isotropic" else torch.sqrt(sigma**2 * w**2 + eps**2)  # Jiang et al.: variance
    s_b = sigma if mode == "isotropic" else torch.sqrt(sigma**2 * b**2 + eps**2)
    clean_pc, clean = _hand_per_class(w, b)
    pert_pc, pert = _hand_per_class(w + s_w * z_w, b + s_b * z_b)
    return float(pert - clean), pert_pc - clean_pc


def test_loss_per_class_is_the_mean_cross_entropy_of_each_class():
    model = onehot_classifier(4, 3, seed=0)
    expected, _ = _hand_per_class(model.head.weight.detach(), model.head.bias.detach())
    got = loss_per_class(model, _data(), MEAN, STD, batch_size=4)  # two batches, the last one short
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    absent = onehot_arrays([0, 1], [0, 0], width=4, num_classes=3)
    assert torch.isnan(loss_per_class(model, absent, MEAN, STD)[1:]).all()


def test_loss_per_class_uses_eval_mode_and_restores_the_flags():
    model = onehot_classifier(4, 3, seed=0)
    model.train()
    model.head.eval()
    seen = []
    model.head.register_forward_hook(lambda m, i, o: seen.append(m.training))
    loss_per_class(model, _data(), MEAN, STD)
    assert seen == [False] and model.training and not model.head.training


def test_zero_sigma_gives_exactly_zero_change_and_restores_the_weights():
    model = onehot_classifier(4, 3, seed=0)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    out = weight_perturbation_probe(model, _data(), MEAN, STD, COUNTS, sigmas=(0.0, 0.5), draws=3)
    zero = out["results"][0]
    assert zero["sigma"] == 0.0
    for key in ("overall", "many", "medium", "few"):
        assert zero["delta_mean"][key] == 0.0 and zero["delta_std"][key] == 0.0
        assert zero["delta_draws"][key] == [0.0, 0.0, 0.0]
    assert out["results"][1]["delta_mean"]["overall"] != 0.0
    assert all(torch.equal(p, before[k]) for k, p in model.named_parameters())


@pytest.mark.parametrize(("mode", "eps"), [("isotropic", 0.0), ("magnitude", 0.0), ("magnitude", 0.05)])
def test_probe_matches_the_loss_change_computed_by_hand(mode, eps):
    model = onehot_classifier(4, 3, seed=0)
    sigma, seed, draws = 0.3, 7, 3
    out = weight_perturbation_probe(
        model, _data(), MEAN, STD, COUNTS, sigmas=(sigma,), draws=draws, mode=mode, eps=eps, seed=seed
    )
    res = out["results"][0]
    hand = [_hand_delta(model, sigma, seed, j, mode, eps) for j in range(draws)]
    overall = [h[0] for h in hand]
    assert res["delta_draws"]["overall"] == pytest.approx(overall, rel=1e-12, abs=1e-14)
    assert res["delta_mean"]["overall"] == pytest.approx(statistics.fmean(overall), rel=1e-12)
    assert res["delta_std"]["overall"] == pytest.approx(statistics.stdev(overall), rel=1e-10)
    # groups: many = class 0, medium = class 1, few = class 2 (one class each)
    for group, c in (("many", 0), ("medium", 1), ("few", 2)):
        expected = [float(h[1][c]) for h in hand]
        assert res["delta_draws"][group] == pytest.approx(expected, rel=1e-12, abs=1e-14)
    per_class_mean = torch.stack([h[1] for h in hand]).mean(0)
    assert res["delta_mean_per_class"] == pytest.approx(per_class_mean.tolist(), rel=1e-12, abs=1e-14)
    clean_pc, clean = _hand_per_class(model.head.weight.detach(), model.head.bias.detach())
    assert res["clean"]["overall"] == pytest.approx(float(clean), rel=1e-12)
    assert res["loss_mean"]["overall"] == pytest.approx(float(clean) + statistics.fmean(overall), rel=1e-12)
    assert out["clean_per_class"] == pytest.approx(clean_pc.tolist(), rel=1e-12)


def test_group_loss_is_the_mean_of_its_class_losses_and_empty_groups_are_none():
    model = onehot_classifier(4, 3, seed=0)
    out = weight_perturbation_probe(model, _data(), MEAN, STD, [200, 150, 5], sigmas=(0.1,), draws=2)
    assert out["groups"] == {"many": [0, 1], "medium": [], "few": [2]}
    clean_pc, clean = _hand_per_class(model.head.weight.detach(), model.head.bias.detach())
    res = out["results"][0]
    # the group mean weighs classes equally, the overall mean weighs samples equally
    assert res["clean"]["many"] == pytest.approx(float(clean_pc[:2].mean()), rel=1e-12)
    assert res["clean"]["overall"] == pytest.approx(float(clean), rel=1e-12)
    for field in ("clean", "loss_mean", "loss_std", "delta_mean", "delta_std", "delta_draws"):
        assert res[field]["medium"] is None
    json.dumps(out, allow_nan=False)  # JSON-ready: no NaN, no tensors


def test_same_seed_gives_identical_results_for_identical_models_and_other_seeds_differ():
    model = onehot_classifier(4, 3, seed=0)
    twin = copy.deepcopy(model)
    kwargs = dict(sigmas=(0.05, 0.2), draws=2, seed=3)
    a = weight_perturbation_probe(model, _data(), MEAN, STD, COUNTS, **kwargs)
    b = weight_perturbation_probe(twin, _data(), MEAN, STD, COUNTS, **kwargs)
    assert a == b
    c = weight_perturbation_probe(model, _data(), MEAN, STD, COUNTS, **{**kwargs, "seed": 4})
    assert c["results"][0]["delta_draws"] != a["results"][0]["delta_draws"]


def test_different_models_with_the_same_shapes_get_the_same_noise_draws():
    a, b = onehot_classifier(4, 3, seed=0), onehot_classifier(4, 3, seed=1)
    for j in range(2):
        ua = weight_noise(a, 0.2, probe_generator(5, j))
        ub = weight_noise(b, 0.2, probe_generator(5, j))
        assert all(torch.equal(ua[k], ub[k]) for k in ua)
        # magnitude-aware: u = sigma |w| z with the same z
        ma = weight_noise(a, 0.2, probe_generator(5, j), mode="magnitude")
        mb = weight_noise(b, 0.2, probe_generator(5, j), mode="magnitude")
        pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
        for k in ma:
            torch.testing.assert_close(ma[k] / (0.2 * pa[k].abs()), ua[k] / 0.2, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(mb[k] / (0.2 * pb[k].abs()), ua[k] / 0.2, rtol=1e-12, atol=1e-12)
    first, second = weight_noise(a, 1.0, probe_generator(5, 0)), weight_noise(a, 1.0, probe_generator(5, 1))
    assert not torch.equal(first["head.weight"], second["head.weight"])
    assert not torch.equal(first["head.weight"], weight_noise(a, 1.0, probe_generator(6, 0))["head.weight"])


def test_probe_rejects_bad_input():
    model, data = onehot_classifier(4, 3, seed=0), _data()
    with pytest.raises(ValueError, match="class_counts"):
        weight_perturbation_probe(model, data, MEAN, STD, [1, 2])
    with pytest.raises(ValueError, match="mode"):
        weight_perturbation_probe(model, data, MEAN, STD, COUNTS, mode="gaussian")
    with pytest.raises(ValueError, match="sigma"):
        weight_perturbation_probe(model, data, MEAN, STD, COUNTS, sigmas=(-0.1,))
    with pytest.raises(ValueError, match="draws"):
        weight_perturbation_probe(model, data, MEAN, STD, COUNTS, draws=0)
    with pytest.raises(ValueError, match="seed"):
        weight_perturbation_probe(model, data, MEAN, STD, COUNTS, seed=-1)
