"""Batched AutoAugment (CIFAR-10 policy): shapes, determinism, per-sample randomness, per-op exactness."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms.v2 import InterpolationMode

from ccsam.data.autoaugment import (
    CIFAR10_POLICY,
    OPERATIONS,
    SIGNED_OPERATIONS,
    autoaugment,
    autoaugment_cifar10,
    autoaugment_single,
    magnitude_value,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """The small ops here are faster single-threaded, and the CI box is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _images(b: int, c: int = 3, h: int = 32, w: int = 32, low: int = 0, high: int = 256, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (b, c, h, w), dtype=torch.uint8, generator=g)


def _gen(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _only(op: str, prob: float = 1.0, magnitude_bin: int | None = None):
    """A one-sub-policy table that applies ``op`` with ``prob`` and nothing else."""
    return (((op, prob, magnitude_bin), ("Invert", 0.0, None)),)


# ----------------------------------------------------------------------------- shapes and determinism


@pytest.mark.parametrize("shape", [(64, 3, 32, 32), (16, 1, 28, 28), (8, 3, 24, 40), (0, 3, 32, 32)])
def test_shape_dtype_device_preserved_and_input_untouched(shape):
    x = _images(*shape)
    before = x.clone()
    y = autoaugment_cifar10(x, _gen(1))
    assert y.shape == x.shape and y.dtype == torch.uint8 and y.device == x.device
    assert torch.equal(x, before)
    assert y.data_ptr() != x.data_ptr() or x.numel() == 0


def test_same_seed_same_output_different_seed_different_output():
    x = _images(128)
    a = autoaugment_cifar10(x, _gen(7))
    b = autoaugment_cifar10(x, _gen(7))
    c = autoaugment_cifar10(x, _gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_generator_state_advances():
    x = _images(64)
    g = _gen(3)
    assert not torch.equal(autoaugment_cifar10(x, g), autoaugment_cifar10(x, g))


# ----------------------------------------------------------------------------- per-sample randomness


def _changes_noise_image(op: str, magnitude_bin: int | None) -> bool:
    """Whether ``op`` alters a noise image with values in 20..219 (Color at bin 0 is factor 1: a no-op)."""
    return not (op == "Color" and magnitude_bin == 0)


def test_per_sample_randomness_and_skip_rate():
    base = _images(1, h=16, w=16, low=20, high=220, seed=5)
    n = 1024
    x = base.expand(n, -1, -1, -1).contiguous()
    y = autoaugment_cifar10(x, _gen(11))

    distinct = torch.unique(y.flatten(1), dim=0).shape[0]
    # one draw for the whole batch would give a single output; the policy allows ~200 distinct ones
    assert distinct > 50, f"only {distinct} distinct outputs: randomness is not per sample"

    unchanged = (y == x).flatten(1).all(1).float().mean().item()
    expected = sum(
        (1 - p1 * _changes_noise_image(o1, b1)) * (1 - p2 * _changes_noise_image(o2, b2))
        for (o1, p1, b1), (o2, p2, b2) in CIFAR10_POLICY
    ) / len(CIFAR10_POLICY)
    # binomial std at n = 1024 is about 0.015; the bound is ~4 std
    assert abs(unchanged - expected) < 0.06, (unchanged, expected)


def test_probability_is_per_sample():
    x = _images(512, h=8, w=8)
    y = autoaugment(x, _gen(2), _only("Invert", 0.3))
    inverted = (y == 255 - x).flatten(1).all(1)
    kept = (y == x).flatten(1).all(1)
    assert bool((inverted | kept).all())
    assert 0.22 < inverted.float().mean().item() < 0.38


def test_sub_policies_are_drawn_uniformly():
    x = _images(600, h=8, w=8, low=1, high=255)
    policy = (
        (("Invert", 1.0, None), ("Invert", 0.0, None)),
        (("Posterize", 1.0, 9), ("Invert", 0.0, None)),
        (("Invert", 0.0, None), ("Invert", 0.0, None)),
    )
    y = autoaugment(x, _gen(4), policy)
    inverted = (y == 255 - x).flatten(1).all(1).float().mean().item()
    posterized = (y == (x & 0xF0)).flatten(1).all(1).float().mean().item()
    kept = (y == x).flatten(1).all(1).float().mean().item()
    for frac in (inverted, posterized, kept):
        assert abs(frac - 1 / 3) < 0.08, (inverted, posterized, kept)


# ----------------------------------------------------------------------------- operations, exactly


def test_invert_exact():
    x = _images(32)
    assert torch.equal(autoaugment(x, _gen(0), _only("Invert")), 255 - x)


@pytest.mark.parametrize("magnitude_bin", [2, 3, 5, 8])
def test_solarize_exact(magnitude_bin):
    x = _images(32)
    t = 255 * (9 - magnitude_bin) / 9
    expected = torch.where(x.int() < t, x.int(), 255 - x.int()).to(torch.uint8)
    assert torch.equal(autoaugment(x, _gen(0), _only("Solarize", 1.0, magnitude_bin)), expected)


@pytest.mark.parametrize(("magnitude_bin", "bits"), [(0, 8), (2, 7), (4, 6), (7, 5), (9, 4)])
def test_posterize_exact(magnitude_bin, bits):
    x = _images(32)
    mask = 0xFF & ~((1 << (8 - bits)) - 1)
    y = autoaugment(x, _gen(0), _only("Posterize", 1.0, magnitude_bin))
    assert torch.equal(y, x & mask)


def test_translate_x_is_integer_shift_with_fill():
    # bin 9 on width 32: 150/331 * 32 = 14.5 -> 14 pixels, either direction
    x = _images(64, low=1, high=256)
    y = autoaugment(x, _gen(0), _only("TranslateX", 1.0, 9), fill=0)
    right = torch.zeros_like(x)
    right[..., 14:] = x[..., :-14]
    left = torch.zeros_like(x)
    left[..., :-14] = x[..., 14:]
    is_right = (y == right).flatten(1).all(1)
    is_left = (y == left).flatten(1).all(1)
    assert bool((is_right | is_left).all())
    assert 10 < int(is_right.sum()) < 54


def test_fill_value_used():
    x = _images(16, low=1, high=255)
    y = autoaugment(x, _gen(0), _only("TranslateY", 1.0, 9), fill=128)
    rows_filled = (y == 128).all(dim=-1).all(dim=1)  # [B, H]: rows entirely at the fill value
    assert bool((rows_filled.sum(1) == 14).all())


def _single(op: str, image: torch.Tensor, value: float) -> torch.Tensor:
    """Independent single-image torchvision v2 reference for one operation."""
    nearest = InterpolationMode.NEAREST
    if op == "Rotate":
        return TF.rotate(image, angle=value, interpolation=nearest, fill=[0.0])
    if op == "ShearY":
        return TF.affine(image, angle=0.0, translate=[0, 0], scale=1.0, interpolation=nearest,
                         shear=[0.0, float(torch.atan(torch.tensor(value, dtype=torch.float64)).rad2deg())],
                         fill=[0.0], center=[0, 0])
    if op == "Brightness":
        return TF.adjust_brightness(image, 1.0 + value)
    if op == "Contrast":
        return TF.adjust_contrast(image, 1.0 + value)
    if op == "Color":
        return TF.adjust_saturation(image, 1.0 + value)
    if op == "Sharpness":
        return TF.adjust_sharpness(image, 1.0 + value)
    raise AssertionError(op)


@pytest.mark.parametrize(("op", "magnitude_bin"), [("Rotate", 2), ("ShearY", 8), ("Brightness", 9),
                                                   ("Contrast", 7), ("Color", 9), ("Sharpness", 5)])
def test_signed_op_matches_single_image_torchvision(op, magnitude_bin):
    x = _images(24, h=16, w=16)
    y = autoaugment(x, _gen(9), _only(op, 1.0, magnitude_bin))
    m = magnitude_value(op, magnitude_bin, 16, 16)
    signs = []
    for i in range(x.shape[0]):
        plus, minus = _single(op, x[i], m), _single(op, x[i], -m)
        assert not torch.equal(plus, minus)
        if torch.equal(y[i], plus):
            signs.append(1)
        elif torch.equal(y[i], minus):
            signs.append(-1)
        else:
            raise AssertionError(f"sample {i} matches neither sign of {op}")
    assert 1 in signs and -1 in signs, "sign is not drawn per sample"


@pytest.mark.parametrize("op", ["Equalize", "AutoContrast"])
def test_per_image_statistics_ops_match_single_image(op):
    # images with different ranges: batch-wide statistics would give a different result
    x = torch.cat([_images(4, low=0, high=100, seed=1), _images(4, low=120, high=256, seed=2)])
    y = autoaugment(x, _gen(0), _only(op))
    fn = TF.equalize if op == "Equalize" else TF.autocontrast
    for i in range(x.shape[0]):
        assert torch.equal(y[i], fn(x[i]))
    if op == "AutoContrast":  # independent: per-channel min-max stretch to 0..255
        lo = x.amin(dim=(-2, -1), keepdim=True).float()
        hi = x.amax(dim=(-2, -1), keepdim=True).float()
        ref = ((x.float() - lo) * (255.0 / (hi - lo))).clamp(0, 255)
        assert (y.float() - ref).abs().max() <= 1.0


def test_two_ops_apply_in_order():
    x = _images(16)
    policy = ((("Posterize", 1.0, 9), ("Invert", 1.0, None)),)
    assert torch.equal(autoaugment(x, _gen(0), policy), 255 - (x & 0xF0))
    policy = ((("Solarize", 1.0, 0), ("Posterize", 1.0, 9)),)  # threshold 255: only 255 -> 0
    expected = torch.where(x == 255, torch.zeros_like(x), x) & 0xF0
    assert torch.equal(autoaugment(x, _gen(0), policy), expected)


def test_grayscale_runs_every_operation():
    x = _images(8, c=1, h=16, w=16)
    for op in sorted(OPERATIONS):
        magnitude_bin = None if magnitude_value(op, 0, 1, 1) is None else 7
        y = autoaugment(x, _gen(0), _only(op, 1.0, magnitude_bin))
        assert y.shape == x.shape
        assert torch.equal(y, x) == (op == "Color"), op  # Color (saturation) is a no-op on one channel


# ----------------------------------------------------------------------------- one image (DataLoader path)


@pytest.mark.parametrize(("channels", "fill"), [(3, 128), (1, 0), (3, (10, 20, 30))])
def test_single_image_path_equals_the_batched_path_on_a_batch_of_one(channels, fill):
    # every sub-policy, both signs and skip/apply are hit over 400 seeds (25 sub-policies, p >= 0.1)
    images = _images(400, c=channels, low=20, high=220, seed=channels)
    changed = 0
    for seed in range(400):
        x = images[seed : seed + 1]
        batched_gen, single_gen = _gen(seed), _gen(seed)
        expected = autoaugment_cifar10(x, batched_gen, fill=fill)
        got = autoaugment_single(x, single_gen, fill=fill)
        assert torch.equal(got, expected), seed
        assert torch.equal(single_gen.get_state(), batched_gen.get_state()), seed  # same number of draws
        changed += not torch.equal(got, x)
    assert changed > 200  # most samples change (74% here): the comparison is not between unchanged copies


def test_single_image_path_refuses_batches_and_keeps_empty_images():
    with pytest.raises(ValueError, match="one image"):
        autoaugment_single(_images(2), _gen(0))
    empty = torch.zeros(1, 3, 0, 5, dtype=torch.uint8)
    g = _gen(0)
    before = g.get_state()
    assert autoaugment_single(empty, g).shape == empty.shape
    assert torch.equal(g.get_state(), before)  # as the batched path: no draws for an empty image


# ----------------------------------------------------------------------------- the policy table


def test_policy_table():
    assert len(CIFAR10_POLICY) == 25
    for sub in CIFAR10_POLICY:
        assert len(sub) == 2
        for op, prob, magnitude_bin in sub:
            assert op in OPERATIONS
            assert 0.0 <= prob <= 1.0
            if op in ("AutoContrast", "Equalize", "Invert"):
                assert magnitude_bin is None
            else:
                assert isinstance(magnitude_bin, int) and 0 <= magnitude_bin <= 9
    # spot checks against Cubuk et al. (2019), Table 7 (CIFAR-10)
    assert CIFAR10_POLICY[0] == (("Invert", 0.1, None), ("Contrast", 0.2, 6))
    assert CIFAR10_POLICY[1] == (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9))
    assert CIFAR10_POLICY[24] == (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None))
    assert SIGNED_OPERATIONS < OPERATIONS


def test_magnitude_convention():
    assert magnitude_value("ShearX", 9, 32, 32) == pytest.approx(0.3)
    assert magnitude_value("Rotate", 3, 32, 32) == pytest.approx(10.0)
    assert magnitude_value("TranslateX", 9, 32, 64) == pytest.approx(150 / 331 * 64)
    assert magnitude_value("TranslateY", 9, 32, 64) == pytest.approx(150 / 331 * 32)
    assert magnitude_value("Color", 0, 32, 32) == 0.0
    assert magnitude_value("Brightness", 9, 32, 32) == pytest.approx(0.9)
    assert [magnitude_value("Posterize", b, 1, 1) for b in range(10)] == [8, 8, 7, 7, 6, 6, 5, 5, 4, 4]
    assert magnitude_value("Solarize", 0, 1, 1) == 255.0 and magnitude_value("Solarize", 9, 1, 1) == 0.0
    assert magnitude_value("Solarize", 3, 1, 1) == 170.0
    assert magnitude_value("Equalize", None, 1, 1) is None


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.zeros(2, 3, 8, 8), "uint8"),
        (torch.zeros(3, 8, 8, dtype=torch.uint8), r"\[B, C, H, W\]"),
        (torch.zeros(2, 2, 8, 8, dtype=torch.uint8), "1 or 3 channels"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.uint8, device="meta"), "generator is on"),
    ],
)
def test_bad_input_raises_value_error(images, message):
    with pytest.raises(ValueError, match=message):
        autoaugment_cifar10(images, _gen(0))


def test_bad_generator_fill_and_policy_raise_value_error():
    x = _images(2, h=8, w=8)
    with pytest.raises(ValueError, match="torch.Generator"):
        autoaugment_cifar10(x, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fill"):
        autoaugment_cifar10(x, _gen(0), fill=300)
    with pytest.raises(ValueError, match="fill"):
        autoaugment_cifar10(x, _gen(0), fill=(1, 2))
    with pytest.raises(ValueError, match="unknown"):
        autoaugment(x, _gen(0), _only("Blur", 1.0, 3))
    with pytest.raises(ValueError, match="probability"):
        autoaugment(x, _gen(0), _only("Invert", 1.5))
    with pytest.raises(ValueError, match="magnitude bin"):
        autoaugment(x, _gen(0), _only("Rotate", 1.0, 10))


# ----------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_contract_and_cpu_ops():
    x = _images(1, low=20, high=220).expand(256, -1, -1, -1).contiguous().cuda()
    a = autoaugment_cifar10(x, _gen(5, "cuda"))
    b = autoaugment_cifar10(x, _gen(5, "cuda"))
    assert a.device == x.device and a.dtype == torch.uint8 and a.shape == x.shape
    assert torch.equal(a, b)
    assert torch.unique(a.flatten(1), dim=0).shape[0] > 30  # per-sample draws on CUDA too
    with pytest.raises(ValueError, match="generator is on"):
        autoaugment_cifar10(x, _gen(0))
    # integer-exact operations give the same pixels on CUDA as on CPU
    for op, magnitude_bin in [("Equalize", None), ("Invert", None), ("Solarize", 3), ("Posterize", 7)]:
        policy = ((op, 1.0, magnitude_bin), (op, 0.0, magnitude_bin))
        gpu = autoaugment(x, _gen(0, "cuda"), (policy,))
        cpu = autoaugment(x.cpu(), _gen(0), (policy,))
        assert torch.equal(gpu.cpu(), cpu), op
