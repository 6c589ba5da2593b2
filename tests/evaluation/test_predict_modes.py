"""Prediction runs in eval mode and gives every module its own train/eval flag back."""

from __future__ import annotations

import torch
from torch import nn

from ccsam.data.arrays import ImageArrays
from ccsam.evaluation.predict import predict
from ccsam.models import Classifier


def test_predict_restores_mixed_flags_and_leaves_running_statistics():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = Classifier(backbone, 2, 3)
    model.train()
    model.backbone.eval()  # stage 2 with bn_mode=eval: frozen backbone in eval mode, head in train mode
    flags = [m.training for m in model.modules()]
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.randint(0, 256, (5, 1, 6, 6), dtype=torch.uint8)
    logits = predict(model, ImageArrays(images, torch.tensor([0, 1, 2, 0, 1]), ("a", "b", "c")), 4,
                     (0.5,), (0.25,))
    assert logits.shape == (5, 3)
    assert [m.training for m in model.modules()] == flags  # model.train(was_training) set the backbone to train
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())
