"""The public optimisers and CC-SAM functions refuse inputs that would silently compute something else
(a non-linear head, counts of the wrong length, infinite radii) with one ValueError / TypeError line."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ccsam.functional import adversarial_feature_losses, class_conditional_logits
from ccsam.losses import LDAMLoss
from ccsam.losses.drw import DeferredReweighting
from ccsam.models.heads import CosineHead
from ccsam.optim import CCSAM, SAM, ImbSAM
from ccsam.optim.imbsam import split_head_tail_loss

COUNTS = [100, 10, 2]


def _ccsam(head: nn.Module, **kwargs: object) -> CCSAM:
    options = {"class_counts": COUNTS, "lr": 0.1, **kwargs}
    return CCSAM(head.parameters(), torch.optim.SGD, head=head, **options)


def test_ccsam_refuses_a_head_that_is_not_w_z_plus_b():
    cosine = CosineHead(4, 3, scale=16.0)
    with pytest.raises(ValueError, match="CosineHead does not compute W z \\+ b"):
        _ccsam(cosine)
    linear = nn.Linear(4, 3)
    opt = _ccsam(linear, noise_scale=0.0, flat_ratio=1.0)  # no perturbation: the loss is the clean loss
    z, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.allclose(opt.loss(z, y), nn.functional.cross_entropy(linear(z), y))


@pytest.mark.parametrize(("options", "message"), [
    ({"class_counts": [100, 10]}, "class_counts must be 3 finite counts"),
    ({"class_counts": [100, -1, 2]}, "class_counts must be 3 finite counts"),
    ({"class_counts": [[100, 10, 2]]}, "class_counts must be 3 finite counts"),
    ({"noise_scale": float("nan")}, "noise_scale must be finite"),
    ({"noise_scale": float("inf")}, "noise_scale must be finite"),
])
def test_ccsam_checks_counts_and_radius_when_built(options, message):
    with pytest.raises(ValueError, match=message):
        _ccsam(nn.Linear(4, 3), **options)


def test_ccsam_checks_soft_target_shape_before_the_loss():
    opt = _ccsam(nn.Linear(4, 3))
    with pytest.raises(ValueError, match=r"soft_targets must have shape \(6, 3\)"):
        opt.loss(torch.randn(6, 4), torch.zeros(6, dtype=torch.long), soft_targets=torch.ones(6, 2))


def test_an_optimizer_instance_where_its_class_belongs_is_one_type_error():
    p = nn.Linear(2, 2)
    for build in (lambda: SAM(p.parameters(), torch.optim.SGD(p.parameters(), lr=0.1)),
                  lambda: CCSAM(p.parameters(), torch.optim.SGD(p.parameters(), lr=0.1), head=p, class_counts=[1, 2])):
        with pytest.raises(TypeError, match="an optimizer class such as torch.optim.SGD, not an instance of SGD"):
            build()


def test_infinite_radii_and_steps_are_refused():
    p = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="rho must be finite"):
        SAM(p.parameters(), torch.optim.SGD, rho=float("inf"), lr=0.1)
    z, w, b, y = torch.randn(5, 4), torch.randn(3, 4), torch.zeros(3), torch.tensor([0, 1, 2, 0, 1])
    with pytest.raises(ValueError, match="noise_scale must be finite"):
        class_conditional_logits(z, w, b, y, COUNTS, noise_scale=float("inf"))
    with pytest.raises(ValueError, match="step must be finite"):
        adversarial_feature_losses(z, w, b, y, COUNTS, step=float("inf"))


def test_imbsam_counts_and_split_accept_sequences_and_refuse_nan():
    head, tail = split_head_tail_loss(torch.tensor([1.0, 3.0]), torch.tensor([0, 1]), [50, 5])
    assert (float(head), float(tail)) == (0.5, 1.5)
    with pytest.raises(ValueError, match="finite counts"):
        ImbSAM(nn.Linear(2, 3).parameters(), torch.optim.SGD, [10, float("nan"), 3], lr=0.1)
    for bad in (0.0, -1.0, float("inf"), float("nan"), True):
        with pytest.raises(ValueError, match="tail_weight must be a finite number > 0"):
            ImbSAM(nn.Linear(2, 3).parameters(), torch.optim.SGD, [10, 3, 3], lr=0.1, tail_weight=bad)


def test_drw_refuses_counts_that_disagree_with_the_wrapped_loss():
    with pytest.raises(ValueError, match="DRW has 2 class counts but the wrapped LDAMLoss has 3"):
        DeferredReweighting(LDAMLoss(COUNTS), [100, 10], start_epoch=1)
