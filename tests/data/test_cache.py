"""The one-file data cache: lossless MED codec, exact round trip, and refusal of mismatched configs."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from ccsam.config import resolve_config
from ccsam.data.build import build_data
from ccsam.data.cache import DataCacheError, export_cache, load_cache, med_decode, med_encode


def test_med_codec_round_trips_random_and_extreme_images():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 3, 9, 5), dtype=np.uint8)
    images[0] = 255
    images[1] = 0
    images[2, :, ::2] = 255  # stripes
    assert np.array_equal(med_decode(med_encode(images)), images)


def test_med_prediction_on_a_hand_example():
    image = np.array([[[10, 20], [30, 25]]], dtype=np.uint8)
    # (0,0): 10 - 0; (0,1): left 10, up 0, ul 0 -> ul <= min -> max = 10 -> 20 - 10 = 10;
    # (1,0): left 0, up 10, ul 0 -> 10 -> 30 - 10 = 20; (1,1): left 30, up 20, ul 10 -> ul <= min -> 30 -> 25-30 = -5
    assert med_encode(image).tolist() == [[[10, 10], [20, 251]]]


def test_cache_round_trip_equals_the_built_data(tmp_path, tiny_overrides):
    config = resolve_config("digits-lt", tiny_overrides())
    data = build_data(config.data)
    info = export_cache(data, config.data, tmp_path / "data.cache")
    assert info["bytes"] > 0
    cached_cfg = config.data.model_copy(update={"cache": str(tmp_path / "data.cache")})
    loaded = build_data(cached_cfg)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(loaded, split).images, getattr(data, split).images)
        assert torch.equal(getattr(loaded, split).labels, getattr(data, split).labels)
    assert loaded.manifest.sha256() == data.manifest.sha256() and loaded.mean == data.mean
    assert torch.equal(loaded.class_counts, data.class_counts)


def test_cache_refuses_other_configs_overwrites_and_corruption(tmp_path, tiny_overrides):
    config = resolve_config("digits-lt", tiny_overrides())
    path = tmp_path / "data.cache"
    export_cache(build_data(config.data), config.data, path)
    with pytest.raises(DataCacheError, match="already exists"):
        export_cache(build_data(config.data), config.data, path)
    other = resolve_config("digits-lt", tiny_overrides(**{"data.imbalance_ratio": 5})).data
    with pytest.raises(DataCacheError, match="data.imbalance_ratio"):
        load_cache(path, other)
    payload = torch.load(path, weights_only=False)
    pixels = bytearray(zlib.decompress(payload["train"]["pixels"].numpy().tobytes()))
    pixels[5] ^= 1
    payload["train"]["pixels"] = torch.frombuffer(bytearray(zlib.compress(bytes(pixels))), dtype=torch.uint8)
    torch.save(payload, tmp_path / "bad.cache")
    with pytest.raises(DataCacheError, match="corrupt"):
        load_cache(tmp_path / "bad.cache", config.data)
    with pytest.raises(DataCacheError, match="not found"):
        load_cache(tmp_path / "missing.cache", config.data)


def test_med_residuals_compress_real_cifar(shared_data_root):
    config = resolve_config("cifar10-lt-ccsam-official", [f"data.root={shared_data_root}"])
    images = build_data(config.data).test.images[:2000].numpy()
    ratio = len(zlib.compress(med_encode(images).tobytes(), 9)) / images.nbytes
    plain = len(zlib.compress(images.tobytes(), 9)) / images.nbytes
    # MED residuals beat plain zlib clearly (the whole CIFAR-10-LT IR 100 export is 48 MB of 69 MB)
    assert ratio < 0.75 and ratio < plain - 0.1
    assert np.array_equal(med_decode(med_encode(images[:200])), images[:200])
