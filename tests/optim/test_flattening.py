"""Naive flattening baselines (spec 5.3): GP, MP, SN, SWA against oracles written out here."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ccsam.models import build_model
from ccsam.optim.spectral_norm import apply_spectral_norm
from ccsam.optim.swa import SwaAverager, swa_window
from ccsam.training.objectives import StepOutput
from ccsam.training.updates import make_gradient_penalty_update, make_model_perturbation_update, sgd_update

NULL = contextlib.nullcontext


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: intra-op threads only contend with other work on the machine (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 4)).double()


def _batch(n: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=gen, dtype=torch.float64), torch.randint(0, 4, (n,), generator=gen)


def _objective(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
    x, y = batch
    logits = model(x)
    return StepOutput(F.cross_entropy(logits, y), logits)


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _grad_at(model: nn.Module, w: dict[str, torch.Tensor], batch, create_graph: bool = False):
    """Oracle gradient of the batch CE at parameters ``w`` (BN in train mode: batch statistics)."""
    w = {n: t if create_graph else t.detach().requires_grad_() for n, t in w.items()}
    x, y = batch
    loss = F.cross_entropy(functional_call(model, w, (x,)), y)
    return dict(zip(w, torch.autograd.grad(loss, list(w.values()), create_graph=create_graph), strict=True))


def _bn_buffers(model: nn.Module) -> list[torch.Tensor]:
    bn = model[1]
    return [bn.running_mean, bn.running_var, bn.num_batches_tracked]


def _assert_same_bn(a: nn.Module, b: nn.Module) -> None:
    for s, t in zip(_bn_buffers(a), _bn_buffers(b), strict=True):
        assert torch.equal(s, t)


# ------------------------------------------------------------------------------------------------ GP


def test_gp_step_equals_the_update_written_out():
    model, batch = _model(), _batch()
    r, a, lr = 0.05, 0.8, 0.1
    w = _params(model)
    g1 = _grad_at(_model(), w, batch)
    norm = torch.sqrt(sum((g**2).sum() for g in g1.values()))
    g2 = _grad_at(_model(), {n: w[n] + r * g1[n] / norm for n in w}, batch)
    expected = {n: w[n] - lr * ((1 - a) * g1[n] + a * g2[n]) for n in w}

    out = make_gradient_penalty_update(r, a)(model, _objective, batch, torch.optim.SGD(model.parameters(), lr=lr),
                                             NULL)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[n], rtol=1e-12, atol=1e-14)
    x, y = batch
    torch.testing.assert_close(out.loss, F.cross_entropy(functional_call(_model(), w, (x,)), y))


def test_gp_restores_weights_exactly_and_its_gradient_is_the_penalty_gradient():
    # lr = 0: the step leaves w unchanged only if w was restored bit-exactly after the perturbed pass.
    model, batch = _model(), _batch()
    r, a = 1e-4, 0.5
    before = _params(model)
    make_gradient_penalty_update(r, a)(model, _objective, batch, torch.optim.SGD(model.parameters(), lr=0.0), NULL)
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n]), n
    # For small r the finite difference is the gradient of L + lambda ||grad L||, lambda = a r (double backward).
    w = {n: t.clone().requires_grad_() for n, t in before.items()}
    g = _grad_at(_model(), w, batch, create_graph=True)
    x, y = batch
    penalised = F.cross_entropy(functional_call(_model(), w, (x,)), y) + a * r * torch.sqrt(
        sum((t**2).sum() for t in g.values()))
    exact = dict(zip(w, torch.autograd.grad(penalised, list(w.values())), strict=True))
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, exact[n], rtol=0, atol=1e-8)


def test_gp_with_a_zero_is_sgd_and_bn_statistics_update_once():
    model, twin, batch = _model(), _model(), _batch()
    kwargs = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3}
    opt, twin_opt = torch.optim.SGD(model.parameters(), **kwargs), torch.optim.SGD(twin.parameters(), **kwargs)
    update = make_gradient_penalty_update(r=0.05, a=0.0)
    for seed in (1, 2):
        update(model, _objective, _batch(seed=seed), opt, NULL)
        sgd_update(twin, _objective, _batch(seed=seed), twin_opt, NULL)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)
    _assert_same_bn(model, twin)  # both: two forwards at w, not four
    # and with a > 0 the BN statistics are those of one plain forward at w
    gp, plain = _model(), _model()
    make_gradient_penalty_update(0.5, 0.8)(gp, _objective, batch, torch.optim.SGD(gp.parameters(), lr=0.1), NULL)
    plain(batch[0])
    _assert_same_bn(gp, plain)
    assert int(gp[1].num_batches_tracked) == 1


@pytest.mark.parametrize("kwargs", [{"r": -0.1}, {"a": float("nan")}, {"r": float("inf")}])
def test_gp_rejects_bad_hyperparameters(kwargs):
    with pytest.raises(ValueError):
        make_gradient_penalty_update(**kwargs)


# ------------------------------------------------------------------------------------------------ MP


@pytest.mark.parametrize("copies", [2, 4])  # (g + ... + g) / M is g exactly for M a power of two
def test_mp_with_zero_bound_is_sgd_exactly(copies: int):
    model, twin = _model(), _model()
    kwargs = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3}
    opt, twin_opt = torch.optim.SGD(model.parameters(), **kwargs), torch.optim.SGD(twin.parameters(), **kwargs)
    update = make_model_perturbation_update(bound=0.0, copies=copies)
    for seed in (1, 2):
        update(model, _objective, _batch(seed=seed), opt, NULL)
        sgd_update(twin, _objective, _batch(seed=seed), twin_opt, NULL)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)
    _assert_same_bn(model, twin)


def test_mp_step_equals_a_hand_loop_with_the_same_draws_and_updates_bn_once():
    model, batch = _model(), _batch()
    b, copies, lr = 0.05, 3, 0.1
    update = make_model_perturbation_update(b, copies, torch.Generator().manual_seed(7))
    w = _params(model)
    gen = torch.Generator().manual_seed(7)
    draws = []
    for _ in range(copies):  # documented order: copy by copy, parameter by parameter, rand -> b (2r - 1)
        draws.append({n: b * (2 * torch.rand(t.shape, dtype=t.dtype, generator=gen) - 1) for n, t in w.items()})
    grads = [_grad_at(_model(), {n: w[n] + u[n] for n in w}, batch) for u in draws]
    expected = {n: w[n] - lr * sum(g[n] for g in grads) / copies for n in w}

    update(model, _objective, batch, torch.optim.SGD(model.parameters(), lr=lr), NULL)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[n], rtol=1e-12, atol=1e-14)
    assert torch.equal(update.generator.get_state(), gen.get_state())
    # BN: one plain forward at w + u_1, not three
    plain = _model()
    with torch.no_grad():
        for n, p in plain.named_parameters():
            p.add_(draws[0][n])
    plain(batch[0])
    _assert_same_bn(model, plain)


def test_mp_restores_weights_exactly_and_default_generator_is_reproducible():
    results = []
    for _ in range(2):
        model = _model()
        before = _params(model)
        update = make_model_perturbation_update(bound=0.1, copies=2)
        assert update.generator.device.type == "cpu"
        update(model, _objective, _batch(), torch.optim.SGD(model.parameters(), lr=0.0), NULL)
        for n, p in model.named_parameters():
            assert torch.equal(p.detach(), before[n]), n
        results.append([p.grad.clone() for p in model.parameters()])
    for g, h in zip(*results, strict=True):
        assert torch.equal(g, h)


@pytest.mark.parametrize("kwargs", [{"bound": -1.0}, {"copies": 0}, {"copies": 1.5}, {"generator": 3}])
def test_mp_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        make_model_perturbation_update(**kwargs)


# ------------------------------------------------------------------------------------------------ SN


def _top_singular_value(w: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(w.detach().reshape(w.shape[0], -1), 2))


def _spin(model: nn.Module, steps: int = 40) -> None:
    gen = torch.Generator().manual_seed(0)
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randn(4, 1, 8, 8, generator=gen))


def test_sn_normalises_every_conv_and_leaves_the_head_alone():
    torch.manual_seed(0)
    model = build_model("small_cnn", in_channels=1, num_classes=3, width=4)
    head_before = model.head.weight.detach().clone()
    raw_sigmas = [_top_singular_value(m.weight) for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert min(abs(s - 1) for s in raw_sigmas) > 0.05  # so that ~1 below is the normalisation's doing
    assert apply_spectral_norm(model, exclude_head=True) is model
    _spin(model)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3 and all(hasattr(m, "parametrizations") for m in convs)
    model.eval()  # read W / sigma with the stored u, v
    for m in convs:
        assert abs(_top_singular_value(m.weight) - 1) < 1e-2
    assert not hasattr(model.head, "parametrizations")
    assert torch.equal(model.head.weight, head_before)
    keys = model.state_dict().keys()
    assert "backbone.layers.0.parametrizations.weight.original" in keys and "backbone.layers.0.weight" not in keys


def test_sn_include_selects_layer_kinds_and_head_is_normalised_by_default():
    torch.manual_seed(0)
    model = apply_spectral_norm(build_model("small_cnn", in_channels=1, num_classes=3, width=4), include=("linear",))
    assert not any(hasattr(m, "parametrizations") for m in model.modules() if isinstance(m, nn.Conv2d))
    _spin(model)
    model.eval()
    assert abs(_top_singular_value(model.head.weight) - 1) < 1e-2


@pytest.mark.parametrize("kwargs", [{"include": ("bn",)}, {"include": ()}, {"n_power_iterations": 0},
                                    {"exclude_head": True}])
def test_sn_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        apply_spectral_norm(nn.Sequential(nn.Linear(2, 2)), **kwargs)


# ------------------------------------------------------------------------------------------------ SWA


def _set(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return _params(model)


def test_swa_averages_snapshots_and_finalize_recomputes_bn():
    model = _model()
    swa = SwaAverager(model)
    snaps = []
    for seed in (10, 11, 12):
        snaps.append(_set(model, seed))
        swa.update(model)
    assert swa.n_averaged == 3
    mean = {n: (snaps[0][n] + snaps[1][n] + snaps[2][n]) / 3 for n in snaps[0]}
    for n, p in swa.averaged.module.named_parameters():
        torch.testing.assert_close(p.detach(), mean[n], rtol=1e-12, atol=1e-14)

    batches = [_batch(6, seed)[0] for seed in (20, 21, 22)]
    model.eval()
    assert swa.finalize(model, batches) is model
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), mean[n], rtol=1e-12, atol=1e-14)
    # BN after the averaged first layer: cumulative average of the per-batch mean / unbiased variance.
    feats = [x @ mean["0.weight"].T + mean["0.bias"] for x in batches]
    bn = model[1]
    torch.testing.assert_close(bn.running_mean, sum(f.mean(0) for f in feats) / 3, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(bn.running_var, sum(f.var(0, unbiased=True) for f in feats) / 3,
                               rtol=1e-12, atol=1e-14)
    assert int(bn.num_batches_tracked) == 3 and bn.momentum == 0.1 and not model.training


def test_swa_state_dict_round_trip_continues_the_average():
    model = _model()
    swa = SwaAverager(model)
    for seed in (10, 11):
        _set(model, seed)
        swa.update(model)
    other = SwaAverager(_model(5))
    other.load_state_dict(swa.state_dict())
    assert other.n_averaged == 2
    _set(model, 12)
    swa.update(model)
    other.update(model)
    for p, q in zip(swa.averaged.parameters(), other.averaged.parameters(), strict=True):
        assert torch.equal(p, q)
    assert other.n_averaged == 3


def test_swa_rejects_bad_use():
    swa = SwaAverager(_model())
    with pytest.raises(ValueError):
        swa.finalize(_model(), [_batch()[0]])  # nothing averaged yet
    swa.update(_model())
    with pytest.raises(ValueError):
        swa.finalize(_model(), [])
    with pytest.raises(ValueError):
        swa.update(nn.Sequential(nn.Linear(3, 5)))


@pytest.mark.parametrize("epoch, total, fraction, inside", [
    (149, 200, 0.75, False), (150, 200, 0.75, True), (199, 200, 0.75, True),
    (6, 10, 0.75, False), (7, 10, 0.75, True),
    (28, 100, 0.29, False), (29, 100, 0.29, True),  # 0.29 * 100 = 28.999... in binary
    (0, 5, 0.0, True), (0, 1, 0.99, True),
])
def test_swa_window_boundaries(epoch, total, fraction, inside):
    assert swa_window(epoch, total, fraction) is inside
    assert math.floor(0.29 * 100) == 28  # the representation error the tolerance is there for


@pytest.mark.parametrize("args", [(200, 200, 0.75), (-1, 10, 0.75), (0, 0, 0.5), (0, 10, 1.0), (0, 10, -0.1)])
def test_swa_window_rejects_bad_input(args):
    with pytest.raises(ValueError):
        swa_window(*args)
