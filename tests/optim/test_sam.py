"""SAM / ASAM against the update written out in the test (Foret et al. 2021; davda54/sam contract)."""

from __future__ import annotations

import contextlib
import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ccsam.models.bn import bn_stats_frozen, disable_running_stats, enable_running_stats
from ccsam.optim.base import SharpnessOptimizer
from ccsam.optim.sam import SAM, maybe_no_sync


def _model(dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)).to(dtype)


def _batch(dtype: torch.dtype = torch.float64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(8, 3, generator=gen, dtype=dtype), torch.randint(0, 4, (8,), generator=gen)


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def _grad_at(model: nn.Module, w: dict[str, torch.Tensor], x, y) -> dict[str, torch.Tensor]:
    """Oracle: dL/dw at ``w`` by autograd on a functional call (no optimizer involved)."""
    w = {n: t.detach().clone().requires_grad_() for n, t in w.items()}
    grads = torch.autograd.grad(F.cross_entropy(functional_call(model, w, (x,)), y), list(w.values()))
    return dict(zip(w, grads, strict=False))


def _sam_gradient(model, w, x, y, rho):
    """g2 = grad L(w + rho g1 / ||g1||) with g1 = grad L(w)."""
    g1 = _grad_at(model, w, x, y)
    norm = torch.sqrt(sum((g**2).sum() for g in g1.values()))
    return _grad_at(model, {n: w[n] + rho * g1[n] / norm for n in w}, x, y)


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _sam_step(model, opt, x, y, *, frozen_bn: bool = False) -> None:
    _loss(model, x, y).backward()
    opt.first_step(zero_grad=True)
    with bn_stats_frozen(model) if frozen_bn else contextlib.nullcontext():
        _loss(model, x, y).backward()
    opt.second_step(zero_grad=True)


def test_one_sam_step_equals_the_update_written_out():
    model, (x, y) = _model(), _batch()
    rho, lr = 0.05, 0.1
    w = _params(model)
    g2 = _sam_gradient(model, w, x, y, rho)
    expected = {n: w[n] - lr * g2[n] for n in w}
    opt = SAM(model.parameters(), torch.optim.SGD, rho=rho, lr=lr)
    _sam_step(model, opt, x, y)
    for n, p in model.named_parameters():
        assert torch.allclose(p, expected[n], rtol=1e-12, atol=1e-14), n
    # The perturbation matters: g2 is not the gradient at w.
    assert not torch.allclose(g2["0.weight"], _grad_at(model, w, x, y)["0.weight"])


def test_sam_with_momentum_and_weight_decay_equals_sgd_stepped_with_the_perturbed_gradient():
    model, (x, y) = _model(), _batch()
    kwargs = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True}
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, **kwargs)
    reference = _model()
    ref_opt = torch.optim.SGD(reference.parameters(), **kwargs)
    for _ in range(3):
        g2 = _sam_gradient(reference, _params(reference), x, y, 0.1)
        for n, p in reference.named_parameters():
            p.grad = g2[n]
        ref_opt.step()
        _sam_step(model, opt, x, y)
    for p, q in zip(model.parameters(), reference.parameters(), strict=False):
        assert torch.allclose(p, q, rtol=1e-12, atol=1e-14)


class _RecordingSGD(torch.optim.SGD):
    """Base optimizer that records the weights it is asked to update."""

    def step(self, closure=None):
        self.seen = [p.detach().clone() for g in self.param_groups for p in g["params"]]
        return super().step(closure)


def test_second_step_restores_the_weights_bit_exactly_before_the_base_step():
    model, (x, y) = _model(torch.float32), _batch(torch.float32)
    w = [p.detach().clone() for p in model.parameters()]
    opt = SAM(model.parameters(), _RecordingSGD, rho=0.5, lr=0.1)
    _loss(model, x, y).backward()
    opt.first_step(zero_grad=True)
    perturbed = [p.detach().clone() for p in model.parameters()]
    _loss(model, x, y).backward()
    opt.second_step()
    assert all(torch.equal(a, b) for a, b in zip(opt.base_optimizer.seen, w, strict=False))
    # Undoing the move by subtraction would not be exact here, so the test can tell the two apart.
    assert not all(torch.equal(q - (q - a), a) for a, q in zip(w, perturbed, strict=False))


def test_rho_zero_reproduces_the_base_optimizer_exactly():
    model, reference, (x, y) = _model(), _model(), _batch()
    kwargs = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3}
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.0, **kwargs)
    ref_opt = torch.optim.SGD(reference.parameters(), **kwargs)
    for _ in range(3):
        _sam_step(model, opt, x, y)
        _loss(reference, x, y).backward()
        ref_opt.step()
        ref_opt.zero_grad()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), reference.parameters(), strict=False))


def test_step_with_closure_equals_first_and_second_step():
    a, b, (x, y) = _model(), _model(), _batch()
    opt_a = SAM(a.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    opt_b = SAM(b.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)

    def closure():
        loss = _loss(b, x, y)
        loss.backward()
        return loss

    for _ in range(2):
        _sam_step(a, opt_a, x, y)
        _loss(b, x, y).backward()
        with torch.no_grad():  # step enables grad for the closure itself
            loss = opt_b.step(closure)
        opt_b.zero_grad()
        assert loss.requires_grad
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=False))


def test_state_dict_round_trip_keeps_momentum_and_relinks_param_groups():
    model, (x, y) = _model(), _batch()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9)
    for _ in range(2):
        _sam_step(model, opt, x, y)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    clone = copy.deepcopy(model)
    restored = SAM(clone.parameters(), torch.optim.SGD, rho=0.3, lr=0.5, momentum=0.9)
    restored.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    assert restored.base_optimizer.param_groups is restored.param_groups
    assert restored.state is restored.base_optimizer.state
    assert restored.param_groups[0]["rho"] == 0.1 and restored.param_groups[0]["lr"] == 0.1
    for p, q in zip(model.parameters(), clone.parameters(), strict=False):
        assert torch.equal(opt.state[p]["momentum_buffer"], restored.state[q]["momentum_buffer"])
    restored.param_groups[0]["lr"] = 0.05  # an LR adapter writes once; the base optimizer sees it
    assert restored.base_optimizer.param_groups[0]["lr"] == 0.05
    opt.param_groups[0]["lr"] = 0.05
    _sam_step(model, opt, x, y)
    _sam_step(clone, restored, x, y)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), clone.parameters(), strict=False))


def test_asam_perturbation_lies_on_the_t_w_sphere_along_t_w_squared_g():
    model, (x, y) = _model(), _batch()
    rho, eta = 0.5, 0.01
    w = _params(model)
    g = _grad_at(model, w, x, y)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=rho, adaptive=True, eta=eta, lr=0.1)
    _loss(model, x, y).backward()
    opt.first_step()
    delta = {n: p.detach() - w[n] for n, p in model.named_parameters()}
    t = {n: w[n].abs() + eta for n in w}
    sphere = torch.sqrt(sum(((delta[n] / t[n]) ** 2).sum() for n in w))
    assert torch.allclose(sphere, torch.tensor(rho, dtype=torch.float64))
    norm_tg = torch.sqrt(sum(((t[n] * g[n]) ** 2).sum() for n in w))
    for n in w:
        assert torch.allclose(delta[n], rho * t[n] ** 2 * g[n] / norm_tg, rtol=1e-10, atol=1e-15)


def test_per_group_rho_shares_one_global_norm():
    model, (x, y) = _model(), _batch()
    first, second = list(model[0].parameters()), list(model[2].parameters())
    opt = SAM([{"params": first, "rho": 0.1}, {"params": second, "rho": 0.2}], torch.optim.SGD, lr=0.1)
    w = [p.detach().clone() for p in model.parameters()]
    _loss(model, x, y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    opt.first_step()
    for p, w0, g, rho in zip(model.parameters(), w, grads, [0.1, 0.1, 0.2, 0.2], strict=False):
        assert torch.allclose(p - w0, rho * g / norm, rtol=1e-10, atol=1e-16)


def _bn_model(momentum: float | None) -> nn.Module:
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(6, momentum=momentum)
    return nn.Sequential(nn.Linear(3, 6), bn, nn.ReLU(), nn.Linear(6, 4)).double()


@pytest.mark.parametrize("momentum", [0.1, None])
def test_bn_running_stats_are_updated_once_per_sam_step(momentum):
    x, y = _batch()
    reference = _bn_model(momentum)
    reference(x)  # one forward at w: what the buffers should hold afterwards
    expected = {n: b.clone() for n, b in reference.named_buffers()}
    for frozen, should_match in [(True, True), (False, False)]:
        model = _bn_model(momentum)
        opt = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1)
        _sam_step(model, opt, x, y, frozen_bn=frozen)
        matches = all(torch.equal(b, expected[n]) for n, b in model.named_buffers())
        assert matches == should_match
    assert model[1].track_running_stats


def test_frozen_bn_normalises_like_train_mode_and_flags_are_restored():
    x, _ = _batch()
    model, reference = _bn_model(0.1), _bn_model(0.1)
    reference[1].track_running_stats = True
    disable_running_stats(model)
    disable_running_stats(model)  # idempotent: the saved flag stays True
    assert torch.equal(model(x), reference(x))
    assert torch.equal(model[1].running_mean, torch.zeros(6, dtype=torch.float64))
    enable_running_stats(model)
    assert model[1].track_running_stats


@pytest.mark.parametrize("clip_value", [None, 0.02])
def test_fp16_grad_scaler_path_equals_the_unscaled_path(clip_value):
    # Clipping needs the true gradients: scaler.unscale_(opt.base_optimizer) first (value clipping is
    # not scale-invariant, so clipping still-scaled gradients would give a different update).
    x, y = _batch(torch.float32)
    results = []
    for scaler in (torch.amp.GradScaler("cpu", init_scale=2.0**12), None):
        model = _model(torch.float32)
        opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.5, momentum=0.9)
        scale = scaler.scale if scaler is not None else (lambda t: t)
        for _ in range(2):
            with torch.autocast("cpu", dtype=torch.float16):
                scale(_loss(model, x, y)).backward()
            opt.first_step(zero_grad=True)
            with torch.autocast("cpu", dtype=torch.float16):
                scale(_loss(model, x, y)).backward()
            if clip_value is not None:
                if scaler is not None:
                    scaler.unscale_(opt.base_optimizer)
                else:
                    assert max(float(p.grad.abs().max()) for p in model.parameters()) > clip_value
                nn.utils.clip_grad_value_(model.parameters(), clip_value)
            opt.second_step(zero_grad=True, grad_scaler=scaler)
            if scaler is not None:
                scaler.update()
        results.append([p.detach() for p in model.parameters()])
    assert all(torch.isfinite(p).all() for p in results[0])
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(*results, strict=False))


def test_fp16_overflow_gives_no_perturbation_and_the_scaler_skips_the_step():
    model, (x, y) = _model(torch.float32), _batch(torch.float32)
    w = [p.detach().clone() for p in model.parameters()]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)  # overflows fp16 gradients
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    with torch.autocast("cpu", dtype=torch.float16):
        scaler.scale(_loss(model, x, y)).backward()
    opt.first_step(zero_grad=True)
    assert all(torch.equal(p, a) for p, a in zip(model.parameters(), w, strict=False))  # eps = 0, never NaN weights
    with torch.autocast("cpu", dtype=torch.float16):
        scaler.scale(_loss(model, x, y)).backward()
    opt.second_step(zero_grad=True, grad_scaler=scaler)
    scaler.update()
    assert all(torch.equal(p, a) for p, a in zip(model.parameters(), w, strict=False))
    assert scaler.get_scale() == 2.0**39


def test_bf16_autocast_sam_stays_finite_and_close_to_fp32():
    x, y = _batch(torch.float32)
    runs = []
    for ctx in (lambda: torch.autocast("cpu", dtype=torch.bfloat16), contextlib.nullcontext):
        model = _model(torch.float32)
        opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
        for _ in range(3):
            with ctx():
                _loss(model, x, y).backward()
            opt.first_step(zero_grad=True)
            with ctx():
                _loss(model, x, y).backward()
            opt.second_step(zero_grad=True)
        runs.append([p.detach() for p in model.parameters()])
    assert all(torch.isfinite(p).all() for p in runs[0])
    assert all(torch.allclose(a, b, atol=2e-2) for a, b in zip(*runs, strict=False))


def test_contract_errors_and_protocol():
    model, (x, y) = _model(), _batch()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1)
    assert isinstance(opt, SharpnessOptimizer)
    with pytest.raises(ValueError):
        SAM(model.parameters(), torch.optim.SGD, rho=-1.0, lr=0.1)
    with pytest.raises(ValueError):
        SAM([{"params": list(model.parameters()), "eta": -1.0}], torch.optim.SGD, adaptive=True, lr=0.1)
    with pytest.raises(ValueError):
        opt.step()
    with pytest.raises(RuntimeError):
        opt.second_step()
    _loss(model, x, y).backward()
    opt.first_step()
    with pytest.raises(RuntimeError):
        opt.first_step()


def test_added_param_group_gets_both_defaults_and_is_shared():
    model = _model()
    opt = SAM(model[0].parameters(), torch.optim.SGD, rho=0.2, lr=0.1, momentum=0.9)
    opt.add_param_group({"params": list(model[2].parameters()), "rho": 0.0})
    group = opt.base_optimizer.param_groups[1]
    assert group is opt.param_groups[1] and len(opt.param_groups) == 2
    assert group["rho"] == 0.0 and group["adaptive"] is False
    assert group["momentum"] == 0.9 and "nesterov" in group


def test_maybe_no_sync_uses_the_wrappers_no_sync():
    entered = []

    class FakeDDP(nn.Module):
        @contextlib.contextmanager
        def no_sync(self):
            entered.append(True)
            yield

    with maybe_no_sync(FakeDDP()):
        pass
    with maybe_no_sync(nn.Linear(2, 2)):
        pass
    assert entered == [True]
