"""Classifier: forward algebra, parameter split, freeze_backbone, reset_head, validation."""

import pytest
import torch
from torch import nn

from ccsam.models import Classifier


def _tiny(bias: bool = True) -> Classifier:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.BatchNorm1d(6), nn.ReLU())
    return Classifier(backbone, feature_dim=6, num_classes=4, bias=bias)


def test_forward_is_linear_head_on_features() -> None:
    model = _tiny()
    x = torch.randn(5, 3, 2, 2)
    z = model.features(x)
    assert z.shape == (5, 6)
    expected = z @ model.head.weight.T + model.head.bias
    assert torch.allclose(model(x), expected, atol=1e-6)
    assert model.feature_dim == 6 and model.num_classes == 4


def test_head_without_bias() -> None:
    model = _tiny(bias=False)
    assert model.head.bias is None
    assert len(list(model.head_parameters())) == 1


def test_parameter_iterators_partition_the_model() -> None:
    model = _tiny()
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    head_ids = {id(p) for p in model.head_parameters()}
    assert backbone_ids.isdisjoint(head_ids)
    assert backbone_ids | head_ids == {id(p) for p in model.parameters()}
    assert head_ids == {id(model.head.weight), id(model.head.bias)}


def test_freeze_backbone_leaves_head_trainable() -> None:
    model = _tiny()
    model.freeze_backbone()
    loss = nn.functional.cross_entropy(model(torch.randn(8, 3, 2, 2)), torch.randint(0, 4, (8,)))
    loss.backward()
    assert all(not p.requires_grad and p.grad is None for p in model.backbone.parameters())
    assert all(p.requires_grad and p.grad is not None for p in model.head_parameters())


def test_reset_head_reinitialises_and_keeps_shape_device_dtype() -> None:
    model = _tiny().double()
    model.freeze_backbone()
    old_weight, old_bias = model.head.weight.detach().clone(), model.head.bias.detach().clone()
    model.reset_head()
    head = model.head
    assert isinstance(head, nn.Linear)
    assert head.weight.shape == old_weight.shape and head.bias.shape == old_bias.shape
    assert head.weight.dtype == torch.float64 and head.weight.device == old_weight.device
    assert not torch.equal(head.weight, old_weight) and not torch.equal(head.bias, old_bias)
    assert head.weight.requires_grad and head.bias.requires_grad
    # PyTorch default Linear init: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
    bound = 1 / 6**0.5
    assert head.weight.abs().max() <= bound and head.bias.abs().max() <= bound
    # The backbone is untouched and still frozen.
    assert all(not p.requires_grad for p in model.backbone.parameters())


def test_reset_head_with_new_num_classes_and_no_bias() -> None:
    model = _tiny(bias=False)
    model.reset_head(num_classes=7)
    assert model.num_classes == 7 and model.head.bias is None
    assert model(torch.randn(2, 3, 2, 2)).shape == (2, 7)
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_head(num_classes=0)


@pytest.mark.parametrize(
    ("feature_dim", "num_classes", "match"),
    [(0, 3, "feature_dim"), (4, 0, "num_classes"), (4.0, 3, "feature_dim"), (4, True, "num_classes")],
)
def test_invalid_construction_raises(feature_dim: object, num_classes: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Classifier(nn.Identity(), feature_dim, num_classes)  # type: ignore[arg-type]


def test_non_module_backbone_raises() -> None:
    with pytest.raises(ValueError, match="nn.Module"):
        Classifier(lambda x: x, 4, 3)  # type: ignore[arg-type]


def test_backbone_with_wrong_feature_width_raises() -> None:
    model = Classifier(nn.Flatten(), feature_dim=5, num_classes=3)
    with pytest.raises(ValueError, match=r"expected \[B, 5\]"):
        model(torch.randn(2, 3, 2))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_reset_head_keeps_cuda_device() -> None:
    model = _tiny().cuda()
    model.reset_head(num_classes=3)
    assert model.head.weight.is_cuda
    assert model(torch.randn(2, 3, 2, 2, device="cuda")).shape == (2, 3)
