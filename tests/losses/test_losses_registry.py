"""Loss registry: every entry builds and runs; flags; error messages."""

import dataclasses

import pytest
import torch

from ccsam.losses import LOSSES, build_loss, list_losses

COUNTS = [60, 20, 5]
NAMES = {"ce", "focal", "ldam", "balanced_softmax", "logit_adjusted", "vs", "label_aware_smoothing", "gcl"}


def test_every_name_builds_and_gives_a_differentiable_scalar() -> None:
    assert {name for name, _ in list_losses()} == NAMES
    for name, entry in LOSSES.items():
        loss = build_loss(name, COUNTS)
        logits = (torch.rand(4, 3) * 2 - 1).requires_grad_()
        value = loss(logits, torch.tensor([0, 1, 2, 0]))
        assert value.dim() == 0 and torch.isfinite(value), name
        value.backward()
        assert logits.grad is not None, name
        assert hasattr(loss, "set_epoch") == entry.uses_epoch, name


def test_flags() -> None:
    assert {n for n, e in LOSSES.items() if e.needs_cosine_head} == {"ldam", "gcl"}
    assert {n for n, e in LOSSES.items() if not e.needs_class_counts} == {"ce", "focal"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        LOSSES["ce"].name = "x"  # type: ignore[misc]


def test_kwargs_reach_the_constructor() -> None:
    assert build_loss("ldam", COUNTS, max_margin=0.3, drw_start_epoch=160).drw_start_epoch == 160
    assert build_loss("ce", label_smoothing=0.1).label_smoothing == 0.1


def test_errors() -> None:
    with pytest.raises(ValueError, match="did you mean balanced_softmax"):
        build_loss("balanced_sofmax", COUNTS)
    with pytest.raises(ValueError, match="needs class_counts"):
        build_loss("vs")
    with pytest.raises(ValueError, match="unknown options margin"):
        build_loss("vs", COUNTS, margin=0.1)


def _deterministic(name: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Every registered loss, with DRW on for LDAM and GCL in eval mode (no noise)."""
    extra = {"drw_start_epoch": 0} if name == "ldam" else {}
    return build_loss(name, COUNTS, **extra).to(device=device, dtype=dtype).eval()


def test_losses_follow_module_dtype() -> None:
    g = torch.Generator().manual_seed(0)
    logits, y = torch.rand(6, 3, generator=g) * 2 - 1, torch.tensor([0, 1, 2, 2, 1, 0])
    for name in LOSSES:
        single = _deterministic(name)(logits, y)
        double = _deterministic(name, dtype=torch.float64)(logits.double(), y)
        assert double.dtype == torch.float64 and torch.allclose(single.double(), double, atol=1e-5), name
        half = _deterministic(name)(logits.bfloat16(), y)
        assert half.dtype == torch.float32 and torch.isfinite(half), name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_losses_on_cuda_match_cpu() -> None:
    g = torch.Generator().manual_seed(0)
    logits, y = torch.rand(6, 3, generator=g) * 2 - 1, torch.tensor([0, 1, 2, 2, 1, 0])
    for name in LOSSES:
        cpu = _deterministic(name)(logits, y)
        cuda = _deterministic(name, "cuda")(logits.cuda(), y.cuda())
        assert cuda.is_cuda and torch.allclose(cuda.cpu(), cpu, atol=1e-5), name
    noisy = build_loss("gcl", COUNTS, generator=torch.Generator().manual_seed(1)).cuda()
    assert torch.isfinite(noisy(logits.cuda(), y.cuda()))
