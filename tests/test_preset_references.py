"""The decoupled baselines' presets (cRT, MiSLAS, GCL) against their reference code's own settings.

Each row is a value read from the reference repository (file and line in the comment), not from the
spec: where the two disagree (cRT's epoch length, MiSLAS's shift learning, GCL's stage-2 rate) the
preset follows the code and its header says why. A preset edit that drifts from the reference fails here.
"""

from __future__ import annotations

import math

import pytest

from ccsam.config import resolve_config
from ccsam.config.schema import RunConfig
from ccsam.optim.schedules import cosine_factor

# facebookresearch/classifier-balancing: config/<set>/cls_crt.yaml lines 1, 8 (cosine to 0), 15 (lr, wd),
# 34 (epochs), 37 (ClassAwareSampler, num_samples_cls 4); run_networks.py 57-63, 265 (N / batch steps per
# epoch), 247-249 (model.train() on every network, the fixed backbone included).
CRT = [
    ("imagenet-lt-crt", 10, 0.2, 5e-4, 512),
    ("places-lt-crt", 10, 0.1, 5e-4, 256),
    ("inat2018-crt", 30, 0.2, 1e-4, 512),
]

# dvlab-research/MiSLAS: config/<set>/*_stage2_mislas.yaml (shift_bn, lr_factor, lr 0.1, weight_decay,
# num_epochs, smooth_head / smooth_tail); train_stage2.py 241-244, 452-462 (classifier at lr_factor * lr,
# LWS at lr); datasets/sampler.py 131 (ClassAwareSampler, 4 per class visit);
# train_stage2.py 241-244, 309-313, 331-335 (shift_bn = model.train() under no_grad, BN affine not optimised).
MISLAS = [
    ("cifar10-lt-mislas", False, 0.5, 2e-4, 0.3, 0.0),
    ("cifar100-lt-mislas", True, 0.2, 2e-4, 0.4, 0.1),
    ("imagenet-lt-mislas", True, 0.05, 5e-4, 0.3, 0.0),
    ("places-lt-mislas", True, 0.05, 5e-4, 0.4, 0.1),
    ("inat2018-mislas", True, 0.05, 1e-4, 0.3, 0.0),
]

# Keke921/GCLLoss: cifar_train_classifier.py 43 (30 epochs), 51 (--lr 0.1), 55 (wd 2e-4), 466-476
# (classifier group at 0.1 * 0.1 * lr * (1 + cos)); Places-LT/pla_train_classifier.py 55 (wd 5e-4),
# 172-173 (m 0.1, s 15, noise_mul 1.0, gamma 1), pla_train_backbone.py 233 (s 30, noise_mul 1.0, m 0).
GCL = [
    ("cifar10-lt-gcl", 2e-4, {"scale": 30.0, "noise_mul": 0.5, "margin": 0.0},
     {"scale": 20.0, "noise_mul": 0.5, "margin": 0.1, "gamma": 1.0}),
    ("cifar100-lt-gcl", 2e-4, {"scale": 30.0, "noise_mul": 0.5, "margin": 0.0},
     {"scale": 20.0, "noise_mul": 0.5, "margin": 0.1, "gamma": 1.0}),
    ("places-lt-gcl", 5e-4, {"scale": 30.0, "noise_mul": 1.0, "margin": 0.0},
     {"scale": 15.0, "noise_mul": 1.0, "margin": 0.1, "gamma": 1.0}),
]


def _stage2_rate_at(cfg: RunConfig, epoch: float) -> float:
    """ccsam's stage-2 rate at ``epoch`` (of ``stage2.epochs``), as its cosine schedule computes it."""
    assert cfg.stage2.schedule == "cosine" and cfg.stage2.warmup_epochs == 0
    return cfg.stage2.lr * cosine_factor(epoch / cfg.stage2.epochs, warmup_progress=0.0, warmup_start_factor=1.0)


@pytest.mark.parametrize(("preset", "epochs", "lr", "weight_decay", "batch"), CRT)
def test_crt_presets_follow_kangs_configs(preset, epochs, lr, weight_decay, batch):
    cfg = resolve_config(preset)
    s2 = cfg.stage2
    assert cfg.batch_size_of(2) == batch  # training_opt.batch_size
    assert (s2.epochs, s2.lr, s2.weight_decay, s2.schedule, s2.warmup_epochs) == (epochs, lr, weight_decay, "cosine", 0)
    assert (s2.sampler, s2.class_visit_samples) == ("class_aware", 4)
    assert s2.epoch_samples == "dataset"  # N / batch steps per epoch, not max_c n_c * C samples
    assert s2.bn_mode == "train" and not s2.train_bn
    assert s2.method.name == "retrain" and s2.method.reinit_head


@pytest.mark.parametrize(("preset", "shift_bn", "lr_factor", "weight_decay", "eps_head", "eps_tail"), MISLAS)
def test_mislas_presets_follow_its_stage_2_configs(preset, shift_bn, lr_factor, weight_decay, eps_head, eps_tail):
    s2 = resolve_config(preset).stage2
    assert not s2.train_bn  # MiSLAS optimises the classifier and LWS only: shift_bn moves BN statistics
    assert s2.bn_mode == ("train" if shift_bn else "eval")
    assert (s2.epochs, s2.lr, s2.weight_decay, s2.schedule) == (10, 0.1, weight_decay, "cosine")
    assert (s2.sampler, s2.class_visit_samples, s2.epoch_samples) == ("class_aware", 4, "dataset")
    if not preset.startswith("cifar"):  # the large-scale configs' stage-2 batch_size (CIFAR: 128 in both)
        assert resolve_config(preset).batch_size_of(2) == 256
    method = s2.method
    assert method.name == "retrain" and not method.reinit_head  # the stage-1 classifier goes on training
    assert (method.lws, method.head_lr_factor) == (True, lr_factor)
    assert method.loss.options == {"eps_head": eps_head, "eps_tail": eps_tail}


@pytest.mark.parametrize(("preset", "weight_decay", "stage1_loss", "stage2_loss"), GCL)
def test_gcl_presets_train_stage_2_at_the_rate_gcl_uses(preset, weight_decay, stage1_loss, stage2_loss):
    cfg = resolve_config(preset)
    reference_lr = 0.1  # --lr; the classifier's group gets 0.1 * 0.1 * lr * (1 + cos(pi t / T))
    for t in (0, 7.5, 15, 29):
        assert _stage2_rate_at(cfg, t) == pytest.approx(0.1 * 0.1 * reference_lr * (1 + math.cos(math.pi * t / 30)))
    assert (cfg.stage2.epochs, cfg.stage2.weight_decay, cfg.stage2.bn_mode) == (30, weight_decay, "eval")
    assert cfg.stage1.loss.options == stage1_loss and cfg.stage2.method.loss.options == stage2_loss
    assert cfg.eval.logit_scale == stage2_loss["scale"]
    if preset == "places-lt-gcl":
        assert cfg.batch_size_of(2) == 512  # pla_train_classifier.py 48
        assert cfg.stage2.mixup_alpha == 0.0  # its stage-2 script mixes the labels only (forwards `input`)
    else:  # CIFAR: -b 64 in both scripts, mixup (alpha 1) in both
        assert (cfg.batch_size_of(1), cfg.batch_size_of(2)) == (64, 64)
        assert (cfg.stage1.mixup_alpha, cfg.stage2.mixup_alpha) == (1.0, 1.0)


def test_every_large_scale_gcl_preset_uses_the_same_stage_2_rate():
    rates = {resolve_config(f"{family}-gcl").stage2.lr for family in ("imagenet-lt", "places-lt", "inat2018")}
    assert rates == {0.002}


def test_colour_jitter_follows_each_reference():
    assert resolve_config("inat2018-mislas").data.color_jitter == 0.4  # MiSLAS datasets/ina2018.py 96
    for preset in ("inat2018-ldam-drw", "inat2018-sam"):  # Saddle-LongTail datasets/ina2018.py 95
        assert resolve_config(preset).data.color_jitter == 0.4
    assert resolve_config("inat2018-ce").data.color_jitter is None  # cRT / CC-SAM: none (the set's default)
    assert resolve_config("places-lt-gcl").data.color_jitter == 0.0  # GCL Places-LT/datasets/places.py 96


def test_places_mislas_and_gcl_train_a_fresh_last_bottleneck_on_a_frozen_resnet152():
    # MiSLAS models/resnet_places.py 334-358 + train_stage1.py 126, 288-290; GCL pla_train_backbone.py 151-154
    for preset in ("places-lt-mislas", "places-lt-gcl"):
        model = resolve_config(preset).model
        assert (model.arch, model.reinit, model.train_from) == ("resnet152", ("layer4.2",), "layer4.2")
    assert resolve_config("places-lt-ce").model.train_from is None  # the common protocol fine-tunes all


def test_places_balanced_softmax_is_the_decoupled_recipe_of_its_code():
    # BalancedMetaSoftmax-Classification config/Places_LT/decouple_balanced_softmax.yaml
    cfg = resolve_config("places-lt-balanced-softmax")
    s2 = cfg.stage2
    assert cfg.stage1.loss.name == "ce" and s2.method.name == "retrain" and s2.method.reinit_head
    assert s2.method.loss.name == "balanced_softmax" and (s2.sampler, cfg.batch_size_of(2)) == ("instance", 256)
    assert (s2.epochs, s2.lr, s2.weight_decay, s2.schedule, s2.bn_mode) == (10, 0.02, 5e-4, "cosine", "train")


@pytest.mark.parametrize(("preset", "milestones", "values"), [
    ("imagenet-lt-sam", (10, 120, 150), (0.05, 0.1, 0.5, 0.5)),  # Saddle-LongTail run.sh 34, 90 -> 180 epochs
    ("inat2018-sam", (11, 133, 167), (0.05, 0.1, 0.1, 0.2)),  # run.sh 26, 90 -> 200 epochs
])
def test_large_scale_sam_presets_step_rho_as_saddle_longtail(preset, milestones, values):
    cfg = resolve_config(preset)
    optimizer = cfg.stage1.optimizer
    assert (optimizer.rho_milestones, optimizer.rho_values) == (milestones, values)
    # its epochs 1-5 / 6-60 / 61-75 / 76-90 of 90, scaled: the same fractions of the stage
    for reference_epoch, value in ((1, values[0]), (30, values[1]), (70, values[2]), (90, values[3])):
        epoch = round((reference_epoch - 0.5) / 90 * cfg.stage1.epochs)
        assert optimizer.rho_at(epoch) == value
