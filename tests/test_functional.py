"""ccsam.functional is the public facade of ccsam.method: the same functions under the same names and
signatures (the math itself is tested in tests/method/)."""

from __future__ import annotations

import doctest
import inspect

import torch

import ccsam.functional as functional
from ccsam.method import head, radius, stage2

PUBLIC = {
    "class_conditional_logits": head.class_conditional_logits,
    "random_head_directions": head.random_head_directions,
    "ccsam_radius": radius.ccsam_radius,
    "RADIUS_MODES": radius.RADIUS_MODES,
    "RadiusMode": radius.RadiusMode,
    "adversarial_class_weights": stage2.adversarial_class_weights,
    "adversarial_feature_losses": stage2.adversarial_feature_losses,
}


def test_facade_exports_exactly_the_method_implementations():
    assert sorted(functional.__all__) == sorted(PUBLIC)
    for name, implementation in PUBLIC.items():
        assert getattr(functional, name) is implementation, name


def test_public_signatures_are_stable():
    # the parameters README examples and user code pass by name; a renamed one would break them
    def params(fn):
        return list(inspect.signature(fn).parameters)

    assert params(functional.class_conditional_logits)[:6] == [
        "features", "weight", "bias", "labels", "class_counts", "noise_scale"]
    assert params(functional.adversarial_feature_losses)[:5] == [
        "features", "weight", "bias", "labels", "class_counts"]
    assert {"div", "step"} <= set(params(functional.adversarial_feature_losses))
    assert params(functional.adversarial_class_weights)[0] == "class_counts"
    assert params(functional.ccsam_radius) == ["param_norm", "grad_norm", "class_count", "num_params", "noise_scale"]


def test_module_example_runs():
    failures, attempted = doctest.testmod(functional, extraglobs={"torch": torch}, verbose=False)
    assert attempted > 0 and failures == 0
