"""Model registry: listing, building every entry, unknown names, argument validation."""

import dataclasses

import pytest
import torch

from ccsam.models import MODELS, Classifier, build_model, list_models


def test_list_models_names_and_descriptions() -> None:
    listed = list_models()
    names = [name for name, _ in listed]
    assert names == sorted(names)
    assert {"resnet20", "resnet32", "resnet44", "resnet56", "small_cnn"} <= set(names)
    assert all(description and "\n" not in description for _, description in listed)


@pytest.mark.parametrize(
    ("arch", "in_channels", "size", "feature_dim"),
    [("resnet20", 3, 32, 64), ("resnet32", 1, 28, 64), ("small_cnn", 1, 8, 64), ("small_cnn", 3, 32, 64)],
)
def test_build_model_forward(arch: str, in_channels: int, size: int, feature_dim: int) -> None:
    model = build_model(arch, in_channels=in_channels, num_classes=7, width=16)
    assert isinstance(model, Classifier)
    assert model.feature_dim == feature_dim and model.num_classes == 7
    assert model(torch.randn(2, in_channels, size, size)).shape == (2, 7)


def test_resnet32_parameter_count_via_registry() -> None:
    model = build_model("resnet32", in_channels=3, num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == 464_154
    assert sum(p.numel() for p in model.head_parameters()) == 650


def test_width_only_changes_small_cnn() -> None:
    assert build_model("small_cnn", in_channels=1, num_classes=3, width=8).feature_dim == 32
    assert build_model("resnet20", in_channels=3, num_classes=3, width=8).feature_dim == 64
    assert MODELS["small_cnn"].uses_width and not MODELS["resnet32"].uses_width


def test_bias_flag_reaches_the_head() -> None:
    assert build_model("small_cnn", in_channels=1, num_classes=3, width=4, bias=False).head.bias is None


def test_unknown_arch_names_close_matches_and_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet23'") as info:
        build_model("resnet23", in_channels=3, num_classes=10)
    message = str(info.value)
    assert "did you mean resnet32" in message
    assert "small_cnn" in message and "\n" not in message


def test_unknown_arch_without_close_match() -> None:
    with pytest.raises(ValueError, match="valid: resnet10, resnet152, resnet20") as info:
        build_model("vit", in_channels=3, num_classes=10)
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"in_channels": 0, "num_classes": 3},
        {"in_channels": 1, "num_classes": 0},
        {"in_channels": 1, "num_classes": 3, "width": 0},
    ],
)
def test_invalid_sizes_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="positive int"):
        build_model("small_cnn", **kwargs)


def test_entries_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        MODELS["resnet32"].description = "changed"  # type: ignore[misc]
