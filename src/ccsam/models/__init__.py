"""Backbones, the linear-head ``Classifier`` and the model registry."""

from ccsam.models.cifar_resnet import cifar_resnet_backbone
from ccsam.models.classifier import Classifier
from ccsam.models.registry import MODELS, ModelEntry, build_model, list_models
from ccsam.models.small_cnn import small_cnn_backbone

__all__ = [
    "MODELS",
    "Classifier",
    "ModelEntry",
    "build_model",
    "cifar_resnet_backbone",
    "list_models",
    "small_cnn_backbone",
]
