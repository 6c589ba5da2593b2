"""Each stage option reaches the objective or update the engine runs (built from the config, not by hand)."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import ccsam.method.scoped as scoped
from ccsam.config import resolve_config
from ccsam.config.choices import CcsamRadius
from ccsam.functional import class_conditional_logits
from ccsam.models.bn import bn_stats_frozen
from ccsam.training.objectives import ErmObjective
from ccsam.training.run_dir import RunDir
from ccsam.training.stages import build_objective
from ccsam.training.trainer import Trainer
from ccsam.training.updates import GradientPenaltyUpdate, ModelPerturbationUpdate


def _stage1(tmp_path, tiny_overrides, **extra):
    """The engine's stage 1 of a tiny run, and a batch of its own loader (no mixup)."""
    cfg = resolve_config("digits-lt", tiny_overrides(**{"stage1.mixup_alpha": 0.0, **extra}))
    trainer = Trainer(cfg, RunDir.create(tmp_path / "run", cfg, []), progress=False)
    stage = trainer.enter_stage(1)
    return trainer, stage, next(iter(stage.loader.epoch()))


def test_radius_mode_none_gives_exactly_the_erm_loss(tmp_path, tiny_overrides):
    trainer, stage, batch = _stage1(
        tmp_path,
        tiny_overrides,
        stage1__method="ccsam",
        stage1__radius="none",
        stage1__flat_ratio=0.5,
        stage1__noise_scale=10.0,
    )
    objective = build_objective(trainer.cfg, stage, 0, trainer.counts)
    erm = ErmObjective(stage.criterion)(trainer.model, batch).loss
    assert torch.equal(objective(trainer.model, batch).loss, erm)
    # the same run with the CC-SAM radius is visibly another objective: the option reached it
    ccsam = trainer.cfg.model_copy(
        update={"stage1": trainer.cfg.stage1.model_copy(update={"radius": CcsamRadius()})}
    )
    assert not torch.allclose(
        build_objective(ccsam, stage, 0, trainer.counts)(trainer.model, batch).loss, erm
    )


def test_perturb_scope_last_k_moves_only_the_last_blocks_and_the_head(tmp_path, tiny_overrides, monkeypatch):
    trainer, stage, batch = _stage1(
        tmp_path,
        tiny_overrides,
        stage1__method="ccsam",
        stage1__perturb_scope="last_k",
        stage1__perturb_last_k=2,
        stage1__noise_scale=0.1,
    )
    moved: list[set[str]] = []
    real = scoped.functional_call

    def spy(model, params, args):
        moved.append(set(params))
        return real(model, params, args)

    monkeypatch.setattr(scoped, "functional_call", spy)
    build_objective(trainer.cfg, stage, 0, trainer.counts)(trainer.model, batch).loss.backward()
    # small_cnn's last two blocks with parameters are layers.8 (conv) and layers.9 (BatchNorm)
    expected = {
        "backbone.layers.8.weight",
        "backbone.layers.9.weight",
        "backbone.layers.9.bias",
        "head.weight",
        "head.bias",
    }
    assert moved and all(names == expected for names in moved)
    assert len(moved) == len(torch.unique(batch.targets_a))  # one perturbed pass per class in the batch


@pytest.mark.parametrize("tail_weight", [1.0, 2.0])
def test_imbsam_through_the_engine_equals_its_written_out_update(tmp_path, tiny_overrides, tail_weight):
    trainer, stage, _ = _stage1(
        tmp_path,
        tiny_overrides,
        stage1__method="erm",
        stage1__optimizer="imbsam",
        stage1__optimizer__tail_threshold=10,
        stage1__optimizer__rho=0.5,
        stage1__optimizer__tail_weight=tail_weight,
    )
    counts, cfg = trainer.counts, trainer.cfg.stage1
    tail_of = counts < 10
    batch = next(b for b in stage.loader.epoch() if 0 < int(tail_of[b.targets_a].sum()) < len(b.targets_a))
    model = trainer.model
    twin = copy.deepcopy(model)
    x, y = batch.inputs, batch.targets_a

    # written out (Zhou et al. 2023): g = grad L_head(w) + lambda grad L_tail(w + rho g_tail / ||g_tail||),
    # then SGD (lambda = tail_weight: 1 the paper, 2 the authors' code)
    names = [n for n, _ in twin.named_parameters()]
    params = list(twin.parameters())
    tail = tail_of[y]

    def parts(out):
        losses = F.cross_entropy(out, y, reduction="none")
        return losses[~tail].sum() / len(y), losses[tail].sum() / len(y)

    head_loss, tail_loss = parts(twin(x))
    g_head = torch.autograd.grad(head_loss, params, retain_graph=True)
    g_tail = torch.autograd.grad(tail_loss, params)
    norm = torch.sqrt(sum(g.square().sum() for g in g_tail))
    moved = {
        n: p + 0.5 * g / norm for n, p, g in zip(names, params, g_tail, strict=True)
    }  # eps: a constant
    with bn_stats_frozen(twin):
        g_perturbed = torch.autograd.grad(parts(functional_call(twin, moved, (x,)))[1], params)
    with torch.no_grad():
        expected = [
            p - cfg.lr * (gh + tail_weight * gp + cfg.weight_decay * p)  # first SGD step: momentum = d_p
            for p, gh, gp in zip(params, g_head, g_perturbed, strict=True)
        ]

    stage.update(model, ErmObjective(stage.criterion), batch, stage.optimizer, contextlib.nullcontext)
    for (name, p), want in zip(model.named_parameters(), expected, strict=True):
        torch.testing.assert_close(p.detach(), want, msg=name)


def test_flattening_options_reach_the_update(tmp_path, tiny_overrides):
    _, stage, _ = _stage1(
        tmp_path / "gp", tiny_overrides, stage1__flattening="gp", stage1__flattening__radius=0.07,
        stage1__flattening__alpha=0.6,
    )
    assert isinstance(stage.update, GradientPenaltyUpdate) and (stage.update.r, stage.update.a) == (0.07, 0.6)
    _, stage, _ = _stage1(
        tmp_path / "mp", tiny_overrides, stage1__flattening="mp", stage1__flattening__bound=0.02,
        stage1__flattening__copies=3,
    )
    update = stage.update
    assert isinstance(update, ModelPerturbationUpdate) and (update.bound, update.copies) == (0.02, 3)
    assert update.generator is stage.noise and "update_generator" in stage.state_dict()


def test_radius_ablations_reach_the_objective(tmp_path, tiny_overrides):
    trainer, stage, batch = _stage1(
        tmp_path,
        tiny_overrides,
        stage1__method="ccsam",
        stage1__radius="dir_only",
        stage1__radius__rho=0.3,
        stage1__flat_ratio=0.5,
    )
    model = trainer.model
    loss = build_objective(trainer.cfg, stage, 0, trainer.counts)(model, batch).loss
    features = model.features(batch.inputs)
    logits = model.head(features)
    perturbed = class_conditional_logits(
        features,
        model.head.weight,
        model.head.bias,
        batch.targets_a,
        trainer.counts,
        noise_scale=0.0,
        radius_mode="dir_only",
        rho=0.3,
    )
    expected = 0.5 * stage.criterion(logits, batch.targets_a) + 0.5 * stage.criterion(
        perturbed, batch.targets_a
    )
    torch.testing.assert_close(loss, expected)


def test_perturb_scope_all_evaluates_the_configured_loss(tmp_path, tiny_overrides):
    """stage1.loss reaches the paper-form (per-class pass) objective: the step's loss is the scoped loss
    with that criterion (clean and perturbed), not cross-entropy."""
    trainer, stage, batch = _stage1(
        tmp_path,
        tiny_overrides,
        stage1__method="ccsam",
        stage1__perturb_scope="all",
        stage1__flat_ratio=0.5,
        stage1__noise_scale=0.5,
        **{"stage1.loss.name": "balanced_softmax"},
    )
    model, counts = trainer.model, trainer.counts
    with bn_stats_frozen(model):
        got = build_objective(trainer.cfg, stage, 0, counts)(model, batch).loss
        kwargs = {"params": scoped.select_parameters(model, "all"), "noise_scale": 0.5, "flat_ratio": 0.5}
        want = scoped.class_conditional_loss(
            model, batch.inputs, batch.targets_a, counts, criterion=stage.criterion,
            clean_loss=lambda logits: stage.criterion(logits, batch.targets_a), **kwargs,
        )
        ce = scoped.class_conditional_loss(model, batch.inputs, batch.targets_a, counts, **kwargs)
    assert type(stage.criterion).__name__ == "BalancedSoftmaxLoss"
    torch.testing.assert_close(got, want)
    assert abs(float((got - ce).detach())) > 1e-3
