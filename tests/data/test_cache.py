"""The one-file data cache: lossless PNG codec, exact round trip, and refusal of mismatched or old caches."""

from __future__ import annotations

import json
import zlib

import pytest
import torch

from ccsam.config import resolve_config
from ccsam.data.build import build_data
from ccsam.data.cache import PNG_CHUNK, DataCacheError, export_cache, load_cache, png_decode, png_encode


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_png_codec_round_trips_random_and_extreme_images_of_any_channel_count(channels):
    g = torch.Generator().manual_seed(channels)
    images = torch.randint(0, 256, (PNG_CHUNK + 7, channels, 9, 5), dtype=torch.uint8, generator=g)
    images[0] = 255
    images[1] = 0
    images[2, :, ::2] = 255  # stripes
    streams, sizes = png_encode(images)
    assert len(sizes) == 2 and sum(sizes) == streams.numel()  # one PNG per PNG_CHUNK images
    assert torch.equal(png_decode(streams, sizes, tuple(images.shape)), images)
    empty = images[:0]
    assert torch.equal(png_decode(*png_encode(empty), tuple(empty.shape)), empty)


def test_png_codec_keeps_tall_images_under_libpng_row_limit():
    # 1,100 two-column images of 977 rows: 1,024 stacked would pass libpng's 1,000,000 rows (it crashed)
    images = torch.randint(0, 256, (1100, 1, 977, 2), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    streams, sizes = png_encode(images, level=1)
    assert len(sizes) == 2 and torch.equal(png_decode(streams, sizes, tuple(images.shape)), images)
    with pytest.raises(ValueError, match="exceed PNG"):
        png_encode(torch.zeros(1, 2, 600_000, 1, dtype=torch.uint8))


def test_png_decode_refuses_wrong_sizes_garbage_and_wrong_shapes():
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    streams, sizes = png_encode(images)
    with pytest.raises(ValueError, match="do not match"):
        png_decode(streams, [sizes[0] - 1], (4, 3, 8, 8))
    garbage = streams.clone()
    garbage[:16] = 7  # the PNG signature and header
    with pytest.raises(ValueError, match="invalid PNG"):
        png_decode(garbage, sizes, (4, 3, 8, 8))
    with pytest.raises(ValueError, match="expected"):
        png_decode(streams, sizes, (5, 3, 8, 8))


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
    payload["train"]["pixels"][40] ^= 1
    torch.save(payload, tmp_path / "bad.cache")
    with pytest.raises(DataCacheError, match="corrupt"):
        load_cache(tmp_path / "bad.cache", config.data)
    with pytest.raises(DataCacheError, match="not found"):
        load_cache(tmp_path / "missing.cache", config.data)


def test_format_2_caches_are_refused_with_how_to_re_export(tmp_path, tiny_overrides):
    config = resolve_config("digits-lt", tiny_overrides())
    path = tmp_path / "data.cache"
    export_cache(build_data(config.data), config.data, path)
    payload = torch.load(path, weights_only=False)
    meta = json.loads(payload["meta"])
    meta["format"] = 2
    payload["meta"] = json.dumps(meta)
    torch.save(payload, tmp_path / "old.cache")
    with pytest.raises(DataCacheError, match=r"format 2 \(MED \+ zlib pixels\).*ccsam data export") as info:
        load_cache(tmp_path / "old.cache", config.data)
    assert "\n" not in str(info.value)


def test_png_compresses_real_cifar_better_than_plain_zlib(shared_data_root):
    config = resolve_config("cifar10-lt-ccsam-official", [f"data.root={shared_data_root}"])
    images = build_data(config.data).test.images[:2000]
    streams, sizes = png_encode(images)
    ratio = streams.numel() / images.numel()
    plain = len(zlib.compress(images.numpy().tobytes(), 9)) / images.numel()
    # PNG's row filters beat plain zlib clearly (the whole CIFAR-10-LT IR 100 export is 47.9 MB of 69.4 MB)
    assert ratio < 0.75 and ratio < plain - 0.1
    assert torch.equal(png_decode(streams, sizes, tuple(images.shape)), images)
