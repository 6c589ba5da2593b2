"""Radius-mode ablations of ccsam.functional and the scoped (paper-faithful) CC-SAM loss.

Oracles are plain loops written here: one ``torch.autograd.grad`` per class, the perturbation built by
the spec's formula, and (for the scoped loss) the parameters moved by hand and restored.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ccsam.functional import RADIUS_MODES, class_conditional_logits, random_head_directions
from ccsam.losses import BalancedSoftmaxLoss, CrossEntropyLoss, DeferredReweighting
from ccsam.method.scoped import class_conditional_loss, select_parameters
from ccsam.models import Classifier, build_model

TOL = {"rtol": 1e-8, "atol": 1e-10}
DIM = 12


# ----------------------------------------------------------------------------- helpers


def make_batch(num_classes: int, seed: int, *, bias: bool = True, batch: int = 24):
    """float64 head batch with a singleton class, a repeated class and an absent class."""
    gen = torch.Generator().manual_seed(seed)
    rest = torch.randint(2, num_classes - 1, (batch - 4,), generator=gen)
    y = torch.cat([torch.tensor([0, 1, 1, 1]), rest])[torch.randperm(batch, generator=gen)]
    f = torch.randn(batch, DIM, generator=gen, dtype=torch.float64).requires_grad_()
    w = (0.5 * torch.randn(num_classes, DIM, generator=gen, dtype=torch.float64)).requires_grad_()
    b = (0.3 * torch.randn(num_classes, generator=gen, dtype=torch.float64)).requires_grad_() if bias else None
    counts = torch.randint(1, 500, (num_classes,), generator=gen)
    counts[0] = 1
    present = torch.bincount(y, minlength=num_classes)
    assert (present == 1).any() and (present == 0).any() and (present > 1).any()
    return f, w, b, y, counts


def mixup_targets(y: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + 1)
    lam = float(torch.rand((), generator=gen))
    y_b = y[torch.randperm(y.shape[0], generator=gen)]
    one_hot = F.one_hot(y, num_classes).double()
    return lam * one_hot + (1 - lam) * F.one_hot(y_b, num_classes).double()


def head_leaves(f, w, b):
    return [f, w] if b is None else [f, w, b]


def probe_grads(out: torch.Tensor, tensors, seed: int):
    probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return torch.autograd.grad((out * probe).sum(), tensors)


def spec_radius(theta, grad_norm, n, k, s):
    """rho_c = s k^(1/4) sqrt(||theta|| / (2 ||g||)) max(n - 1, 1)^(-1/4)  (spec 1.1 / 1.3)."""
    return s * k**0.25 * torch.sqrt(theta / (2 * torch.clamp(grad_norm, min=1e-12))) * max(n - 1.0, 1.0) ** -0.25


def hand_directions(gen_state, classes, num_classes, dim, bias):
    """The documented mag_only draw: randn((P, C*d [+ C])) in ascending class order, unit per tensor."""
    gen = torch.Generator()
    gen.set_state(gen_state)
    size = num_classes * dim
    draw = torch.randn((len(classes), size + (num_classes if bias else 0)), generator=gen, dtype=torch.float64)
    out = {}
    for row, c in enumerate(classes):
        u_w = draw[row, :size].reshape(num_classes, dim)
        dirs = [u_w / u_w.norm()]
        if bias:
            dirs.append(draw[row, size:] / draw[row, size:].norm())
        out[c] = dirs
    return out


def ref_mode_logits(f, w, b, y, counts, mode, *, noise_scale=0.0, rho=1.0, directions=None, soft=None):
    """Per-class loop: eps_{c,t} = radius * direction per tensor t, evaluated with F.linear."""
    num_classes = w.shape[0]
    q = F.one_hot(y, num_classes).double() if soft is None else soft
    params = [w] if b is None else [w, b]
    k = sum(p.numel() for p in params)
    theta = torch.sqrt(sum(p.detach().square().sum() for p in params)) + 1e-12
    pieces, order = [], []
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().squeeze(1)
        loss_c = (-(q[idx] * F.log_softmax(F.linear(f[idx], w, b), dim=1)).sum(1)).mean()
        grads = torch.autograd.grad(loss_c, params, retain_graph=True)
        eps = []
        for t, g in enumerate(grads):
            gn = torch.clamp(g.norm(), min=1e-12)
            if mode == "dir_only":
                eps.append(rho * g.detach() / gn)
            elif mode == "ccsam":
                eps.append((spec_radius(theta, gn, float(counts[c]), k, noise_scale) * g / gn).detach())
            else:  # mag_only
                eps.append((spec_radius(theta, gn, float(counts[c]), k, noise_scale) * directions[c][t]).detach())
        pieces.append(F.linear(f[idx], w + eps[0], None if b is None else b + eps[1]))
        order.append(idx)
    order_t = torch.cat(order)
    inverse = torch.empty_like(order_t)
    inverse[order_t] = torch.arange(y.shape[0])
    return torch.cat(pieces)[inverse]


def recover_single_class_eps(f, w, b, out):
    """Solve [f, 1] X = out - clean for X = [eps_W^T; eps_b] (one class, B > d + 1 generic rows)."""
    design = torch.cat([f.detach(), torch.ones(f.shape[0], 1, dtype=f.dtype)], dim=1)
    delta = (out - F.linear(f, w, b)).detach()
    sol = torch.linalg.lstsq(design, delta).solution
    return sol[:-1].T, sol[-1]


def single_class_batch(seed: int):
    gen = torch.Generator().manual_seed(seed)
    f = torch.randn(40, DIM, generator=gen, dtype=torch.float64)
    w = torch.randn(5, DIM, generator=gen, dtype=torch.float64).requires_grad_()
    b = torch.randn(5, generator=gen, dtype=torch.float64).requires_grad_()
    y = torch.full((40,), 3)
    counts = torch.tensor([500, 400, 300, 37, 10])
    return f, w, b, y, counts


# ----------------------------------------------------------------------------- radius modes


@pytest.mark.parametrize("mixup", [False, True], ids=["hard", "mixup"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize(("mode", "rho"), [("dir_only", 1.0), ("dir_only", 0.05), ("ccsam", 1.0)])
def test_direction_modes_match_loop(mode, rho, bias, mixup):
    f, w, b, y, counts = make_batch(9, seed=5, bias=bias)
    q = mixup_targets(y, 9, seed=5) if mixup else None
    out = class_conditional_logits(f, w, b, y, counts, noise_scale=0.3, soft_targets=q, radius_mode=mode, rho=rho)
    ref = ref_mode_logits(f, w, b, y, counts, mode, noise_scale=0.3, rho=rho, soft=q)
    torch.testing.assert_close(out, ref, **TOL)
    assert (out - F.linear(f, w, b)).abs().max() > 1e-3  # the perturbation is not negligible
    pairs = zip(probe_grads(out, head_leaves(f, w, b), 2),
                probe_grads(ref, head_leaves(f, w, b), 2), strict=True)
    for got, want in pairs:
        torch.testing.assert_close(got, want, **TOL)


def test_dir_only_has_norm_rho_along_class_gradient():
    f, w, b, y, counts = single_class_batch(1)
    (g_w, g_b) = torch.autograd.grad(F.cross_entropy(F.linear(f, w, b), y), [w, b])
    for rho in (1.0, 0.05, 2.5):  # 0.05: plain per-class SAM is dir_only with SAM's radius
        out = class_conditional_logits(f, w, b, y, counts, noise_scale=0.0, radius_mode="dir_only", rho=rho)
        eps_w, eps_b = recover_single_class_eps(f, w, b, out)
        torch.testing.assert_close(eps_w, rho * g_w / g_w.norm(), **TOL)
        torch.testing.assert_close(eps_b, rho * g_b / g_b.norm(), **TOL)
    # noise_scale and counts do not enter.
    a = class_conditional_logits(f, w, b, y, counts, noise_scale=0.0, radius_mode="dir_only", rho=0.05)
    c = class_conditional_logits(f, w, b, y, counts * 7, noise_scale=3.0, radius_mode="dir_only", rho=0.05)
    assert torch.equal(a, c)


@pytest.mark.parametrize("mixup", [False, True], ids=["hard", "mixup"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_mag_only_matches_loop_with_same_directions(bias, mixup):
    num_classes = 9
    f, w, b, y, counts = make_batch(num_classes, seed=8, bias=bias)
    q = mixup_targets(y, num_classes, seed=8) if mixup else None
    gen = torch.Generator().manual_seed(1234)
    dirs = hand_directions(gen.get_state(), torch.unique(y).tolist(), num_classes, DIM, bias)
    out = class_conditional_logits(
        f, w, b, y, counts, noise_scale=0.3, soft_targets=q, radius_mode="mag_only", generator=gen
    )
    ref = ref_mode_logits(f, w, b, y, counts, "mag_only", noise_scale=0.3, directions=dirs, soft=q)
    torch.testing.assert_close(out, ref, **TOL)
    pairs = zip(probe_grads(out, head_leaves(f, w, b), 3),
                probe_grads(ref, head_leaves(f, w, b), 3), strict=True)
    for got, want in pairs:
        torch.testing.assert_close(got, want, **TOL)
    # The generator was consumed: a second call draws new directions.
    again = class_conditional_logits(
        f, w, b, y, counts, noise_scale=0.3, soft_targets=q, radius_mode="mag_only", generator=gen
    )
    assert (again - out).abs().max() > 1e-6


def test_mag_only_has_ccsam_radius_and_random_direction():
    f, w, b, y, counts = single_class_batch(2)
    s, n, k = 0.2, 37, w.numel() + b.numel()
    theta = torch.sqrt(w.detach().square().sum() + b.detach().square().sum()) + 1e-12
    (g_w, g_b) = torch.autograd.grad(F.cross_entropy(F.linear(f, w, b), y), [w, b])
    rho_w, rho_b = spec_radius(theta, g_w.norm(), n, k, s), spec_radius(theta, g_b.norm(), n, k, s)

    out = class_conditional_logits(
        f, w, b, y, counts, noise_scale=s, radius_mode="mag_only", generator=torch.Generator().manual_seed(0)
    )
    eps_w, eps_b = recover_single_class_eps(f, w, b, out)
    torch.testing.assert_close(eps_w.norm(), rho_w, **TOL)
    torch.testing.assert_close(eps_b.norm(), rho_b, **TOL)
    cos = (eps_w * g_w).sum() / (eps_w.norm() * g_w.norm())
    assert abs(float(cos)) < 0.5  # not along the class gradient
    # The same recovery on the ccsam mode gives the same radius along g (so the check above can fail).
    ccsam = class_conditional_logits(f, w, b, y, counts, noise_scale=s)
    c_w, _ = recover_single_class_eps(f, w, b, ccsam)
    torch.testing.assert_close(c_w, rho_w * g_w / g_w.norm(), **TOL)


def test_random_head_directions_draw_order_and_norms():
    u_w, u_b = random_head_directions(3, 4, 5, bias=True, generator=torch.Generator().manual_seed(9),
                                      dtype=torch.float64)
    draw = torch.randn((3, 24), generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    torch.testing.assert_close(u_w[1], (draw[1, :20] / draw[1, :20].norm()).reshape(4, 5), **TOL)
    torch.testing.assert_close(u_b[2], draw[2, 20:] / draw[2, 20:].norm(), **TOL)
    u_w, u_b = random_head_directions(2, 4, 5, bias=False, generator=torch.Generator().manual_seed(9))
    assert u_b is None and u_w.shape == (2, 4, 5)
    torch.testing.assert_close(u_w.flatten(1).norm(dim=1), torch.ones(2))


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_none_mode_is_clean_logits(bias):
    f, w, b, y, counts = make_batch(7, seed=4, bias=bias)
    out = class_conditional_logits(f, w, b, y, counts, noise_scale=1.0, radius_mode="none")
    clean = F.linear(f, w, b)
    assert torch.equal(out, clean)
    pairs = zip(probe_grads(out, head_leaves(f, w, b), 1),
                probe_grads(clean, head_leaves(f, w, b), 1), strict=True)
    for got, want in pairs:
        assert torch.equal(got, want)


def test_ccsam_mode_is_the_default_and_ignores_ablation_arguments():
    f, w, b, y, counts = make_batch(7, seed=6)
    default = class_conditional_logits(f, w, b, y, counts, noise_scale=0.5)
    named = class_conditional_logits(
        f, w, b, y, counts, noise_scale=0.5, radius_mode="ccsam", rho=9.0, generator=torch.Generator()
    )
    assert torch.equal(default, named)
    assert set(RADIUS_MODES) == {"ccsam", "dir_only", "mag_only", "none"}  # fixed_rho was dir_only renamed


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"radius_mode": "magnitude"}, "radius_mode"),
        ({"radius_mode": "mag_only"}, "generator"),
        ({"radius_mode": "mag_only", "generator": 3}, "generator"),
        ({"radius_mode": "dir_only", "rho": -1.0}, "rho"),
        ({"radius_mode": "dir_only", "rho": float("nan")}, "rho"),
        ({"radius_mode": "fixed_rho", "rho": 0.05}, "removed.*'dir_only'"),
    ],
)
def test_bad_radius_arguments_raise(kwargs, word):
    f, w, b, y, counts = make_batch(7, seed=1)
    with pytest.raises(ValueError, match=word):
        class_conditional_logits(f, w, b, y, counts, noise_scale=0.1, **kwargs)


# ----------------------------------------------------------------------------- scoped loss


def init_(model: nn.Module, seed: int) -> nn.Module:
    """float64 copy with deterministic weights (no global RNG)."""
    model = model.double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.7 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    return model


def mlp(head_bias: bool = True, seed: int = 0) -> Classifier:
    backbone = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6), nn.Tanh())
    return init_(Classifier(backbone, 6, 4, bias=head_bias), seed)


def scoped_batch(seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(14, 5, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 3, 0, 1, 0, 3, 0])  # class 2 absent
    counts = torch.tensor([300, 40, 9, 2])
    return x, y, counts


def ref_scoped(model, x, y, counts, params, s, beta, soft=None):
    """Loss value and gradients w.r.t. all parameters: per class, move params by hand and restore."""
    every = list(model.parameters())
    logits = model(x)
    per_sample = F.cross_entropy(logits, y if soft is None else soft, reduction="none")
    clean = (1 - beta) * per_sample.mean()
    grads = list(torch.autograd.grad(clean, every, retain_graph=True))
    value = clean.detach()
    k = sum(p.numel() for p in params)
    theta = torch.sqrt(sum(p.detach().square().sum() for p in params)) + 1e-12
    eps = {}
    for c in torch.unique(y).tolist():  # all class gradients before any parameter moves
        g = torch.autograd.grad(per_sample[y == c].mean(), params, retain_graph=True)
        gn = torch.sqrt(sum(gi.square().sum() for gi in g))
        radius = spec_radius(theta, gn, float(counts[c]), k, s)
        eps[c] = [radius * gi / gn for gi in g]
    for c, eps_c in eps.items():
        saved = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, e in zip(params, eps_c, strict=False):
                p.add_(e)
        loss_c = beta * F.cross_entropy(model(x[y == c]), y[y == c], reduction="sum") / y.shape[0]
        for i, gi in enumerate(torch.autograd.grad(loss_c, every)):
            grads[i] = grads[i] + gi
        value = value + loss_c.detach()
        with torch.no_grad():
            for p, old in zip(params, saved, strict=False):
                p.copy_(old)
    return value, grads


@pytest.mark.parametrize("mixup", [False, True], ids=["hard", "mixup"])
def test_scoped_head_equals_closed_form(mixup):
    model = mlp(head_bias=False, seed=1)
    x, y, counts = scoped_batch(1)
    soft = mixup_targets(y, 4, seed=3) if mixup else None
    s, beta = 0.5, 0.4
    every = list(model.parameters())
    loss = class_conditional_loss(model, x, y, counts, params=[model.head.weight], noise_scale=s,
                                  flat_ratio=beta, soft_targets=soft)

    z = model.features(x)
    logits = model.head(z)
    clean = F.cross_entropy(logits, y if soft is None else soft)
    pert = class_conditional_logits(z, model.head.weight, None, y, counts, noise_scale=s, soft_targets=soft)
    want = (1 - beta) * clean + beta * F.cross_entropy(pert, y)
    assert abs(float((want - clean).detach())) > 1e-3  # the perturbation matters
    torch.testing.assert_close(loss, want, **TOL)
    for got, ref in zip(torch.autograd.grad(loss, every), torch.autograd.grad(want, every), strict=False):
        torch.testing.assert_close(got, ref, **TOL)


@pytest.mark.parametrize("mixup", [False, True], ids=["hard", "mixup"])
@pytest.mark.parametrize("scope", ["all", "last_k", "head"])
def test_scoped_matches_move_and_restore_loop(scope, mixup):
    model = mlp(seed=2)
    x, y, counts = scoped_batch(2)
    soft = mixup_targets(y, 4, seed=4) if mixup else None
    params = select_parameters(model, scope, k=1)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    loss = class_conditional_loss(model, x, y, counts, params=params, noise_scale=0.4, flat_ratio=0.6,
                                  soft_targets=soft)
    got = torch.autograd.grad(loss, list(model.parameters()))
    assert all(torch.equal(before[n], t) for n, t in model.state_dict().items())  # nothing moved

    value, want = ref_scoped(model, x, y, counts, params, 0.4, 0.6, soft)
    torch.testing.assert_close(loss.detach(), value, **TOL)
    for g, r in zip(got, want, strict=False):
        torch.testing.assert_close(g, r, **TOL)
    clean = F.cross_entropy(model(x), y if soft is None else soft)
    assert abs(float((loss - clean).detach())) > 1e-3  # not vacuous


def _criteria(counts: torch.Tensor) -> dict[str, nn.Module]:
    drw = DeferredReweighting(CrossEntropyLoss(), counts, start_epoch=0, beta=0.999)
    drw.set_epoch(1)  # effective-number weights from 1.0 (class 0) to 3.4 (class 3): far from uniform
    return {"balanced_softmax": BalancedSoftmaxLoss(counts), "ce_drw": drw}


@pytest.mark.parametrize("name", ["balanced_softmax", "ce_drw"])
@pytest.mark.parametrize("scope", ["all", "last_k"])
def test_scoped_criterion_sees_the_whole_batch(scope, name):
    """A non-CE criterion gives the clean and the perturbed loss, over every row at once.

    Reference without functional_call: one deep copy of the model per class, moved by eps_c (from the
    class's CE gradient), its class rows forwarded, the perturbed logits put back in batch order and the
    criterion applied once; the gradient w.r.t. w is the clean graph's plus each copy's (eps_c is a
    constant, so d/dw = d/d(w + eps_c)). Per-class sums of a class-weighted mean would lose the weights
    (each class's weighted mean is its plain mean), which the DRW case checks.
    """
    model = mlp(seed=6)
    x, y, counts = scoped_batch(6)
    criterion = _criteria(counts)[name].double()
    params = select_parameters(model, scope, k=1)
    s, beta = 0.4, 0.6
    loss = class_conditional_loss(model, x, y, counts, params=params, noise_scale=s, flat_ratio=beta,
                                  criterion=criterion, clean_loss=lambda logits: criterion(logits, y))
    every = list(model.parameters())
    got = torch.autograd.grad(loss, every)

    logits = model(x)
    per_sample = F.cross_entropy(logits, y, reduction="none")
    k = sum(p.numel() for p in params)
    theta = torch.sqrt(sum(p.detach().square().sum() for p in params)) + 1e-12
    positions = {id(p): i for i, p in enumerate(every)}
    perturbed = torch.zeros_like(logits)
    copies = []
    for c in torch.unique(y).tolist():
        g = torch.autograd.grad(per_sample[y == c].mean(), params, retain_graph=True)
        gn = torch.sqrt(sum(gi.square().sum() for gi in g))
        radius = spec_radius(theta, gn, float(counts[c]), k, s)
        twin = copy.deepcopy(model)
        twin_params = list(twin.parameters())
        with torch.no_grad():
            for p, gi in zip(params, g, strict=True):
                twin_params[positions[id(p)]].add_(radius * gi / gn)
        perturbed = perturbed.index_put((torch.nonzero(y == c).squeeze(1),), twin(x[y == c]))
        copies.append(twin_params)
    want = (1 - beta) * criterion(logits, y) + beta * criterion(perturbed, y)
    flat_inputs = every + [p for twin_params in copies for p in twin_params]
    all_grads = torch.autograd.grad(want, flat_inputs, allow_unused=True)
    n = len(every)
    for i, g in enumerate(got):
        ref = sum(all_grads[i + j * n] if all_grads[i + j * n] is not None else 0.0
                  for j in range(1 + len(copies)))
        torch.testing.assert_close(g, ref, **TOL)
    torch.testing.assert_close(loss.detach(), want.detach(), **TOL)
    plain = class_conditional_loss(model, x, y, counts, params=params, noise_scale=s, flat_ratio=beta)
    assert abs(float((plain - loss).detach())) > 1e-3  # the criterion changes the loss: not a CE test in disguise


@pytest.mark.parametrize("scope", ["head", "last_k", "all"])
def test_scoped_zero_noise_is_plain_ce(scope):
    model = mlp(seed=3)
    x, y, counts = scoped_batch(3)
    every = list(model.parameters())
    loss = class_conditional_loss(model, x, y, counts, params=select_parameters(model, scope, 2),
                                  noise_scale=0.0, flat_ratio=0.7)
    plain = F.cross_entropy(model(x), y)
    torch.testing.assert_close(loss, plain, rtol=1e-12, atol=1e-14)
    for g, r in zip(torch.autograd.grad(loss, every), torch.autograd.grad(plain, every), strict=False):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-14)
    only_clean = class_conditional_loss(model, x, y, counts, params=every, noise_scale=1.0, flat_ratio=0.0)
    torch.testing.assert_close(only_clean, plain, rtol=1e-14, atol=0)


def test_scoped_bn_statistics_frozen_for_class_passes():
    def bn_model():
        backbone = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU())
        return init_(Classifier(backbone, 6, 4), 5).train()

    x, y, counts = scoped_batch(5)  # every present class has >= 2 samples
    reference = bn_model()
    reference(x)
    for freeze, passes in ((True, 1), (False, 4)):
        model = bn_model()
        class_conditional_loss(model, x, y, counts, params=select_parameters(model, "all"), noise_scale=0.1,
                               flat_ratio=0.5, freeze_bn_stats=freeze)
        bn, ref_bn = model.backbone[1], reference.backbone[1]
        assert int(bn.num_batches_tracked) == passes and bn.track_running_stats
        if freeze:
            assert torch.equal(bn.running_mean, ref_bn.running_mean)
            assert torch.equal(bn.running_var, ref_bn.running_var)


def test_select_parameters_scopes():
    stage = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    backbone = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), stage, nn.Linear(4, 5))
    model = Classifier(backbone, 5, 2)
    a, _b1, b2, c, head = backbone[0], stage[0], stage[1], backbone[3], model.head

    def same(got, want):
        assert len(got) == len(want) and all(g is w for g, w in zip(got, want, strict=False))

    same(select_parameters(model, "head"), [head.weight, head.bias])
    same(select_parameters(model, "last_k", 1), [c.weight, c.bias, head.weight, head.bias])
    same(select_parameters(model, "last_k", 2), [b2.weight, b2.bias, c.weight, c.bias, head.weight, head.bias])
    same(select_parameters(model, "last_k", 4), list(model.parameters()))
    same(select_parameters(model, "all"), list(model.parameters()))
    a.weight.requires_grad_(False)
    a.bias.requires_grad_(False)
    same(select_parameters(model, "all"), list(model.parameters())[2:])
    with pytest.raises(ValueError, match="k = 4"):
        select_parameters(model, "last_k", 4)  # the frozen first layer no longer counts as a block
    with pytest.raises(ValueError, match="scope"):
        select_parameters(model, "last")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must"):
        select_parameters(model, "last_k", 0)

    resnet = build_model("resnet20", in_channels=3, num_classes=10)
    last_block = list(resnet.backbone.layer3[-1].parameters())
    same(select_parameters(resnet, "last_k", 1), last_block + [resnet.head.weight, resnet.head.bias])


def test_scoped_bad_inputs_raise():
    model = mlp(seed=4)
    x, y, counts = scoped_batch(4)
    good = {"params": [model.head.weight], "noise_scale": 0.1, "flat_ratio": 0.5}
    stranger = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    cases = [
        ({"params": [stranger]}, "parameter of model"),
        ({"params": []}, "params"),
        ({"params": [model.head.weight, model.head.weight]}, "twice"),
        ({"flat_ratio": 1.5}, "flat_ratio"),
        ({"noise_scale": -1.0}, "noise_scale"),
        ({"soft_targets": torch.ones(14, 3, dtype=torch.float64)}, "soft_targets"),
    ]
    for change, word in cases:
        with pytest.raises(ValueError, match=word):
            class_conditional_loss(model, x, y, counts, **{**good, **change})
    with pytest.raises(ValueError, match="labels"):
        class_conditional_loss(model, x, y + 1, counts, **good)
    with pytest.raises(ValueError, match="class_counts"):
        class_conditional_loss(model, x, y, counts[:3], **good)
