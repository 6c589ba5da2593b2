"""torchvision ImageNet ResNets as ccsam backbones: structure vs torchvision, every head, forward/backward."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

from ccsam.config.schema import ModelConfig
from ccsam.models import Classifier, build_model, list_models, torchvision_resnet_backbone
from ccsam.models.heads import CosineHead, LWSHead, TauNormHead
from ccsam.training.assembly import install_head

ARCHS = ("resnet10", "resnet50", "resnext50_32x4d", "resnet152")
HEADS = ("linear", "cosine", "tau_norm", "lws")

_MODELS: dict[str, Classifier] = {}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny convolutions run faster on one thread than on cores shared with other work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(arch: str) -> Classifier:
    """One model per architecture for the whole module (ResNet-152 takes a second to initialise)."""
    if arch not in _MODELS:
        torch.manual_seed(0)
        _MODELS[arch] = build_model(arch, in_channels=3, num_classes=5)
    return _MODELS[arch]


def _with_head(model: Classifier, kind: str) -> nn.Module:
    linear = nn.Linear(model.feature_dim, 5)
    if kind == "cosine":
        model.head = linear
        return install_head(model, ModelConfig(arch="resnet10", head="cosine", head_scale=16.0)).head
    return {"linear": linear, "tau_norm": TauNormHead.from_linear(linear, 0.7), "lws": LWSHead(linear)}[kind]


def test_names_are_registered() -> None:
    names = {name for name, _ in list_models()}
    assert set(ARCHS) <= names


@pytest.mark.parametrize(
    ("arch", "reference"),
    [
        ("resnet50", tv_resnet.resnet50),
        ("resnext50_32x4d", tv_resnet.resnext50_32x4d),
        ("resnet152", tv_resnet.resnet152),
        ("resnet10", lambda: tv_resnet.ResNet(tv_resnet.BasicBlock, [1, 1, 1, 1])),
    ],
)
def test_backbone_is_torchvision_without_fc(arch: str, reference) -> None:
    """Same parameter names and shapes as torchvision's network minus ``fc`` (so its weights load)."""
    ours = _model(arch).backbone.state_dict()
    with torch.device("meta"):  # shapes only; no weight initialisation
        reference_net = reference()
    theirs = {k: v.shape for k, v in reference_net.state_dict().items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in ours.items()} == theirs


def test_known_parameter_counts() -> None:
    # torchvision's documented totals (ResNet-50 25,557,032; ResNet-152 60,192,808) minus fc (2048*1000+1000).
    assert sum(p.numel() for p in _model("resnet50").backbone.parameters()) == 25_557_032 - 2_049_000
    assert sum(p.numel() for p in _model("resnet152").backbone.parameters()) == 60_192_808 - 2_049_000
    assert _model("resnet10").feature_dim == 512 and _model("resnet152").feature_dim == 2048


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_backward_with_each_head(arch: str) -> None:
    """One backbone pass (32x32, batch 2) feeds each head; one backward reaches every head and the stem."""
    model = _model(arch)
    model.train()
    model.zero_grad(set_to_none=True)
    features = model.features(torch.randn(2, 3, 32, 32))
    heads = {kind: _with_head(model, kind) for kind in HEADS}
    types = {"linear": nn.Linear, "cosine": CosineHead, "tau_norm": TauNormHead, "lws": LWSHead}
    total = features.new_zeros(())
    for kind, head in heads.items():
        model.head = head
        assert isinstance(model.head, types[kind])
        logits = model.head(features)
        assert logits.shape == (2, 5) and torch.isfinite(logits).all()
        total = total + logits.logsumexp(1).sum()
    total.backward()
    assert model.backbone.conv1.weight.grad is not None and model.backbone.conv1.weight.grad.abs().sum() > 0
    assert list(heads["tau_norm"].parameters()) == []  # post-hoc: buffers only
    for kind in ("linear", "cosine", "lws"):
        params = list(heads[kind].parameters())
        assert params and all(p.grad is not None and p.grad.abs().sum() > 0 for p in params), kind
    model.head = heads["linear"]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)  # the Classifier path with a ccsam head


def test_grayscale_stem_and_bad_arguments() -> None:
    backbone, dim = torchvision_resnet_backbone("resnet10", in_channels=1)
    assert backbone(torch.randn(2, 1, 32, 32)).shape == (2, dim)
    with pytest.raises(ValueError, match="unknown torchvision ResNet 'resnet18'"):
        torchvision_resnet_backbone("resnet18")
    with pytest.raises(ValueError, match="in_channels"):
        torchvision_resnet_backbone("resnet10", in_channels=0)
