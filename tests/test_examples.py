"""Documentation that runs: the README's own-loop CC-SAM example and the modules' docstring examples."""

from __future__ import annotations

import doctest
import importlib
import re

import pytest
from conftest import REPO_ROOT

DOCTESTED_MODULES = [
    "ccsam", "ccsam.functional", "ccsam.optim.ccsam", "ccsam.optim.imbsam", "ccsam.optim.perturbation",
    "ccsam.optim.base", "ccsam.models.heads", "ccsam.models.registry", "ccsam.models.cifar_resnet",
    "ccsam.models.torchvision_resnet", "ccsam.models.pretrained", "ccsam.evaluation.open_set",
    "ccsam.training.tensorboard",
    "ccsam.evaluation.calibration", "ccsam.data.profiles", "ccsam.data.arrays", "ccsam.losses.registry",
    "ccsam.losses.ldam", "ccsam.losses.gcl", "ccsam.losses.logit_adjustment", "ccsam.losses.vs",
    "ccsam.losses.weights", "ccsam.losses.label_aware_smoothing", "ccsam.losses.focal", "ccsam.losses.ce",
    "ccsam.losses.drw",
]


@pytest.mark.parametrize("name", DOCTESTED_MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def _readme_block(marker: str) -> str:
    text = (REPO_ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {marker} -->\s*```python\n(.*?)```", text, re.S)
    assert match, f"README has no python block after <!-- {marker} -->"
    return match.group(1)


def test_readme_own_loop_example_trains_with_ccsam():
    namespace: dict = {}
    exec(compile(_readme_block("example: ccsam-in-your-loop"), "README.md", "exec"), namespace)
    losses = namespace["losses"]
    assert len(losses) == 30 and losses[-1] < losses[0]  # it really trains


def test_readme_functional_example_runs():
    namespace: dict = {}
    exec(compile(_readme_block("example: functional"), "README.md", "exec"), namespace)
    assert namespace["features"].grad is not None
