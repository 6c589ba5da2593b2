"""Backbones (CIFAR ResNets, a small CNN, torchvision ImageNet ResNets), the ``Classifier``, its heads, the registry."""

from ccsam.models.cifar_resnet import cifar_resnet_backbone
from ccsam.models.classifier import Classifier
from ccsam.models.heads import ClassifierHead, CosineHead, LWSHead, TauNormHead, build_head
from ccsam.models.registry import MODELS, ModelEntry, build_model, list_models
from ccsam.models.small_cnn import small_cnn_backbone
from ccsam.models.torchvision_resnet import TORCHVISION_RESNETS, torchvision_resnet_backbone

__all__ = [
    "MODELS",
    "TORCHVISION_RESNETS",
    "Classifier",
    "ClassifierHead",
    "CosineHead",
    "LWSHead",
    "ModelEntry",
    "TauNormHead",
    "build_head",
    "build_model",
    "cifar_resnet_backbone",
    "list_models",
    "small_cnn_backbone",
    "torchvision_resnet_backbone",
]
