"""End-to-end runs of the analyses on a BatchNorm CNN (float32), and CUDA against CPU."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from ccsam.analysis import loss_curve_1d, per_class_sharpness, weight_perturbation_probe
from ccsam.data.arrays import ImageArrays
from ccsam.models import Classifier
from ccsam.models.small_cnn import small_cnn_backbone

MEAN, STD = (0.5,), (0.25,)


def _cnn_and_data() -> tuple[Classifier, ImageArrays]:
    gen = torch.Generator().manual_seed(0)
    model = Classifier(small_cnn_backbone(1, width=2), 8, 3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(1 + torch.rand(m.running_var.shape, generator=gen))
    images = torch.randint(0, 256, (12, 1, 8, 8), generator=gen, dtype=torch.uint8)
    labels = torch.tensor([0] * 6 + [1] * 4 + [2] * 2)
    return model, ImageArrays(images, labels, ("a", "b", "c"))


def _run_all(model: Classifier, data: ImageArrays) -> tuple[dict, dict, list]:
    probe = weight_perturbation_probe(
        model, data, MEAN, STD, [200, 50, 5], sigmas=(0.0, 0.01), draws=2, mode="magnitude", eps=1e-3,
        batch_size=5,
    )
    curve = loss_curve_1d(model, data, MEAN, STD, [200, 50, 5], points=5, batch_size=5)
    sharp = per_class_sharpness(model, data, MEAN, STD, 4, scope="all", iterations=5, max_per_class=4)
    return probe, curve, sharp


def test_analyses_leave_a_bn_model_untouched_and_return_json():
    model, data = _cnn_and_data()
    model.train()  # BN in train mode would update its running statistics: the analyses must use eval mode
    state = copy.deepcopy(model.state_dict())
    probe, curve, sharp = _run_all(model, data)
    assert model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    json.dumps({"probe": probe, "curve": curve, "sharp": sharp}, allow_nan=False)
    # magnitude-aware std sigma |w| + eps: at sigma = 0 the eps floor still moves the weights
    assert all(d != 0.0 for d in probe["results"][0]["delta_draws"]["overall"])
    assert probe["results"][1]["delta_std"]["overall"] > 0.0
    assert curve["loss"]["overall"][2] == curve["clean"]["overall"]
    assert sharp[3] is None and all(isinstance(s, float) for s in sharp[:3])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_analyses_on_cuda_match_cpu():
    model, data = _cnn_and_data()
    cpu = _run_all(model, data)
    # the model on the GPU, the images left on the CPU: batches follow the model's device
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # full fp32 convolutions
        gpu = _run_all(copy.deepcopy(model).cuda(), data)
    probe_cpu, probe_gpu = cpu[0]["results"][1], gpu[0]["results"][1]
    expected = probe_cpu["delta_draws"]["overall"]
    assert probe_gpu["delta_draws"]["overall"] == pytest.approx(expected, rel=1e-3, abs=1e-5)
    assert gpu[1]["loss"]["overall"] == pytest.approx(cpu[1]["loss"]["overall"], rel=1e-4)
    assert gpu[2][:3] == pytest.approx(cpu[2][:3], rel=1e-2)
