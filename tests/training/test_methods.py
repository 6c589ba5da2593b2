"""Every method preset's composition runs through the one engine, and each part does what it claims."""

from __future__ import annotations

import math
import re

import pytest
import torch

from ccsam.config import list_presets, resolve_config
from ccsam.data.memory_loader import eval_batches
from ccsam.evaluation import classification_report
from ccsam.evaluation.predict import predict
from ccsam.losses.logit_adjustment import posthoc_logit_adjustment
from ccsam.models.heads import LWSHead, tau_normalized_weight
from ccsam.optim.schedules import set_learning_rate
from ccsam.training.checkpoint import load_checkpoint
from ccsam.training.run_dir import RunDir
from ccsam.training.trainer import Trainer, train

FMNIST_METHODS = sorted(n for n, _ in list_presets() if n.startswith("fmnist-lt-"))
# The data / model / schedule part of a tiny run; the method part comes from the preset under test.
TINY = ["data.dataset=synthetic", "data.synthetic.num_classes=5", "data.synthetic.per_class_train=60",
        "data.synthetic.per_class_test=10", "data.n_max=40", "data.imbalance_ratio=10", "data.val_per_class=5",
        "data.batch_size=16", "data.crop_padding=1", "model.arch=small_cnn", "model.width=8", "device=cpu",
        "stage1.epochs=2", "stage1.warmup_epochs=0", "stage1.milestones=[1]", "eval.many_threshold=30",
        "eval.few_threshold=10"]


def _tiny(preset: str, *extra: str):
    if resolve_config(preset).stage1.optimizer.name == "imbsam":  # tail classes at this size
        extra = ("stage1.optimizer.tail_threshold=10", *extra)
    config = resolve_config(preset, TINY + list(extra))
    if config.stage2.epochs:
        config = resolve_config(preset, TINY + ["stage2.epochs=2", *extra])
    return config


@pytest.mark.parametrize("preset", FMNIST_METHODS)
def test_every_fmnist_method_preset_trains_end_to_end(preset, tmp_path):
    if "ldam" in preset:
        extra = ("stage1.loss.drw.start_epoch=1",)
    else:
        extra = ()
    config = _tiny(preset, *extra)
    results = train(config, RunDir.create(tmp_path / "run", config, []), progress=False)
    assert math.isfinite(results["test"]["nll"]) and 0.0 <= results["test"]["top1"] <= 1.0
    records = RunDir.open(tmp_path / "run").read_metrics()
    assert all(math.isfinite(r["loss"]) for r in records)


def test_crt_starts_stage2_from_a_fresh_head_and_keeps_the_backbone(tmp_path):
    config = _tiny("fmnist-lt-crt")
    trainer = Trainer(config, RunDir.create(tmp_path / "run", config, []), progress=False)
    trainer.fit(stop_at=config.stage1.epochs)
    stage1 = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    torch.manual_seed(123)
    trainer.enter_stage(2)
    assert not torch.equal(trainer.model.head.weight, stage1["head.weight"])  # re-initialised (cRT)
    trainer.fit()
    after = trainer.model.state_dict()
    assert all(torch.equal(stage1[k], after[k]) for k in stage1 if k.startswith("backbone."))  # eval BN, frozen


def test_lws_trains_only_the_per_class_scales(tmp_path):
    config = _tiny("fmnist-lt-crt", "stage2.method=lws")
    trainer = Trainer(config, RunDir.create(tmp_path / "run", config, []), progress=False)
    trainer.fit(stop_at=config.stage1.epochs)
    weight = trainer.model.head.weight.detach().clone()
    trainer.fit()
    head = trainer.model.head
    assert isinstance(head, LWSHead)
    assert [n for n, p in head.named_parameters() if p.requires_grad] == ["scales"]
    assert not torch.allclose(head.scales, torch.ones_like(head.scales))
    torch.testing.assert_close(head.weight, head.scales.detach()[:, None] * weight)
    # resume into stage 2 rebuilds the LWS head before loading its state
    resumed = train(config, RunDir.open(tmp_path / "run"), resume=True, progress=False)
    assert resumed["test"]["top1"] == pytest.approx(
        classification_report(predict(trainer.model, trainer.data.test, 64, trainer.data.mean, trainer.data.std),
                              trainer.data.test.labels, trainer.data.class_counts,
                              many_threshold=30, few_threshold=10)["top1"])


def test_stage2_train_bn_trains_batchnorm_but_not_convolutions(tmp_path):
    config = _tiny("fmnist-lt-mislas")  # the study's preset: stage2.train_bn=true
    trainer = Trainer(config, RunDir.create(tmp_path / "run", config, []), progress=False)
    trainer.fit(stop_at=config.stage1.epochs)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.fit()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p)}
    batch_norms = {f"backbone.{n}.{p}" for n, m in trainer.model.backbone.named_modules()
                   if isinstance(m, torch.nn.BatchNorm2d) for p in ("weight", "bias")}
    assert changed == batch_norms | {"head.weight", "head.bias"}


def test_mislas_joint_lws_trains_head_and_scales_at_their_own_rates(tmp_path):
    config = _tiny("fmnist-lt-mislas", "stage2.train_bn=false", "stage2.bn_mode=eval", "stage2.method.lws=true",
                   "stage2.method.head_lr_factor=0.25", "stage2.momentum=0", "stage2.weight_decay=0",
                   "stage2.schedule=constant")
    trainer = Trainer(config, RunDir.create(tmp_path / "run", config, []), progress=False)
    trainer.fit(stop_at=config.stage1.epochs)
    stage1_head = {k: v.clone() for k, v in trainer.model.head.state_dict().items()}
    stage = trainer.enter_stage(2)
    head = trainer.model.head
    assert isinstance(head, LWSHead) and head.train_linear
    assert {n for n, p in trainer.model.named_parameters() if p.requires_grad} == {
        "head.linear_weight", "head.linear_bias", "head.scales"}
    torch.testing.assert_close(head.linear_weight.detach(), stage1_head["weight"])  # MiSLAS keeps the head
    # one plain-SGD step from given gradients: the head moves at 0.25 * lr, the scales at lr
    params = [head.linear_weight, head.linear_bias, head.scales]
    before = [p.detach().clone() for p in params]
    grads = [torch.randn_like(p) for p in params]
    set_learning_rate(stage.optimizer, config.stage2.lr)
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    stage.optimizer.step()
    rates = [0.25 * config.stage2.lr] * 2 + [config.stage2.lr]
    for p, b, g, lr in zip(params, before, grads, rates, strict=True):
        torch.testing.assert_close(p.detach(), b - lr * g)
    # a run stopped in stage 2 resumes into the same joint head, lr factors included, to the same result
    whole = train(config, RunDir.create(tmp_path / "whole", config, []), progress=False)
    cut = Trainer(config, RunDir.create(tmp_path / "cut", config, []), progress=False)
    cut.fit(stop_at=config.stage1.epochs + 1)
    state = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert [g["lr_factor"] for g in state["optimizer"]["param_groups"]] == [0.25, 1.0]
    resumed = train(config, RunDir.open(tmp_path / "cut"), resume=True, progress=False)
    assert (resumed["test"]["top1"], resumed["test"]["nll"]) == (whole["test"]["top1"], whole["test"]["nll"])


def test_stage2_batch_size_sets_only_the_stage_2_batches(tmp_path):
    config = _tiny("fmnist-lt-crt", "stage2.batch_size=8")
    trainer = Trainer(config, RunDir.create(tmp_path / "run", config, []), progress=False)
    trainer.fit(stop_at=config.stage1.epochs)
    images = len(trainer.data.train)
    assert trainer.stage.loader.batch_size == 16 and len(trainer.stage.loader) == images // 16
    stage = trainer.enter_stage(2)
    assert stage.loader.batch_size == 8 and len(stage.loader) == images // 8
    trainer.fit()
    records = RunDir.open(tmp_path / "run").read_metrics()
    assert [r["images"] for r in records] == [images // 16 * 16] * 2 + [images // 8 * 8] * 2


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_stage2_mixup_mixes_only_the_stage_2_batches_it_is_set_for(tmp_path, alpha):
    config = _tiny("fmnist-lt-gcl", "stage1.mixup_alpha=0", f"stage2.mixup_alpha={alpha}")
    trainer = Trainer(config, RunDir.create(tmp_path / "run", config, []), progress=False)
    trainer.fit(stop_at=config.stage1.epochs)
    assert {batch.lam for batch in trainer.stage.loader.epoch()} == {1.0}  # stage 1: off
    stage = trainer.enter_stage(2)
    batches = list(stage.loader.epoch())
    lams = [batch.lam for batch in batches]
    if alpha:
        assert all(0.0 < lam < 1.0 for lam in lams) and any(
            not torch.equal(b.targets_a, b.targets_b) for b in batches)
    else:
        assert set(lams) == {1.0}
    results = trainer.fit()
    assert math.isfinite(results["test"]["nll"])


def test_stage2_mixup_is_refused_for_ccsams_stage_2():
    from ccsam.errors import ConfigError

    with pytest.raises(ConfigError, match="set stage2.mixup_alpha=0 with it"):
        resolve_config("fmnist-lt-ccsam", ["stage2.mixup_alpha=1"])


def test_train_from_freezes_the_backbone_prefix_and_its_batchnorm(tmp_path):
    # small_cnn: layers.0-3 (conv, BN, ReLU, pool) before layers.4; layers.8 re-initialised; a stage 2 that
    # trains BatchNorm (stage2.train_bn, bn_mode=train) leaves the prefix's alone too
    config = _tiny("fmnist-lt-mislas", "model.train_from=layers.4", "model.reinit=[layers.8]")
    assert config.stage2.train_bn and config.stage2.bn_mode == "train" and config.stage2.epochs
    torch.manual_seed(config.seed)
    trainer = Trainer(config, RunDir.create(tmp_path / "run", config, []), progress=False)
    model = trainer.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.fit()
    after = model.state_dict()
    frozen = {k for k in before if k.startswith(("backbone.layers.0.", "backbone.layers.1."))}
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)  # weights and running statistics
    moved = {k for k in before if k.startswith(("backbone.layers.4.", "backbone.layers.5.", "head."))}
    assert all(not torch.equal(before[k], after[k]) for k in moved if not k.endswith("num_batches_tracked"))
    assert not model.backbone.layers[1].training and model.backbone.layers[5].training is model.training
    # a resumed or re-evaluated run rebuilds the same frozen prefix: only layers.4 on train
    rebuilt = Trainer(config, RunDir.open(tmp_path / "run"), progress=False).model
    assert [n for n, p in rebuilt.backbone.named_parameters() if p.requires_grad][0] == "layers.4.weight"


def test_reinit_gives_the_named_modules_a_fresh_default_initialisation():
    from ccsam.config.schema import ModelConfig
    from ccsam.models import build_model
    from ccsam.training.assembly import reinitialise_and_freeze

    torch.manual_seed(0)
    model = build_model("small_cnn", in_channels=1, num_classes=5, width=8)
    with torch.no_grad():
        model.backbone.layers[9].running_mean.fill_(3.0)
    kept = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(7)
    reinitialise_and_freeze(model, ModelConfig(arch="small_cnn", reinit=("layers.8", "layers.9")))
    torch.manual_seed(7)
    fresh = torch.nn.Conv2d(model.backbone.layers[8].in_channels, model.backbone.layers[8].out_channels,
                            kernel_size=model.backbone.layers[8].kernel_size, padding=model.backbone.layers[8].padding,
                            bias=model.backbone.layers[8].bias is not None)
    torch.testing.assert_close(model.backbone.layers[8].weight, fresh.weight)  # a newly built layer's draw
    assert torch.equal(model.backbone.layers[9].running_mean, torch.zeros_like(kept["backbone.layers.9.running_mean"]))
    untouched = [k for k in kept if not k.startswith(("backbone.layers.8.", "backbone.layers.9."))]
    assert all(torch.equal(kept[k], model.state_dict()[k]) for k in untouched)


def test_sam_rho_schedule_sets_each_epochs_radius(tmp_path):
    steps = ("stage1.optimizer.rho_milestones=[1]", "stage1.optimizer.rho_values=[0.0,0.5]")
    scheduled = _tiny("fmnist-lt-sam", *steps)
    constant = _tiny("fmnist-lt-sam", "stage1.optimizer.rho=0.0")
    a = Trainer(scheduled, RunDir.create(tmp_path / "a", scheduled, []), progress=False)
    b = Trainer(constant, RunDir.create(tmp_path / "b", constant, []), progress=False)
    a.fit(stop_at=1)
    b.fit(stop_at=1)
    first = {k: v.clone() for k, v in a.model.state_dict().items()}
    assert all(torch.equal(first[k], v) for k, v in b.model.state_dict().items())  # epoch 0 at rho 0
    a.fit(stop_at=2)
    b.fit(stop_at=2)
    assert any(not torch.equal(a.model.state_dict()[k], v) for k, v in b.model.state_dict().items())
    assert [r["rho"] for r in RunDir.open(tmp_path / "a").read_metrics()] == [0.0, 0.5]
    assert all("rho" not in r for r in RunDir.open(tmp_path / "b").read_metrics())  # constant: not logged
    state = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    assert {g["rho"] for g in state["optimizer"]["param_groups"]} == {0.5}


def test_posthoc_logit_adjustment_and_tau_norm_are_applied_at_prediction(tmp_path):
    config = _tiny("fmnist-lt-posthoc-la", "eval.tau_norm=0.5")
    trainer = Trainer(config, RunDir.create(tmp_path / "run", config, []), progress=False)
    results = trainer.fit()
    model, data = trainer.model, trainer.data
    model.eval()
    with torch.no_grad():
        features = torch.cat([model.features(x) for x, _ in eval_batches(data.test, 64, data.mean, data.std)])
    w = tau_normalized_weight(model.head.weight, 0.5)
    logits = features @ w.T + model.head.bias
    logits = posthoc_logit_adjustment(logits, data.class_counts, 1.0)
    expected = classification_report(logits, data.test.labels, data.class_counts, many_threshold=30,
                                     few_threshold=10)
    assert results["test"]["top1"] == pytest.approx(expected["top1"])
    assert results["test"]["nll"] == pytest.approx(expected["nll"], rel=1e-5)


def test_sam_run_resumes_exactly(tmp_path):
    config = _tiny("fmnist-lt-sam", "stage1.epochs=3", "stage1.milestones=[2]")
    reference = train(config, RunDir.create(tmp_path / "a", config, []), progress=False)
    run = RunDir.create(tmp_path / "b", config, [])
    Trainer(config, run, progress=False).fit(stop_at=1)
    resumed = train(config, RunDir.open(run.path), resume=True, progress=False)
    assert resumed["test"] == reference["test"]
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    b = load_checkpoint(run.last_checkpoint)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_incompatible_compositions_are_config_errors():
    from ccsam.errors import ConfigError

    with pytest.raises(ConfigError, match="needs model.head=cosine"):
        resolve_config("fmnist-lt-ce", ["stage1.loss.name=ldam"])
    with pytest.raises(ConfigError, match="needs model.head=linear"):
        resolve_config("fmnist-lt-ldam-drw", ["stage1.method=ccsam"])
    with pytest.raises(ConfigError, match="no option"):
        resolve_config("fmnist-lt-ce", ["stage1.loss.options.margin=0.3"])


@pytest.mark.parametrize(
    ("preset", "overrides", "fragment"),
    [
        ("fmnist-lt-crt", ["stage2.init_from=best_val", "data.val_per_class=0"], "data.val_per_class=0"),
        ("fmnist-lt-crt", ["stage2.init_from=best_val", "stage1.swa=true"], "not stage-1 SWA's averaged weights"),
        ("fmnist-lt-crt", ["stage2.init_from=best_val", "stage1.epochs=0"], "but stage1.epochs=0"),
        ("fmnist-lt-crt", ["stage2.method=lws", "stage2.spectral_norm=true"], "but LWS scales it per class"),
        ("fmnist-lt-crt", ["stage2.method.lws=true", "stage2.spectral_norm=true"], "but LWS scales it per class"),
        ("fmnist-lt-crt", ["stage2.method.head_lr_factor=0.5"], "without stage2.method.lws=true set stage2.lr"),
        ("fmnist-lt-ce", ["model.train_from=layers.4", "stage1.swa=true"], "drop one of them"),
        ("fmnist-lt-sam", ["stage1.optimizer.rho_milestones=[5]"], "rho_values needs one more value"),
        ("fmnist-lt-sam", ["stage1.optimizer.rho_milestones=[5,3]", "stage1.optimizer.rho_values=[1,2,3]"],
         "rho_milestones must be increasing"),
        ("fmnist-lt-crt", ["stage2.batch_size=64", "stage2.epoch_samples=32"],
         "stage2.epoch_samples=32 is less than stage2.batch_size=64"),
        ("fmnist-lt-gcl", ["stage2.method.lws=true"], "stage2.method=retrain with lws=true needs model.head=linear"),
        ("fmnist-lt-ce", ["stage1.radius=none"], "with stage1.method=erm they would do nothing"),
        ("fmnist-lt-ce", ["stage1.perturb_scope=all"], "with stage1.method=erm they would do nothing"),
        ("fmnist-lt-ce", ["stage1.nesterov=true", "stage1.momentum=0"], "nesterov=true needs momentum > 0"),
        ("fmnist-lt-gcl", ["stage1.loss.options.generator=3"], "has no option generator"),
        ("places-lt-ce", ["data.augment=crop_flip_cutout"], "image files use the ImageNet transforms"),
    ],
)
def test_options_a_combination_would_ignore_are_refused(preset, overrides, fragment):
    from ccsam.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(fragment)):
        resolve_config(preset, overrides)


def test_combinations_that_used_to_be_refused_or_ignored_now_work(tmp_path):
    # stage 2 off: its loss's head requirement does not apply
    resolve_config("fmnist-lt-ce", ["stage2.method=retrain", "stage2.method.loss.name=ldam", "stage2.epochs=0"])
    # inat2018 selects on data.selection_per_class (no val list): still accepted
    assert resolve_config("inat2018-ce", ["data.selection_per_class=5"]).data.selection_per_class == 5
    # CC-SAM's per-class passes (perturb_scope=all) perturb a cosine head too: it trains
    config = _tiny("fmnist-lt-ldam-drw", "stage1.method=ccsam", "stage1.perturb_scope=all", "stage1.flat_ratio=0.5")
    results = train(config, RunDir.create(tmp_path / "cosine", config, []), progress=False)
    assert math.isfinite(results["test"]["nll"])


def test_per_class_loss_options_come_from_the_config(tmp_path):
    """ce.weight as a list reaches the criterion; a list of the wrong length is one error before training."""
    from ccsam.errors import ConfigError

    weights = [1.0, 2.0, 3.0, 4.0, 5.0]
    config = _tiny("fmnist-lt-ce", f"stage1.loss.options.weight={weights}")
    trainer = Trainer(config, RunDir.create(tmp_path / "run", config, []), progress=False)
    stage = trainer.enter_stage(1)
    assert stage.criterion.weight.tolist() == weights
    short = _tiny("fmnist-lt-focal", "stage1.loss.options.alpha=[1, 2]")
    with pytest.raises(ConfigError, match="stage1.loss.options.alpha has 2 entries but the data has 5 classes"):
        Trainer(short, RunDir.create(tmp_path / "short", short, []), progress=False)


def test_tau_norm_of_an_lws_head_normalises_its_effective_weights(tmp_path):
    config = _tiny("fmnist-lt-tau-norm", "stage2.method=lws", "stage2.epochs=2", "eval.tau_norm=0.7")
    trainer = Trainer(config, RunDir.create(tmp_path / "run", config, []), progress=False)
    results = trainer.fit()
    model, data = trainer.model, trainer.data
    assert isinstance(model.head, LWSHead) and not torch.allclose(model.head.scales, torch.ones(5))
    model.eval()
    with torch.no_grad():
        features = torch.cat([model.features(x) for x, _ in eval_batches(data.test, 64, data.mean, data.std)])
        scales = model.head.scales
        w = tau_normalized_weight(scales[:, None] * model.head.linear_weight, 0.7)
        logits = features @ w.T + scales * model.head.linear_bias
    expected = classification_report(logits, data.test.labels, data.class_counts, many_threshold=30,
                                     few_threshold=10)
    assert results["test"]["top1"] == pytest.approx(expected["top1"])
    assert results["test"]["nll"] == pytest.approx(expected["nll"], rel=1e-5)


def test_cutout_larger_than_twice_the_image_is_refused_before_training(tmp_path):
    from ccsam.errors import ConfigError

    config = _tiny("fmnist-lt-ce", "data.augment=crop_flip_cutout", "data.cutout_size=16")  # 8x8 images
    with pytest.raises(ConfigError, match="data.cutout_size=16 erases every 8x8 training image"):
        Trainer(config, RunDir.create(tmp_path / "run", config, []), progress=False)
    fine = _tiny("fmnist-lt-ce", "data.augment=crop_flip_cutout", "data.cutout_size=4")
    Trainer(fine, RunDir.create(tmp_path / "fine", fine, []), progress=False)
