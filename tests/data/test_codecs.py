"""The image codecs: torchvision.io and Pillow decode to the same pixels, each reads the other's PNG, and
both refuse garbage with a ValueError (torchvision 0.29 deprecates its codecs; Pillow takes over)."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ccsam.data.cache import PNG_MAX_PIXELS, png_decode, png_encode
from ccsam.data.codecs import BACKENDS, decode_png, decode_rgb, default_backend, encode_png
from ccsam.data.readers import read_cifar10

# Pillow always; torchvision.io where this torchvision still has its image codecs
AVAILABLE = BACKENDS if default_backend() == "torchvision" else ("pillow",)
needs_torchvision_io = pytest.mark.skipif(
    default_backend() != "torchvision", reason="this torchvision has no image codecs to compare Pillow with"
)


@pytest.fixture(scope="module")
def cifar_mosaic(shared_data_root) -> torch.Tensor:
    """64 real CIFAR-10 test images tiled 8 x 8: uint8 [3, 256, 256] with natural image statistics."""
    images = read_cifar10(shared_data_root, "test").images[:64]
    return images.reshape(8, 8, 3, 32, 32).permute(2, 0, 3, 1, 4).reshape(3, 256, 256).contiguous()


def _pillow_file(image: torch.Tensor, fmt: str, **options: object) -> torch.Tensor:
    """The bytes of ``image`` (uint8 [C, H, W]) saved by Pillow, written independently of ccsam's codecs."""
    array = image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("channels", [1, 3])
def test_png_round_trips_exactly_and_each_backend_reads_the_others_streams(backend, channels):
    g = torch.Generator().manual_seed(channels)
    image = torch.randint(0, 256, (channels, 37, 23), dtype=torch.uint8, generator=g)
    image[:, 0] = 255
    image[:, 1] = 0
    stream = encode_png(image, level=6, backend=backend)
    assert bytes(stream[:8].tolist()) == b"\x89PNG\r\n\x1a\n"
    for reader in AVAILABLE:
        assert torch.equal(decode_png(stream, backend=reader), image)


@needs_torchvision_io
@pytest.mark.parametrize("quality", [50, 90])
@pytest.mark.parametrize("subsampling", [0, 2])  # 4:4:4 and 4:2:0 chroma
def test_jpeg_decodes_to_identical_pixels_with_both_backends(cifar_mosaic, quality, subsampling):
    data = _pillow_file(cifar_mosaic, "JPEG", quality=quality, subsampling=subsampling)
    ours = decode_rgb(data, backend="pillow")
    assert ours.dtype == torch.uint8 and ours.shape == (3, 256, 256)
    assert torch.equal(ours, decode_rgb(data, backend="torchvision"))
    # and both are a decoding of these pixels, not an agreement of two wrong decoders
    error = (ours.float() - cifar_mosaic.float()).abs().mean().item()
    assert error < (10.0 if quality == 50 else 6.0)  # measured 4.4 at quality 90 with 4:2:0 chroma


@pytest.mark.parametrize("backend", AVAILABLE)
def test_decode_rgb_converts_grayscale_palette_and_alpha_images_to_rgb(cifar_mosaic, backend):
    rgb = cifar_mosaic[:, :40, :48]
    gray = _pillow_file(rgb[:1], "PNG")
    assert torch.equal(decode_rgb(gray, backend=backend), rgb[:1].expand(3, -1, -1))
    rgba = torch.cat([rgb, torch.full_like(rgb[:1], 7)])
    assert torch.equal(decode_rgb(_pillow_file(rgba, "PNG"), backend=backend), rgb)
    palette = Image.fromarray(rgb.permute(1, 2, 0).numpy()).quantize(colors=16)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG")
    expected = torch.from_numpy(np.array(palette.convert("RGB"))).permute(2, 0, 1)
    decoded = decode_rgb(torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8), backend=backend)
    assert torch.equal(decoded, expected)


@pytest.mark.parametrize("backend", AVAILABLE)
def test_garbage_and_truncated_data_are_one_value_error(cifar_mosaic, backend):
    garbage = torch.arange(200, dtype=torch.uint8)
    jpeg = _pillow_file(cifar_mosaic, "JPEG")
    for decode in (decode_png, decode_rgb):
        with pytest.raises(ValueError):
            decode(garbage, backend=backend)
    with pytest.raises(ValueError):
        decode_png(jpeg, backend=backend)  # a JPEG is not a PNG
    with pytest.raises(ValueError, match="back end"):
        decode_rgb(jpeg, backend="gif")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="uint8"):
        encode_png(torch.zeros(2, 4, 4, dtype=torch.uint8), backend=backend)


@needs_torchvision_io
def test_cache_streams_written_by_one_backend_decode_with_the_other():
    images = torch.randint(0, 256, (70, 3, 9, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    for writer, reader in (("pillow", "torchvision"), ("torchvision", "pillow")):
        streams, sizes = png_encode(images, level=3, backend=writer)
        assert torch.equal(png_decode(streams, sizes, tuple(images.shape), backend=reader), images)


def test_cache_keeps_every_png_under_the_pixel_cap():
    # 3 images of 1 x 4096 x 4096 = 16.8 M pixels each: at most PNG_MAX_PIXELS = 33.6 M pixels per PNG -> 2 PNGs
    images = torch.zeros(3, 1, 4096, 4096, dtype=torch.uint8)
    images[1, 0, ::7] = 200
    streams, sizes = png_encode(images, level=1, backend="pillow")
    assert len(sizes) == 2 and 2 * 4096 * 4096 <= PNG_MAX_PIXELS
    assert torch.equal(png_decode(streams, sizes, tuple(images.shape), backend="pillow"), images)


def test_a_torchvision_without_image_codecs_falls_back_to_pillow_in_a_fresh_process():
    # as torchvision will be once its deprecated codecs are removed: the names are gone from torchvision.io
    # (today's transforms.v2 imports decode_jpeg itself, so it is imported before the names go)
    script = """
import torch, torchvision.io as tvio, torchvision.transforms.v2
for name in ("encode_png", "decode_png", "decode_image", "decode_jpeg"):
    delattr(tvio, name)
from ccsam.data import codecs
from ccsam.data.cache import png_decode, png_encode
assert codecs.default_backend() == "pillow"
assert codecs.torchvision_cuda_jpeg_decoder() is None
images = torch.randint(0, 256, (5, 3, 6, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
assert torch.equal(png_decode(*png_encode(images), tuple(images.shape)), images)
try:
    codecs.decode_png(torch.zeros(4, dtype=torch.uint8), backend="torchvision")
except ValueError as exc:
    print("refused:", exc)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused: this torchvision has no image codecs" in result.stdout
