"""File data sets: list-file layouts, roles of the splits, counts, groups, the manifest, one-line errors."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from _jpeg_layouts import (
    CLASS_DIRS,
    LIST_NAMES,
    NUM_CLASSES,
    OPEN_IMAGES,
    TEST_PER_CLASS,
    TRAIN_COUNTS,
    VAL_PER_CLASS,
    file_overrides,
    write_image_folder,
    write_list_layout,
)

from ccsam.config import resolve_config
from ccsam.data.build import build_data, build_open_images, resolve_data_root
from ccsam.data.file_sets import read_open_set
from ccsam.data.image_files import ImageFileError, ImageFiles
from ccsam.data.profiles import long_tail_counts
from ccsam.data.splits import SplitManifest
from ccsam.errors import CcsamError, ConfigError
from ccsam.evaluation.metrics import shot_groups


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("layouts")
    return {name: write_list_layout(base / name, name) for name in ("imagenet_lt", "places_lt", "inat2018")}


def _data(root: Path, dataset: str, **extra: object):
    return build_data(resolve_config("digits-lt", file_overrides(root, dataset, **extra)).data)


@pytest.mark.parametrize("dataset", ["imagenet_lt", "places_lt"])
def test_imagenet_and_places_lists_give_train_val_test_with_their_roles(layouts, dataset):
    data = _data(layouts[dataset], dataset)
    assert isinstance(data.train, ImageFiles) and data.in_channels == 3 and data.num_classes == NUM_CLASSES
    assert data.class_counts.tolist() == list(TRAIN_COUNTS)  # no profile: the train list's own counts
    assert data.val.class_counts().tolist() == [VAL_PER_CLASS] * NUM_CLASSES
    assert data.test.class_counts().tolist() == [TEST_PER_CLASS] * NUM_CLASSES
    assert all(p.startswith("val/") for p in data.val.paths) and all(
        p.startswith("test/") for p in data.test.paths
    )
    assert data.train.class_names == CLASS_DIRS  # the parent folder of each class's images
    assert data.train.path(0).is_file() and data.train.where(0).endswith(
        f"{LIST_NAMES[dataset]['train']} line 1"
    )


def test_standard_groups_follow_the_train_list_counts(layouts):
    data = _data(layouts["imagenet_lt"], "imagenet_lt")
    groups = shot_groups(data.class_counts, many_threshold=10, few_threshold=4)
    # counts 30 22 16 12 | 9 7 5 4 | 3 3 2 2
    assert [int(groups[g].sum()) for g in ("many", "medium", "few")] == [4, 4, 4]
    assert groups["few"].tolist() == [False] * 8 + [True] * 4


def test_inat_val_list_is_the_reported_split_and_nothing_is_carved_by_default(layouts):
    data = _data(layouts["inat2018"], "inat2018")
    assert (
        all(p.startswith("test/") for p in data.test.paths) and len(data.test) == NUM_CLASSES * TEST_PER_CLASS
    )
    assert len(data.val) == 0 and data.class_counts.tolist() == list(TRAIN_COUNTS)
    assert data.manifest.sources["test"]["file"] == "iNaturalist18_val.txt"
    assert data.train.loading.color_jitter == 0.0 and data.mean == (0.466, 0.471, 0.380)


def test_inat_selection_split_is_carved_from_train_with_the_subset_seed(layouts):
    data = _data(layouts["inat2018"], "inat2018", **{"data.selection_per_class": 3})
    expected_val = [min(3, n // 2) for n in TRAIN_COUNTS]
    assert data.val.class_counts().tolist() == expected_val
    assert data.class_counts.tolist() == [n - v for n, v in zip(TRAIN_COUNTS, expected_val, strict=True)]
    assert set(data.val.paths).isdisjoint(data.train.paths) and all(
        p.startswith("train/") for p in data.val.paths
    )
    assert list(data.manifest.val_counts) == expected_val
    again = _data(layouts["inat2018"], "inat2018", **{"data.selection_per_class": 3})
    other = _data(layouts["inat2018"], "inat2018", **{"data.selection_per_class": 3, "data.subset_seed": 5})
    assert again.val.paths == data.val.paths and other.val.paths != data.val.paths


def test_manifest_stores_each_list_files_sha256_and_counts(layouts, tmp_path):
    root = layouts["imagenet_lt"]
    data = _data(root, "imagenet_lt")
    sources = data.manifest.sources
    for role in ("train", "val", "test"):
        name = LIST_NAMES["imagenet_lt"][role]
        assert sources[role]["file"] == name
        assert sources[role]["sha256"] == hashlib.sha256((root / name).read_bytes()).hexdigest()
    assert sources["train"]["class_counts"] == list(TRAIN_COUNTS)
    data.manifest.save_json(tmp_path / "split.json")
    assert SplitManifest.load_json(tmp_path / "split.json") == data.manifest
    # The same images listed in another order are another split: the hash changes.
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    train_list = copy / LIST_NAMES["imagenet_lt"]["train"]
    train_list.write_text("".join(reversed(train_list.read_text().splitlines(keepends=True))))
    assert _data(copy, "imagenet_lt").manifest.sha256() != data.manifest.sha256()


def test_list_file_reads_a_users_lists_from_list_dir(tmp_path):
    write_list_layout(tmp_path / "images", "list_file", list_dir=tmp_path / "lists")
    extra = {
        "data.list_dir": str(tmp_path / "lists"),
        "data.train_list": "my_train.txt",
        "data.val_list": "my_val.txt",
        "data.test_list": "my_test.txt",
    }
    data = _data(tmp_path / "images", "list_file", **extra)
    assert data.class_counts.tolist() == list(TRAIN_COUNTS) and len(data.val) == NUM_CLASSES * VAL_PER_CLASS
    without_val = {**extra, "data.val_list": "null", "data.selection_per_class": 1}
    assert _data(tmp_path / "images", "list_file", **without_val).val.class_counts().tolist() == [1] * 10 + [
        1,
        1,
    ]
    with pytest.raises(ConfigError, match="needs data.train_list and data.test_list"):
        resolve_config("digits-lt", ["data.dataset=list_file"])


def test_image_folder_applies_the_long_tailed_profile_like_cifar(tmp_path):
    write_image_folder(tmp_path, per_class=12)
    data = _data(tmp_path, "image_folder", **{"data.imbalance_ratio": 6, "data.val_per_class": 2})
    expected = long_tail_counts(12, NUM_CLASSES, 6.0, "exp")
    assert data.class_counts.tolist() == list(expected) and data.train.class_names == CLASS_DIRS
    assert data.val.class_counts().tolist() == [min(2, 12 - n) for n in expected]
    assert data.test.class_counts().tolist() == [3] * NUM_CLASSES
    assert set(data.val.paths).isdisjoint(data.train.paths)
    reseeded = _data(tmp_path, "image_folder", **{"data.imbalance_ratio": 6, "data.subset_seed": 3})
    assert reseeded.train.paths != data.train.paths and reseeded.class_counts.tolist() == list(expected)


def test_open_set_list_is_read_with_unknown_labels(layouts):
    cfg = resolve_config("digits-lt", file_overrides(layouts["places_lt"], "places_lt")).data
    opened = read_open_set(cfg, resolve_data_root(cfg), CLASS_DIRS)
    assert len(opened) == OPEN_IMAGES and opened.labels.tolist() == [-1] * OPEN_IMAGES
    batched = build_open_images(cfg, build_data(cfg))
    assert batched.loading.image_size == 16 and batched.paths == opened.paths
    assert all(p.startswith("open/") for p in batched.paths)
    with pytest.raises(ImageFileError, match="no open-set list"):
        cfg = resolve_config("digits-lt", file_overrides(layouts["inat2018"], "inat2018")).data
        read_open_set(cfg, resolve_data_root(cfg), CLASS_DIRS)


def _broken(tmp_path: Path, layouts: dict[str, Path], edit: str) -> Path:
    root = tmp_path / "broken"
    shutil.copytree(layouts["imagenet_lt"], root)
    train = root / LIST_NAMES["imagenet_lt"]["train"]
    lines = train.read_text().splitlines(keepends=True)
    if edit == "missing_list":
        train.unlink()
    elif edit == "garbled":
        lines[4] = "just-a-path\n"
    elif edit == "label":
        lines[4] = "train/n00000000/n00000000_4.JPEG seven\n"
    elif edit == "image":
        (root / lines[4].split()[0]).unlink()
    elif edit == "test_label":
        test = root / LIST_NAMES["imagenet_lt"]["test"]
        test.write_text(test.read_text() + "test/n00000000/n00000000_0.JPEG 12\n")
    if edit in ("garbled", "label"):
        train.write_text("".join(lines))
    return root


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        ("missing_list", ["ImageNet_LT_train.txt", "not found", "data.list_dir"]),
        ("garbled", ["ImageNet_LT_train.txt line 5", "expected 'relative/path label'", "'just-a-path'"]),
        ("label", ["ImageNet_LT_train.txt line 5", "label 'seven'"]),
        ("image", ["n00000000_4.JPEG", "ImageNet_LT_train.txt line 5", "1 of 115", "set data.root"]),
        ("test_label", ["ImageNet_LT_test.txt line 49", "label 12 is not a class of the train list (0..11)"]),
    ],
)
def test_missing_or_garbled_files_are_one_clear_error_line(tmp_path, layouts, edit, fragments):
    root = _broken(tmp_path, layouts, edit)
    with pytest.raises(ImageFileError) as info:
        _data(root, "imagenet_lt")
    message = str(info.value)
    assert isinstance(info.value, CcsamError) and "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_decode_gpu_is_refused_for_array_data_sets():
    with pytest.raises(ConfigError, match="data.decode=gpu decodes image files"):
        resolve_config("digits-lt", ["data.decode=gpu"])


def test_file_splits_stay_on_disk_when_moved_to_a_device(layouts):
    data = _data(layouts["places_lt"], "places_lt")
    moved = data.to(torch.device("cpu"))
    assert moved.train is data.train and moved.manifest is data.manifest


def test_file_data_sets_have_no_array_cache(layouts, tmp_path, capsys):
    from ccsam.cli.main import main

    overrides = file_overrides(layouts["places_lt"], "places_lt")
    assert main(["data", "export", "--out", str(tmp_path / "x.cache"), *overrides]) == 2
    assert "streams image files from disk" in capsys.readouterr().err and not (tmp_path / "x.cache").exists()
    with pytest.raises(ConfigError, match="data.cache holds in-memory splits"):
        resolve_config("digits-lt", [*overrides, "data.cache=x.cache"])


def test_best_val_selection_on_inat_needs_a_carved_split(layouts):
    overrides = file_overrides(
        layouts["inat2018"], "inat2018", **{"stage2.epochs": 1, "stage2.init_from": "best_val"}
    )
    with pytest.raises(ConfigError, match="needs a selection split.*data.selection_per_class"):
        resolve_config("digits-lt", overrides)
    assert (
        resolve_config("digits-lt", [*overrides, "data.selection_per_class=2"]).data.selection_per_class == 2
    )
