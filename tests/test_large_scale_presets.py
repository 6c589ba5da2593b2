"""Every ImageNet-LT / Places-LT / iNaturalist 2018 preset: its documented protocol, and a run of it
shrunk by overrides (ResNet-10, 16 px, one epoch per stage) on generated data in its exact layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _jpeg_layouts import write_list_layout

from ccsam.config import resolve_config
from ccsam.config.io import list_presets, load_preset_tree
from ccsam.errors import ConfigError
from ccsam.training.run_dir import RunDir
from ccsam.training.trainer import train

FAMILIES = {"imagenet-lt": "imagenet_lt", "places-lt": "places_lt", "inat2018": "inat2018"}
PRESETS = [name for name, _ in list_presets() if name.startswith(tuple(f"{f}-" for f in FAMILIES))]
METHODS = ("ce", "ccsam", "balanced-softmax", "ldam-drw", "crt", "mislas", "gcl", "sam")


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """The runs here set runtime.threads=1 (fast on a shared CPU); give the next test its threads back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _family(preset: str) -> str:
    return next(f for f in FAMILIES if preset.startswith(f + "-"))


def test_each_data_set_has_every_method_preset():
    for family in FAMILIES:
        assert {f"{family}-{m}" for m in METHODS} <= set(PRESETS)
    assert "imagenet-lt-ccsam-resnext50" in PRESETS


@pytest.mark.parametrize(
    ("family", "arch", "batch", "epochs", "lr", "wd"),
    [
        ("imagenet-lt", "resnet50", 256, 180, 0.1, 5e-4),
        ("places-lt", "resnet152", 128, 90, 0.05, 5e-4),
        ("inat2018", "resnet50", 512, 200, 0.2, 1e-4),
    ],
)
def test_base_protocol_and_its_sources_are_documented(family, arch, batch, epochs, lr, wd):
    cfg = resolve_config(f"{family}-ce")
    assert (cfg.model.arch, cfg.data.batch_size, cfg.stage1.epochs, cfg.stage1.lr) == (
        arch,
        batch,
        epochs,
        lr,
    )
    assert cfg.stage1.weight_decay == wd and cfg.stage1.schedule == "cosine" and cfg.data.image_size == 224
    assert (cfg.eval.many_threshold, cfg.eval.few_threshold) == (100, 20)
    header = (Path(__file__).parents[1] / "src/ccsam/presets" / f"{family}-base.yaml").read_text()
    assert "spec.md section 3.2" in header and "batch" in header and "RECON" in header
    for name in PRESETS:
        if name.startswith(family + "-"):
            text = (Path(__file__).parents[1] / "src/ccsam/presets" / f"{name}.yaml").read_text()
            assert text.startswith("#") and "spec" in text  # every preset states its source


def test_ccsam_stage2_follows_the_released_code_non_cifar_branch():
    cfg = resolve_config("imagenet-lt-ccsam")
    assert (cfg.stage2.epochs, cfg.stage2.sampler, cfg.stage2.schedule) == (30, "class_aware", "cosine")
    assert cfg.stage2.lr == pytest.approx(0.2 * cfg.stage1.lr)  # 0.1 lr (1 + cos(pi t / T))
    assert resolve_config("imagenet-lt-ccsam-resnext50").model.arch == "resnext50_32x4d"
    places = (Path(__file__).parents[1] / "src/ccsam/presets/places-lt-base.yaml").read_text()
    assert "REQUIRED: model.pretrained=PATH" in places and "IMAGENET1K_V1" in places


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("preset-layouts")
    return {family: write_list_layout(base / family, dataset) for family, dataset in FAMILIES.items()}


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_runs_shrunk_on_generated_data(preset, layouts, tmp_path):
    tree = load_preset_tree(preset)
    shrink = {
        "data.root": str(layouts[_family(preset)]),
        "data.image_size": 16,
        "data.batch_size": 48,
        "data.eval_batch_size": 128,
        "runtime.threads": 1,
        "data.num_workers": 0,
        "model.arch": "resnet10",
        "model.pretrained": "null",
        "model.require_pretrained": "false",
        "stage1.epochs": 1,
        "stage2.epochs": min(1, tree.get("stage2", {}).get("epochs", 0)),
        "eval.many_threshold": 10,
        "eval.few_threshold": 4,
        "device": "cpu",
    }
    if tree.get("stage2", {}).get("batch_size"):  # the references' own stage-2 batch, shrunk too
        shrink["stage2.batch_size"] = 24
    if tree.get("model", {}).get("train_from"):  # ResNet-152's last bottleneck: ResNet-10's only layer4 block
        shrink.update({"model.train_from": "layer4.0", "model.reinit": "[layer4.0]"})
    config = resolve_config(preset, [f"{k}={v}" for k, v in shrink.items()])
    results = train(config, RunDir.create(tmp_path / "run", config, []), progress=False)
    assert results["epochs"] == config.total_epochs and 0.0 <= results["test"]["top1"] <= 1.0
    assert len(results["test"]["per_class_accuracy"]) == 12


def test_places_presets_refuse_to_train_from_scratch_without_being_told(tmp_path, layouts):
    """The Places-LT protocol starts from ImageNet weights: without model.pretrained the run stops with one
    line before anything is written (and model.require_pretrained=false is the explicit way out)."""
    overrides = [f"data.root={layouts['places-lt']}", "model.arch=resnet10", "data.num_workers=0", "device=cpu"]
    config = resolve_config("places-lt-ce", overrides)
    with pytest.raises(ConfigError, match="model.pretrained=PATH"):
        train(config, RunDir.create(tmp_path / "run", config, []), progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()
