"""Filter-normalised random directions (Li et al. 2018) and the bit-exact in-place perturbation."""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch
from _analysis_models import conv_bn_model

from ccsam.analysis import perturbed, random_direction

CONV_W, CONV_B, BN_W, BN_B, LIN_W, LIN_B = "0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias"


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_filter_normalised_direction_has_the_weight_filter_norms_and_zero_bn_and_bias():
    model = conv_bn_model(seed=1)
    params = dict(model.named_parameters())
    d = random_direction(model, _gen())
    assert list(d) == list(params)  # every parameter, in named_parameters order
    for name in (CONV_W, LIN_W):
        w_norms = params[name].detach().flatten(1).norm(dim=1)
        d_norms = d[name].flatten(1).norm(dim=1)
        assert d[name].shape == params[name].shape
        torch.testing.assert_close(d_norms, w_norms, rtol=1e-12, atol=0)
        assert not torch.allclose(d[name], params[name].detach())  # a random direction, not w itself
    for name in (CONV_B, BN_W, BN_B, LIN_B):
        assert torch.equal(d[name], torch.zeros_like(params[name]))


def test_ignore_none_keeps_bn_and_bias_rescaled_as_whole_vectors():
    model = conv_bn_model(seed=1)
    params = dict(model.named_parameters())
    d = random_direction(model, _gen(), ignore="none")
    for name in (CONV_B, BN_W, BN_B, LIN_B):
        torch.testing.assert_close(d[name].norm(), params[name].detach().norm(), rtol=1e-12, atol=0)
        assert (d[name] != 0).all()
    # the weights' draws do not depend on the ignore mode
    d_default = random_direction(model, _gen())
    assert torch.equal(d[CONV_W], d_default[CONV_W]) and torch.equal(d[LIN_W], d_default[LIN_W])


def test_unnormalised_direction_is_the_raw_gaussian_drawn_in_parameter_order():
    model = conv_bn_model(seed=1)
    d = random_direction(model, _gen(5), filter_normalize=False, ignore="none")
    gen = _gen(5)
    for name, p in model.named_parameters():
        assert torch.equal(d[name], torch.randn(p.shape, generator=gen, dtype=torch.float64)), name


def test_same_seed_gives_the_same_direction_and_another_seed_another():
    model = conv_bn_model(seed=1)
    a, b, c = (random_direction(model, _gen(s)) for s in (3, 3, 4))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a[LIN_W], c[LIN_W])
    # another model with the same shapes gets the same raw draws
    other = conv_bn_model(seed=2)
    raw_a = random_direction(model, _gen(3), filter_normalize=False)
    raw_o = random_direction(other, _gen(3), filter_normalize=False)
    assert all(torch.equal(raw_a[k], raw_o[k]) for k in raw_a)


def test_random_direction_rejects_bad_arguments():
    model = conv_bn_model(seed=1)
    with pytest.raises(ValueError, match="ignore"):
        random_direction(model, _gen(), ignore="biasbn")
    with pytest.raises(ValueError, match="Generator"):
        random_direction(model, 0)  # type: ignore[arg-type]


def test_perturbed_moves_the_weights_and_restores_them_bit_exactly():
    model = conv_bn_model(seed=1)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    d = random_direction(model, _gen(), ignore="none")
    alpha = 0.1  # w + 0.1 d - 0.1 d != w in floating point for most entries
    with perturbed(model, d, alpha) as same:
        assert same is model
        for name, p in model.named_parameters():
            torch.testing.assert_close(p.detach(), before[name] + alpha * d[name], rtol=1e-15, atol=1e-15)
        assert not torch.equal(model[4].weight, before[LIN_W])
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name
    # naive subtraction would not be bit-exact, which is why the weights are copied back
    w = before[LIN_W]
    assert not torch.equal((w + alpha * d[LIN_W]) - alpha * d[LIN_W], w)


def test_perturbed_restores_when_the_body_raises():
    model = conv_bn_model(seed=1)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    d = random_direction(model, _gen())
    with pytest.raises(RuntimeError, match="boom"), perturbed(model, d, 0.7):
        raise RuntimeError("boom")
    assert all(torch.equal(p, before[k]) for k, p in model.named_parameters())


def test_perturbed_rejects_unknown_names_and_wrong_shapes():
    model = conv_bn_model(seed=1)
    with pytest.raises(ValueError, match="not a parameter"), perturbed(model, {"nope": torch.zeros(1)}, 1.0):
        pass
    with pytest.raises(ValueError, match="shape"), perturbed(model, {LIN_W: torch.zeros(3)}, 1.0):
        pass


@pytest.mark.parametrize(
    "name",
    [f"ccsam.analysis.{module}" for module in ("directions", "probe", "landscape", "hessian")],
)
def test_analysis_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_multidimensional_normalisation_parameters_count_as_bn_not_as_filters():
    model = torch.nn.Sequential(torch.nn.LayerNorm([2, 3])).double()
    d = random_direction(model, _gen())
    assert model[0].weight.dim() == 2
    assert torch.equal(d["0.weight"], torch.zeros(2, 3, dtype=torch.float64))
    kept = random_direction(model, _gen(), ignore="none")["0.weight"]
    torch.testing.assert_close(kept.norm(), model[0].weight.detach().norm(), rtol=1e-12, atol=0)
    assert not torch.allclose(kept.norm(dim=1), model[0].weight.detach().norm(dim=1))  # not per row
