"""Tiny models and data whose losses are known in closed form, shared by the analysis tests.

Images are ``uint8 [N, 1, 1, K]`` with one pixel at 255 and the rest 0; with ``mean = (0,)`` and
``std = (1,)`` the normalised, flattened input is the one-hot vector ``e_k`` exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ccsam.data.arrays import ImageArrays
from ccsam.models import Classifier

MEAN = (0.0,)
STD = (1.0,)


def onehot_arrays(positions: list[int], labels: list[int], width: int, num_classes: int) -> ImageArrays:
    """Image ``i`` lights pixel ``positions[i]`` (input ``e_{positions[i]}``) and has label ``labels[i]``."""
    images = torch.zeros(len(positions), 1, 1, width, dtype=torch.uint8)
    images[torch.arange(len(positions)), 0, 0, torch.tensor(positions)] = 255
    names = tuple(f"c{i}" for i in range(num_classes))
    return ImageArrays(images, torch.tensor(labels, dtype=torch.int64), names)


def onehot_classifier(width: int, num_classes: int, seed: int, bias: bool = True) -> Classifier:
    """``logits = W e_k + b = W[:, k] + b``: a Classifier with a ``Flatten`` backbone, float64."""
    model = Classifier(nn.Flatten(), width, num_classes, bias=bias).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    return model


class QuadraticLoss(nn.Module):
    """A "classifier" whose cross-entropy on a sample of class ``k`` is ``f_k(w) = 1 + (k + 1) ||w||^2``.

    The input ``x = e_k`` (one-hot over the ``C`` classes) marks the class; the logits are
    ``z_k = -f`` and ``z_j = log((1 - e^{-f}) / (C - 1))`` for ``j != k``, so ``softmax(z)_k = e^{-f}``
    and ``CE = f`` exactly. ``weight`` has shape ``[1, n]``: one filter, so a filter-normalised direction
    has ``||d|| = ||w||``.
    """

    def __init__(self, weight: Tensor, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.clone().reshape(1, -1).double())
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        scale = torch.arange(1, self.num_classes + 1, dtype=x.dtype, device=x.device)
        f = 1.0 + (x @ scale) * (self.weight**2).sum()
        other = torch.log(-torch.expm1(-f)) - torch.log(torch.tensor(self.num_classes - 1.0, dtype=x.dtype))
        return x * (-f)[:, None] + (1 - x) * other[:, None]


def quadratic_class_loss(w: Tensor, k: int) -> float:
    """``f_k(w) = 1 + (k + 1) ||w||^2``."""
    return float(1.0 + (k + 1) * (w.double() ** 2).sum())


def conv_bn_model(seed: int) -> nn.Sequential:
    """Conv(1->3, 2x2, bias) -> BN(3) -> ReLU -> Flatten -> Linear(12 -> 4, bias): every parameter kind."""
    model = nn.Sequential(
        nn.Conv2d(1, 3, 2), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 4)
    ).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
        model[1].weight.add_(1.0)  # BN scale around 1
    return model
