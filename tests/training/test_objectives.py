"""The per-method objectives reduce to plain cross-entropy where the method says they must."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ccsam.data.augment import MixedBatch
from ccsam.functional import class_conditional_logits
from ccsam.models import build_model
from ccsam.training.objectives import (
    CcsamStage1Objective,
    CcsamStage2Objective,
    ErmObjective,
    mixup_cross_entropy,
)

COUNTS = torch.tensor([50, 20, 8, 3])


def _model_and_batch(lam: float = 1.0):
    torch.manual_seed(0)
    model = build_model("small_cnn", in_channels=1, num_classes=4, width=4).double()
    x = torch.randn(12, 1, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3, 0, 1, 0, 3])
    y_b = y.roll(3)
    return model, MixedBatch(x, y, y if lam == 1.0 else y_b, lam)


def test_mixup_cross_entropy_equals_soft_target_cross_entropy():
    model, batch = _model_and_batch(lam=0.3)
    logits = model(batch.inputs)
    expected = -(batch.soft_targets(4) * F.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(mixup_cross_entropy(logits, batch), expected)


def test_ccsam_stage1_with_zero_noise_equals_erm_value_and_gradient():
    model, batch = _model_and_batch(lam=0.6)
    erm = ErmObjective()(model, batch).loss
    g_erm = torch.autograd.grad(erm, list(model.parameters()))
    ccsam = CcsamStage1Objective(COUNTS, flat_ratio=0.0, noise_scale=1.0)(model, batch).loss
    torch.testing.assert_close(ccsam, erm)
    # noise 0: perturbed logits are the clean ones, so the loss is (1-b) mixup CE + b CE(., y_a)
    beta = 0.4
    mixed = CcsamStage1Objective(COUNTS, flat_ratio=beta, noise_scale=0.0)(model, batch).loss
    logits = model(batch.inputs)
    expected = (1 - beta) * mixup_cross_entropy(logits, batch) + beta * F.cross_entropy(logits, batch.targets_a)
    torch.testing.assert_close(mixed, expected)
    assert all(g is not None for g in g_erm)


def test_ccsam_stage1_uses_the_class_conditional_logits():
    model, batch = _model_and_batch()
    beta, s = 0.5, 0.05
    loss = CcsamStage1Objective(COUNTS, flat_ratio=beta, noise_scale=s)(model, batch).loss
    features = model.features(batch.inputs)
    logits = model.head(features)
    perturbed = class_conditional_logits(features, model.head.weight, model.head.bias, batch.targets_a, COUNTS,
                                         noise_scale=s)
    expected = (1 - beta) * F.cross_entropy(logits, batch.targets_a) + beta * F.cross_entropy(
        perturbed, batch.targets_a
    )
    torch.testing.assert_close(loss, expected)
    assert not torch.allclose(perturbed, logits)  # the radius is visible at this scale


def test_stage2_alpha_zero_is_clean_ce_and_backbone_gets_no_gradient():
    model, batch = _model_and_batch()
    out = CcsamStage2Objective(COUNTS, alpha=0.0, div=2.0, step=1.0)(model, batch)
    torch.testing.assert_close(out.loss, F.cross_entropy(model(batch.inputs), batch.targets_a))
    out = CcsamStage2Objective(COUNTS, alpha=1.0, div=2.0, step=1.0)(model, batch)
    out.loss.backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0


def _grads(loss: torch.Tensor, model: torch.nn.Module) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, list(model.parameters())))


def test_flat_targets_mixup_scores_the_perturbed_logits_with_the_mixup_loss_value_and_gradient():
    model, batch = _model_and_batch(lam=0.6)
    beta, s = 0.4, 0.05
    loss = CcsamStage1Objective(COUNTS, flat_ratio=beta, noise_scale=s, flat_targets="mixup")(model, batch).loss
    features = model.features(batch.inputs)
    logits = model.head(features)
    perturbed = class_conditional_logits(features, model.head.weight, model.head.bias, batch.targets_a, COUNTS,
                                         noise_scale=s, soft_targets=batch.soft_targets(4))
    lam = batch.lam
    expected = (1 - beta) * mixup_cross_entropy(logits, batch) + beta * (
        lam * F.cross_entropy(perturbed, batch.targets_a) + (1 - lam) * F.cross_entropy(perturbed, batch.targets_b)
    )
    torch.testing.assert_close(loss, expected)
    for got, want in zip(_grads(loss, model), _grads(expected, model), strict=True):
        torch.testing.assert_close(got, want)


def test_without_perturbation_flat_targets_mixup_is_erm_and_the_released_y_a_is_not():
    """stage1.radius=none: the class-conditional term at the clean logits. With the mixup targets the
    objective is ERM's mixup loss in value and gradient; with the released code's y_a it is not."""
    model, batch = _model_and_batch(lam=0.6)
    erm = ErmObjective()(model, batch).loss
    mixed = CcsamStage1Objective(COUNTS, 0.4, 1.0, radius_mode="none", flat_targets="mixup")(model, batch).loss
    torch.testing.assert_close(mixed, erm)
    for got, want in zip(_grads(mixed, model), _grads(erm, model), strict=True):
        torch.testing.assert_close(got, want)
    released = CcsamStage1Objective(COUNTS, 0.4, 1.0, radius_mode="none")(model, batch).loss
    assert (released - erm).abs().item() > 1e-3
