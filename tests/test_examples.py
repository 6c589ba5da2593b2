"""Documentation that runs: the README's own-loop CC-SAM example and the modules' docstring examples."""

from __future__ import annotations

import ast
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
    "ccsam.losses.drw", "ccsam.data.samplers", "ccsam.data.splits", "ccsam.data.readers",
    "ccsam.data.image_files", "ccsam.data.manifest_file", "ccsam.evaluation.metrics", "ccsam.tuning",
    "ccsam.analysis.directions", "ccsam.analysis.hessian", "ccsam.models.classifier", "ccsam.models.small_cnn",
]


@pytest.mark.parametrize("name", DOCTESTED_MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def _docstring_example_imports() -> list[tuple[str, str, str]]:
    """``(file, package, name)`` of each ``from ccsam.X import name`` in a docstring example (``ccsam.X`` a package)."""
    source = REPO_ROOT / "src"
    pattern = re.compile(r"from\s+(ccsam\.\w+)\s+import\s+\(?([\w\s,]+)\)?")
    parser = doctest.DocTestParser()
    found = []
    for path in sorted(source.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for example in parser.get_examples(ast.get_docstring(node) or ""):
                for match in pattern.finditer(example.source):
                    package = match.group(1)
                    if (source / package.replace(".", "/") / "__init__.py").is_file():
                        for name in match.group(2).split(","):
                            if name.strip():
                                found.append((str(path.relative_to(REPO_ROOT)), package, name.split()[0]))
    return found


def test_docstring_examples_import_only_exported_names():
    imports = _docstring_example_imports()
    assert imports  # the scan sees the examples
    missing = [f"{file}: {package}.{name}" for file, package, name in imports
               if name not in importlib.import_module(package).__all__]
    assert not missing, f"docstring examples import names their package does not export: {missing}"


@pytest.mark.parametrize(("package", "name"), [
    ("ccsam.data", "ClassBalancedSampler"), ("ccsam.data", "SquareRootSampler"), ("ccsam.data", "ProgressiveSampler"),
    ("ccsam.models", "CosineHead"), ("ccsam.models", "LWSHead"), ("ccsam.models", "TauNormHead"),
    ("ccsam.models", "build_head"),
])
def test_documented_names_are_exported(package, name):
    module = importlib.import_module(package)
    assert name in module.__all__ and getattr(module, name) is not None


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
