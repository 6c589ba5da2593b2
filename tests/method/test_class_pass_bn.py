"""``class_conditional_loss(class_pass_bn="batch")``: the per-class passes of the paper form normalise
BatchNorm with the clean pass's whole-batch statistics. Checked by value and gradient against an
independent computation (the network written out by hand, its class passes normalised with the clean
pass's statistics), against the clean loss at ``eps = 0`` (value and gradient), and for untouched running
statistics."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ccsam.method import class_conditional_loss, select_parameters


class TinyBnNet(nn.Module):
    """conv -> BN -> ReLU -> conv -> BN -> ReLU -> pool -> linear head (``backbone`` / ``head``)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()),
            nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU()),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def _batch() -> tuple[TinyBnNet, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = TinyBnNet().double().train()
    for bn in (model.backbone[0][1], model.backbone[1][1]):  # non-trivial affine parameters
        nn.init.uniform_(bn.weight, 0.5, 1.5)
        nn.init.uniform_(bn.bias, -0.2, 0.2)
    x = torch.randn(9, 1, 5, 5, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 2])  # class 2 has one row: its own statistics would be one image's
    return model, x, y, torch.tensor([500.0, 50.0, 5.0])


def _manual_forward(p: dict[str, torch.Tensor], x: torch.Tensor, stats: list | None = None):
    """TinyBnNet written out: each BatchNorm normalises with ``stats`` (mean, var) when given, else with
    its input's batch statistics (train mode), which it returns, in the graph."""
    used = []
    h = x
    for i in range(2):
        h = F.conv2d(h, p[f"backbone.{i}.0.weight"], p[f"backbone.{i}.0.bias"], padding=1)
        mean, var = stats[i] if stats else (h.mean((0, 2, 3)), h.var((0, 2, 3), unbiased=False))
        used.append((mean, var))
        h = (h - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + 1e-5)
        h = torch.relu(h * p[f"backbone.{i}.1.weight"].view(1, -1, 1, 1) + p[f"backbone.{i}.1.bias"].view(1, -1, 1, 1))
    return F.linear(h.mean((2, 3)), p["head.weight"], p["head.bias"]), used


def _reference(model: TinyBnNet, x, y, counts, params, noise_scale: float, flat_ratio: float) -> torch.Tensor:
    """The same objective written out: the clean train-mode pass (its batch statistics kept, in the graph);
    per class, its gradient, the closed-form radius by hand, then a pass of the class's rows at w + eps_c
    that normalises with the clean pass's statistics."""
    named = dict(model.named_parameters())
    names = {id(p): n for n, p in named.items()}
    logits, clean_stats = _manual_forward(named, x)
    per_sample = F.cross_entropy(logits, y, reduction="none")
    theta = torch.sqrt(sum((p.detach() ** 2).sum() for p in params)) + 1e-12
    k = sum(p.numel() for p in params)
    rows, row_labels = [], []
    for c in y.unique().tolist():
        idx = (y == c).nonzero().flatten()
        moved = dict(named)
        if noise_scale > 0:
            grads = torch.autograd.grad(per_sample[idx].mean(), params, retain_graph=True)
            g = torch.sqrt(sum((gr ** 2).sum() for gr in grads))
            radius = noise_scale * k ** 0.25 * torch.sqrt(theta / (2 * g)) * max(float(counts[c]) - 1, 1.0) ** -0.25
            moved.update({names[id(p)]: p + (radius / g) * gr for p, gr in zip(params, grads, strict=True)})
        rows.append(_manual_forward(moved, x[idx], clean_stats)[0])
        row_labels.append(y[idx])
    perturbed = F.cross_entropy(torch.cat(rows), torch.cat(row_labels))
    return (1 - flat_ratio) * per_sample.mean() + flat_ratio * perturbed


@pytest.mark.parametrize(("scope", "k"), [("last_k", 1), ("last_k", 2), ("all", 1)])
def test_batch_statistics_class_passes_match_an_independent_computation_by_value_and_gradient(
    scope: str, k: int
) -> None:
    model, x, y, counts = _batch()
    ref_model = copy.deepcopy(model)
    params, ref_params = select_parameters(model, scope, k), select_parameters(ref_model, scope, k)
    loss = class_conditional_loss(model, x, y, counts, params=params, noise_scale=0.05, flat_ratio=0.6,
                                  class_pass_bn="batch")
    ref = _reference(ref_model, x, y, counts, ref_params, noise_scale=0.05, flat_ratio=0.6)
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-12)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    ref_grads = torch.autograd.grad(ref, list(ref_model.parameters()))
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-11)


def test_at_zero_radius_batch_statistics_reproduce_the_clean_loss_by_value_and_gradient() -> None:
    model, x, y, counts = _batch()
    params = select_parameters(model, "last_k", 2)
    clean = F.cross_entropy(model(x), y)
    clean_grads = torch.autograd.grad(clean, list(model.parameters()))
    batch = class_conditional_loss(model, x, y, counts, params=params, noise_scale=0.0, flat_ratio=1.0,
                                   class_pass_bn="batch")
    torch.testing.assert_close(batch, clean, rtol=1e-10, atol=1e-12)
    for g, r in zip(torch.autograd.grad(batch, list(model.parameters())), clean_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-11)
    rows = class_conditional_loss(model, x, y, counts, params=params, noise_scale=0.0, flat_ratio=1.0)
    assert abs(float((rows - clean).detach())) > 1e-3  # each class normalised with its own rows: another network


def test_batch_statistics_class_passes_leave_running_statistics_as_the_clean_pass_sets_them() -> None:
    model, x, y, counts = _batch()
    clean_only = copy.deepcopy(model)
    clean_only(x)
    class_conditional_loss(model, x, y, counts, params=select_parameters(model, "all"), noise_scale=0.05,
                           flat_ratio=0.5, class_pass_bn="batch")
    for bn, ref in zip(
        (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)),
        (m for m in clean_only.modules() if isinstance(m, nn.BatchNorm2d)), strict=True,
    ):
        torch.testing.assert_close(bn.running_mean, ref.running_mean)
        torch.testing.assert_close(bn.running_var, ref.running_var)
        assert bn.num_batches_tracked == ref.num_batches_tracked
        assert "forward" not in vars(bn)  # the layer's own forward is back
    with pytest.raises(ValueError, match="class_pass_bn must be"):
        class_conditional_loss(model, x, y, counts, params=select_parameters(model, "all"), noise_scale=0.05,
                               flat_ratio=0.5, class_pass_bn="global")  # type: ignore[arg-type]


def test_the_engine_passes_stage1_class_pass_bn_to_the_class_passes(tmp_path, monkeypatch) -> None:
    from conftest import synthetic_overrides

    from ccsam.config import resolve_config
    from ccsam.training import objectives
    from ccsam.training.run_dir import RunDir
    from ccsam.training.trainer import Trainer

    seen: list[str] = []
    real = objectives.class_conditional_loss

    def spy(*args, **kwargs):
        seen.append(kwargs["class_pass_bn"])
        return real(*args, **kwargs)

    monkeypatch.setattr(objectives, "class_conditional_loss", spy)
    cfg = resolve_config("fmnist-lt-ccsam", synthetic_overrides(**{
        "stage1.perturb_scope": "last_k", "stage1.class_pass_bn": "batch", "stage1.epochs": 1, "stage2.epochs": 0,
        "stage1.milestones": "[]",
    }))
    Trainer(cfg, RunDir.create(tmp_path / "run", cfg, ["test"]), progress=False).fit()
    assert seen and set(seen) == {"batch"}


def test_layers_without_running_statistics_are_recorded_and_a_layer_run_twice_is_an_error() -> None:
    from ccsam.models.bn import normalised_with, recorded_batch_statistics

    x = torch.randn(6, 3, 4, 4, dtype=torch.float64)
    stateless = nn.BatchNorm2d(3, track_running_stats=False).double().eval()  # normalises with the batch's
    with recorded_batch_statistics(stateless) as stats:
        out = stateless(x)
    assert list(stats) == [stateless]
    with normalised_with(stats):
        torch.testing.assert_close(stateless(x), out)  # the same statistics, the same output
    assert "forward" not in vars(stateless)

    twice = nn.BatchNorm2d(3).double().train()
    with pytest.raises(RuntimeError, match="ran twice in one forward"), recorded_batch_statistics(twice):
        twice(twice(x))
    assert "forward" not in vars(twice)


def test_flat_loss_sees_the_perturbed_rows_in_batch_order():
    """The class passes run class by class; ``flat_loss`` gets their logits back in batch order. At
    ``eps = 0`` with the batch's statistics they are the clean logits, so a mixup loss of them (which pairs
    row i with the label of another row) equals the clean mixup loss in value and gradient."""
    model, x, y, counts = _batch()
    y = y[torch.tensor([8, 0, 5, 1, 6, 2, 3, 7, 4])]  # classes interleaved: class order != batch order
    y_b = y.roll(4)
    lam = 0.7

    def mixup(logits: torch.Tensor) -> torch.Tensor:
        return lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y_b)

    params = select_parameters(model, "last_k", 1)
    loss = class_conditional_loss(model, x, y, counts, params=params, noise_scale=0.0, flat_ratio=1.0,
                                  class_pass_bn="batch", flat_loss=mixup)
    clean = mixup(model(x))
    torch.testing.assert_close(loss, clean)
    got = torch.autograd.grad(loss, list(model.parameters()))
    want = torch.autograd.grad(clean, list(model.parameters()))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)
