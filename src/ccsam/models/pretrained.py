"""Pretrained backbone weights: a local state dict (``model.pretrained=PATH``) or, with consent, torchvision.

A local file is read with ``torch.load(weights_only=True)`` (:func:`ccsam.safe_load.load_torch_file`),
so a crafted file cannot run code. Key names are mapped from torchvision's layout onto
:class:`ccsam.models.Classifier`:

* ``module.`` (DataParallel / DDP) and ``_orig_mod.`` (``torch.compile``) prefixes are stripped;
* a wrapping ``{"state_dict": ...}`` or ``{"model": ...}`` dict is unwrapped; keys already under
  ``backbone.`` / ``head.`` (a ccsam checkpoint's model) keep their place;
* torchvision's classifier ``fc.*`` goes to the ccsam head only with ``load_head=True`` (shapes must
  match); otherwise it is dropped (the usual case: Places-LT's 365 classes are not ImageNet's 1000);
* every other key is a backbone key (``conv1.weight`` -> ``backbone.conv1.weight``).

Nothing is downloaded unless the caller consents (``model.download=true``); then ``source`` names a
torchvision weights entry such as ``IMAGENET1K_V1`` and torchvision's weights API fetches it into the
torch hub cache. Missing and unexpected keys are reported in one log line; a shape mismatch, a file
that is not a state dict, or an unknown weights name is one :class:`PretrainedWeightsError` line.

Places-LT (OLTR protocol) starts from ImageNet-pretrained ResNet-152. To obtain the weights once, on a
machine with internet access::

    import torch, torchvision
    net = torchvision.models.resnet152(weights="IMAGENET1K_V1")  # ResNet152_Weights.IMAGENET1K_V1
    torch.save(net.state_dict(), "resnet152-imagenet1k_v1.pth")

and pass ``model.pretrained=resnet152-imagenet1k_v1.pth`` (the file torchvision caches,
``~/.cache/torch/hub/checkpoints/resnet152-394f9c45.pth``, is the same state dict and works as is).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ccsam.errors import CcsamError
from ccsam.safe_load import load_torch_file

__all__ = ["LoadReport", "PretrainedWeightsError", "load_pretrained", "map_state_dict"]

_logger = logging.getLogger(__name__)

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_FIX = "Pass a state dict saved with torch.save(model.state_dict(), PATH) (README: pretrained weights)"


class PretrainedWeightsError(CcsamError):
    """Pretrained weights that cannot be used: not a state dict, wrong shapes, unknown weights name."""


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_pretrained` did: tensors loaded, keys dropped, missing and unexpected."""

    loaded: int
    dropped: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]

    def line(self, source: str) -> str:
        """The log line ``pretrained 'SRC': loaded N tensors; dropped ...; missing ...; unexpected ...``."""
        return (f"pretrained '{source}': loaded {self.loaded} tensors; dropped {_names(self.dropped)}; "
                f"missing {_names(self.missing)}; unexpected {_names(self.unexpected)}")


def _names(keys: tuple[str, ...], limit: int = 6) -> str:
    if not keys:
        return "none"
    shown = ", ".join(keys[:limit])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > limit else ''})"


def _strip_wrappers(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def map_state_dict(
    state: Mapping[str, Tensor], *, load_head: bool = False
) -> tuple[dict[str, Tensor], list[str]]:
    """Map a torchvision-style state dict onto ``Classifier`` keys; return ``(mapped, dropped keys)``.

    ``conv1.weight`` -> ``backbone.conv1.weight``; ``module.`` / ``_orig_mod.`` prefixes stripped;
    ``fc.weight`` / ``fc.bias`` -> ``head.weight`` / ``head.bias`` when ``load_head``, else dropped;
    keys already starting with ``backbone.`` are kept; ``head.*`` keys are kept with ``load_head`` and
    dropped otherwise. Dropped keys are returned with their original names.

    Example:
        >>> mapped, dropped = map_state_dict({"module.conv1.weight": torch.ones(1), "fc.bias": torch.ones(2)})
        >>> sorted(mapped), dropped
        (['backbone.conv1.weight'], ['fc.bias'])
    """
    mapped: dict[str, Tensor] = {}
    dropped: list[str] = []
    for key, value in state.items():
        name = _strip_wrappers(key)
        if name.startswith("fc.") or name.startswith("head."):
            if not load_head:
                dropped.append(key)
                continue
            target = "head." + name.split(".", 1)[1]
        elif name.startswith("backbone."):
            target = name
        else:
            target = "backbone." + name
        if target in mapped:
            raise PretrainedWeightsError(f"two keys of the weights map to '{target}' (one is '{key}')")
        mapped[target] = value
    return mapped, dropped


def _unwrap(state: object, source: str) -> Mapping[str, Tensor]:
    """The tensor dict inside ``state``: itself, or its ``state_dict`` / ``model`` entry."""
    if isinstance(state, Mapping):
        for wrapper in ("state_dict", "model"):
            inner = state.get(wrapper)
            if isinstance(inner, Mapping):
                state = inner
                break
    if not isinstance(state, Mapping) or not state or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        raise PretrainedWeightsError(
            f"'{source}' is not a state dict (a non-empty dict of named tensors). {_FIX}"
        )
    return state


def _download(arch: str, name: str) -> Mapping[str, Tensor]:
    """torchvision's ``name`` weights of ``arch`` (only called with the user's ``model.download=true``)."""
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(arch)
    except ValueError:
        raise PretrainedWeightsError(
            f"torchvision has no pretrained weights for model.arch={arch}; "
            "pass a local file as model.pretrained"
        ) from None
    valid = [w.name for w in enum]
    if name not in valid + ["DEFAULT"]:
        raise PretrainedWeightsError(
            f"'{name}' is not a torchvision weights name for {arch} "
            f"(valid: {', '.join(valid + ['DEFAULT'])}) "
            "and no such file exists"
        )
    weights = enum.DEFAULT if name == "DEFAULT" else enum[name]
    _logger.info("downloading torchvision %s weights %s (model.download=true)", arch, weights.name)
    return weights.get_state_dict(progress=False, weights_only=True, check_hash=True)


def load_pretrained(
    model: nn.Module, source: str, *, arch: str, download: bool = False, load_head: bool = False
) -> LoadReport:
    """Load pretrained weights into ``model`` (a ``Classifier``) in place and log one report line.

    Args:
        model: the freshly built classifier (before any wrapping or spectral norm).
        source: a local state-dict file, or (with ``download``) a torchvision weights name of ``arch``
            (``IMAGENET1K_V1``, ``IMAGENET1K_V2``, ``DEFAULT``).
        arch: the ``model.arch`` name (to look up torchvision weights).
        download: consent to fetch torchvision weights when ``source`` is not an existing file.
        load_head: also load the source's classifier ``fc`` into ``model.head`` (shapes must match).

    Returns:
        The :class:`LoadReport`; missing keys exclude BatchNorm ``num_batches_tracked`` counters.

    Example::

        model = build_model("resnet152", in_channels=3, num_classes=365)
        report = load_pretrained(model, "resnet152-imagenet1k_v1.pth", arch="resnet152")
    """
    path = Path(source).expanduser()
    if path.is_file():
        raw = load_torch_file(path, "pretrained-weights file", _FIX)
    elif download:
        raw = _download(arch, source)
    else:
        raise PretrainedWeightsError(
            f"model.pretrained file '{source}' not found; nothing is downloaded unless model.download=true "
            f"(then model.pretrained names torchvision weights, e.g. IMAGENET1K_V1)"
        )
    mapped, dropped = map_state_dict(_unwrap(raw, source), load_head=load_head)
    own = model.state_dict()
    bad = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in mapped.items()
           if k in own and own[k].shape != v.shape]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise PretrainedWeightsError(
            f"'{source}' does not fit model.arch={arch}: shape mismatch {'; '.join(bad[:3])}{more} "
            "(another architecture, class count or input channels?)"
        )
    with torch.no_grad():
        result = model.load_state_dict(mapped, strict=False)
    missing = tuple(k for k in result.missing_keys if not k.endswith("num_batches_tracked")
                    and (load_head or not k.startswith("head.")))
    report = LoadReport(len(mapped) - len(result.unexpected_keys), tuple(dropped), missing,
                        tuple(result.unexpected_keys))
    if report.loaded == 0:
        raise PretrainedWeightsError(f"no key of '{source}' matches model.arch={arch}: {report.line(source)}")
    _logger.info("%s", report.line(source))
    return report
