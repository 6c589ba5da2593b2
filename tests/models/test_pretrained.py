"""Pretrained weights: torchvision state dicts (fc, ``module.`` prefixes), the one-line report, refusals."""

from __future__ import annotations

import logging
import os

import pytest
import torch
from torchvision.models import resnet as tv_resnet

from ccsam.config import resolve_config
from ccsam.errors import CcsamError
from ccsam.models import build_model
from ccsam.models.pretrained import PretrainedWeightsError, load_pretrained, map_state_dict
from ccsam.safe_load import UnsafeFileError
from ccsam.training.run_dir import RunDir
from ccsam.training.trainer import Trainer


def _torchvision_resnet10(num_classes: int = 1000) -> tv_resnet.ResNet:
    torch.manual_seed(123)
    return tv_resnet.ResNet(tv_resnet.BasicBlock, [1, 1, 1, 1], num_classes=num_classes)


def _ddp_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as a DataParallel / DDP-wrapped model saves it."""
    return {f"module.{k}": v for k, v in net.state_dict().items()}


def test_map_state_dict_prefixes_fc_and_ccsam_keys() -> None:
    t = torch.zeros(1)
    state = {"module._orig_mod.layer1.0.conv1.weight": t, "fc.weight": t, "fc.bias": t,
             "backbone.bn1.bias": t}
    mapped, dropped = map_state_dict(state)
    assert sorted(mapped) == ["backbone.bn1.bias", "backbone.layer1.0.conv1.weight"]
    assert dropped == ["fc.weight", "fc.bias"]
    mapped, dropped = map_state_dict(state, load_head=True)
    assert {"head.weight", "head.bias"} <= set(mapped) and dropped == []


def test_torchvision_state_dict_with_module_prefix_loads_into_the_backbone(tmp_path, caplog) -> None:
    source = _torchvision_resnet10()
    path = tmp_path / "resnet10.pth"
    torch.save(_ddp_state(source), path)
    model = build_model("resnet10", in_channels=3, num_classes=7)
    head_before = model.head.weight.clone()
    with caplog.at_level(logging.INFO, logger="ccsam.models.pretrained"):
        report = load_pretrained(model, str(path), arch="resnet10")
    for key, value in source.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(model.backbone.state_dict()[key], value), key
    assert torch.equal(model.head.weight, head_before)  # fc (1000 ImageNet classes) is dropped
    assert report.dropped == ("module.fc.weight", "module.fc.bias")
    assert report.missing == () and report.unexpected == ()
    assert report.loaded == len(source.state_dict()) - 2
    lines = [r.getMessage() for r in caplog.records if r.name == "ccsam.models.pretrained"]
    assert len(lines) == 1 and "missing none; unexpected none" in lines[0] and "dropped 2" in lines[0]


def test_missing_and_unexpected_keys_are_reported_in_one_line(tmp_path, caplog) -> None:
    state = _torchvision_resnet10().state_dict()
    del state["layer4.0.bn2.running_var"]
    state["layer5.0.conv1.weight"] = torch.zeros(3)
    path = tmp_path / "partial.pth"
    torch.save({"state_dict": state}, path)  # a wrapped checkpoint, as many training scripts save
    model = build_model("resnet10", in_channels=3, num_classes=7)
    with caplog.at_level(logging.INFO, logger="ccsam.models.pretrained"):
        report = load_pretrained(model, str(path), arch="resnet10")
    assert report.missing == ("backbone.layer4.0.bn2.running_var",)
    assert report.unexpected == ("backbone.layer5.0.conv1.weight",)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "ccsam.models.pretrained"]
    assert "missing 1 (backbone.layer4.0.bn2.running_var)" in line
    assert "unexpected 1 (backbone.layer5.0.conv1.weight)" in line and "\n" not in line


def test_fc_goes_to_the_head_on_request(tmp_path) -> None:
    source = _torchvision_resnet10(num_classes=7)
    path = tmp_path / "w.pth"
    torch.save(source.state_dict(), path)
    model = build_model("resnet10", in_channels=3, num_classes=7)
    report = load_pretrained(model, str(path), arch="resnet10", load_head=True)
    assert torch.equal(model.head.weight, source.fc.weight) and torch.equal(model.head.bias, source.fc.bias)
    assert report.dropped == () and report.missing == ()


def test_wrong_architecture_is_one_clear_error(tmp_path) -> None:
    path = tmp_path / "r10.pth"
    torch.save(_torchvision_resnet10().state_dict(), path)
    model = build_model("small_cnn", in_channels=3, num_classes=7, width=4)
    with pytest.raises(PretrainedWeightsError, match="does not fit model.arch=small_cnn|no key of") as info:
        load_pretrained(model, str(path), arch="small_cnn")
    assert "\n" not in str(info.value)
    with torch.device("meta"):
        r50 = tv_resnet.resnet50().state_dict()
    torch.save({k: torch.zeros(v.shape) for k, v in r50.items() if k.startswith("layer1.0.conv1")}, path)
    mismatch = r"shape mismatch backbone.layer1.0.conv1.weight \(64, 64, 1, 1\)"
    with pytest.raises(PretrainedWeightsError, match=mismatch):
        load_pretrained(build_model("resnet10", in_channels=3, num_classes=7), str(path), arch="resnet10")


def test_crafted_file_is_refused_without_running_code(tmp_path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "extra": Payload()}, path)
    with pytest.raises(UnsafeFileError, match="was refused") as info:
        load_pretrained(build_model("resnet10", in_channels=3, num_classes=7), str(path), arch="resnet10")
    assert isinstance(info.value, CcsamError) and "\n" not in str(info.value)
    assert not marker.exists()


def test_no_download_without_consent_and_bad_sources(tmp_path) -> None:
    model = build_model("resnet10", in_channels=3, num_classes=7)
    with pytest.raises(PretrainedWeightsError, match="nothing is downloaded unless model.download=true"):
        load_pretrained(model, "IMAGENET1K_V1", arch="resnet10")
    with pytest.raises(PretrainedWeightsError, match="no pretrained weights for model.arch=resnet10"):
        load_pretrained(model, "IMAGENET1K_V1", arch="resnet10", download=True)
    with pytest.raises(PretrainedWeightsError, match="valid: IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT"):
        load_pretrained(model, "IMAGENET9K", arch="resnet152", download=True)
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(PretrainedWeightsError, match="is not a state dict"):
        load_pretrained(model, str(path), arch="resnet10")


def test_trainer_loads_model_pretrained(tmp_path, tiny_overrides) -> None:
    torch.manual_seed(5)
    source = build_model("small_cnn", in_channels=1, num_classes=3, width=8)
    path = tmp_path / "small.pth"
    torch.save(source.backbone.state_dict(), path)
    config = resolve_config("digits-lt", tiny_overrides(**{"model.pretrained": str(path)}))
    trainer = Trainer(config, RunDir.create(tmp_path / "run", config, []), progress=False)
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(trainer.model.backbone.state_dict()[key], value), key


def test_pretrained_head_needs_a_linear_head(tiny_overrides) -> None:
    overrides = tiny_overrides(**{"model.pretrained_head": "true", "model.head": "cosine",
                                  "stage1.method": "erm", "stage2.epochs": 0})
    with pytest.raises(ValueError, match="model.pretrained_head=true loads a linear classifier"):
        resolve_config("digits-lt", overrides)


def test_download_with_consent_goes_through_torchvision_weights_only(monkeypatch) -> None:
    import torchvision.models._api as weights_api

    calls = []
    source = _torchvision_resnet10()

    def fake_fetch(url, *args, **kwargs):  # stands in for the network
        calls.append((url, kwargs))
        return source.state_dict()

    monkeypatch.setattr(weights_api, "load_state_dict_from_url", fake_fetch)
    model = build_model("resnet10", in_channels=3, num_classes=7)
    model.backbone = _torchvision_resnet10()  # a resnet10 body stands in for a ResNet-152 one
    model.backbone.fc = torch.nn.Identity()
    load_pretrained(model, "IMAGENET1K_V1", arch="resnet152", download=True)
    ((url, kwargs),) = calls
    assert "resnet152" in url and kwargs["weights_only"] is True and kwargs["check_hash"] is True
