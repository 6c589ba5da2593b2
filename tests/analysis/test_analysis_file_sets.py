"""The analyses on image-file data sets (no in-memory images): equal to the same images held in memory,
and `ccsam probe | landscape | sharpness` end to end on an ImageNet-LT-shaped run."""

from __future__ import annotations

import json

import pytest
import torch
from _jpeg_layouts import NUM_CLASSES, file_overrides, write_list_layout

from ccsam.analysis import loss_curve_1d, per_class_sharpness, weight_perturbation_probe
from ccsam.cli.main import main
from ccsam.data.arrays import ImageArrays
from ccsam.data.image_files import ImageFiles
from ccsam.data.jpeg import EvalTransform, ImageFileDataset
from ccsam.training.evaluate_run import load_trained
from ccsam.training.run_dir import RunDir


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """The run here sets runtime.threads=1 (fast on a shared CPU); give the next test its threads back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def file_run(tmp_path_factory):
    """A one-epoch ERM run on generated ImageNet-LT lists (images on disk only)."""
    base = tmp_path_factory.mktemp("files")
    root = write_list_layout(base / "imagenet_lt", "imagenet_lt")
    out = base / "run"
    assert main(["train", "--out", str(out), "--no-progress", *file_overrides(root, "imagenet_lt")]) == 0
    return out


def _in_memory(files: ImageFiles, size: int) -> ImageArrays:
    """The same split decoded with the test transform into memory (uint8, as an array data set holds it)."""
    dataset = ImageFileDataset(files, EvalTransform(size))
    images = torch.stack([dataset[(i, 0)][0] for i in range(len(files))])
    return ImageArrays(images, files.labels.clone(), files.class_names)


def _numbers(tree: object) -> list[float]:
    """Every number of a JSON-ready result, in order (None as NaN), to compare two results approximately."""
    if isinstance(tree, dict):
        return [x for key in sorted(tree) for x in _numbers(tree[key])]
    if isinstance(tree, (list, tuple)):
        return [x for item in tree for x in _numbers(item)]
    if tree is None:
        return [float("nan")]
    return [float(tree)] if isinstance(tree, (int, float)) else []


def test_analyses_on_files_equal_the_same_images_in_memory(file_run):
    # the files path normalises in the loader (CPU workers), the arrays path per batch: equal up to rounding
    trained = load_trained(RunDir.open(file_run))
    data = trained.data
    assert isinstance(data.test, ImageFiles)
    memory = _in_memory(data.test, trained.cfg.data.image_size)
    common = {"mean": data.mean, "std": data.std, "class_counts": data.class_counts,
              "many_threshold": 10, "few_threshold": 4}
    probe_files = weight_perturbation_probe(trained.model, data.test, **common, sigmas=(0.05,), draws=2, seed=3)
    probe_memory = weight_perturbation_probe(trained.model, memory, **common, sigmas=(0.05,), draws=2, seed=3)
    assert probe_files["results"][0]["clean"]["overall"] > 0 and len(_numbers(probe_files)) > 50
    assert _numbers(probe_files) == pytest.approx(_numbers(probe_memory), rel=1e-5, abs=1e-6, nan_ok=True)
    curve_files = loss_curve_1d(trained.model, data.test, **common, points=3, span=0.5, seed=1)
    curve_memory = loss_curve_1d(trained.model, memory, **common, points=3, span=0.5, seed=1)
    assert _numbers(curve_files) == pytest.approx(_numbers(curve_memory), rel=1e-5, abs=1e-6, nan_ok=True)
    for scope in ("head", "all"):
        files = per_class_sharpness(trained.model, data.test, data.mean, data.std, NUM_CLASSES, scope=scope,
                                    iterations=3, max_per_class=3)
        arrays = per_class_sharpness(trained.model, memory, data.mean, data.std, NUM_CLASSES, scope=scope,
                                     iterations=3, max_per_class=3)
        assert files == pytest.approx(arrays, rel=1e-5) and all(v is not None and v >= 0 for v in files)


def test_probe_landscape_and_sharpness_commands_run_on_a_file_data_set(file_run):
    run = str(file_run)
    assert main(["probe", run, "--sigmas", "0.01", "--draws", "1"]) == 0
    assert main(["landscape", run, "--points", "3", "--surface", "2"]) == 0
    assert main(["sharpness", run, "--iterations", "2", "--max-per-class", "2"]) == 0
    probe = json.loads((file_run / "analysis" / "probe.json").read_text())
    assert set(probe) == {"train", "test"} and probe["test"]["num_classes"] == NUM_CLASSES
    landscape = json.loads((file_run / "analysis" / "landscape.json").read_text())
    assert landscape["train"]["loss"]["overall"][1] == pytest.approx(landscape["train"]["clean"]["overall"])
    assert len(landscape["train"]["surface"]["loss"]) == 2
    sharpness = json.loads((file_run / "analysis" / "sharpness.json").read_text())
    assert len(sharpness["head"]) == len(sharpness["all"]) == NUM_CLASSES
