"""Classifier heads, drop-in replacements for ``Classifier.head``: features ``[B, d]`` -> logits ``[B, C]``.

Every head exposes ``in_features``, ``out_features``, ``weight`` (``[C, d]``) and ``bias`` (``[C]`` or
``None``), like ``nn.Linear``.

* ``CosineHead``: normalised (cosine) classifier, used by LDAM and GCL.
* ``TauNormHead`` / ``tau_normalized_weight`` and ``LWSHead``: post-hoc / re-weighting heads of
  Kang et al., "Decoupling Representation and Classifier for Long-Tailed Recognition", ICLR 2020.
"""

from __future__ import annotations

import difflib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ccsam.checks import check_int

__all__ = ["ClassifierHead", "CosineHead", "LWSHead", "TauNormHead", "build_head", "tau_normalized_weight"]


def _finite(name: str, value: object, positive: bool = False) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or (positive and value <= 0)):
        raise ValueError(f"{name} must be a finite{' positive' if positive else ''} number, got {value!r}")
    return float(value)


def _check_linear(linear: object) -> nn.Linear:
    if not isinstance(linear, nn.Linear):
        raise ValueError(f"expected an nn.Linear head, got {type(linear).__name__}")
    return linear


class CosineHead(nn.Module):
    """``logits = s * normalize(f) @ normalize(W)^T``: ``s`` times the feature-to-class-weight cosines.

    No bias (``.bias`` is ``None``). For LDAM and GCL use ``scale=1.0`` (the loss applies its own scale
    after the margin); for a stand-alone cosine classifier ``scale`` around 16-30. Rows of ``W`` start
    with ``nn.Linear``'s default initialisation (their norm does not matter).

    Args:
        in_features: feature width ``d``.
        out_features: number of classes ``C``.
        scale: ``s > 0``.

    Example:
        >>> head = CosineHead(8, 3, scale=1.0)
        >>> bool(head(torch.randn(4, 8)).abs().max() <= 1.0 + 1e-6)
        True
    """

    bias: Tensor | None  # always None: registered as a parameter slot so the head reads like nn.Linear

    def __init__(
        self,
        in_features: int,
        out_features: int,
        scale: float = 30.0,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = check_int("in_features", in_features, low=1)
        self.out_features = check_int("out_features", out_features, low=1)
        self.scale = _finite("scale", scale, positive=True)
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        self.register_parameter("bias", None)
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's default

    def forward(self, features: Tensor) -> Tensor:
        """``s * cos(f_i, w_c)`` of shape ``[B, C]``."""
        return self.scale * F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, scale={self.scale}"


def tau_normalized_weight(weight: Tensor, tau: float) -> Tensor:
    """``w_c / ||w_c||_2^tau`` row-wise (Kang et al. 2020): ``tau = 0`` is identity, ``tau = 1`` unit rows.

    Row norms are clamped at ``1e-12`` so that an all-zero row stays zero. Returns a new tensor.

    Example:
        >>> tau_normalized_weight(torch.tensor([[3.0, 4.0]]), 1.0).tolist()
        [[0.6000000238418579, 0.800000011920929]]
    """
    if not isinstance(weight, Tensor) or weight.dim() != 2 or not weight.is_floating_point():
        raise ValueError("weight must be a floating [C, d] tensor")
    tau = _finite("tau", tau)
    norms = weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return weight / norms.pow(tau)


class TauNormHead(nn.Module):
    """Post-hoc tau-normalised linear head: ``logits = f @ (w_c / ||w_c||^tau)^T + b``.

    Nothing trains: ``weight`` and ``bias`` are buffers (``parameters()`` is empty), copied at
    construction. Kang et al. normalise only the weight; the bias is kept unchanged by default
    (``keep_bias=False`` drops it, the usual choice for heads trained with ``bias=False``). Choose ``tau``
    (about 0.7) on a validation split.

    Example:
        >>> head = TauNormHead.from_linear(nn.Linear(4, 3), tau=0.7)
        >>> head(torch.randn(2, 4)).shape
        torch.Size([2, 3])
    """

    weight: Tensor
    bias: Tensor | None

    def __init__(self, weight: Tensor, bias: Tensor | None, tau: float) -> None:
        super().__init__()
        normalized = tau_normalized_weight(weight, tau).detach().clone()
        if bias is not None and (not isinstance(bias, Tensor) or bias.shape != normalized.shape[:1]):
            raise ValueError(f"bias must be None or a tensor of shape ({normalized.shape[0]},)")
        self.tau = float(tau)
        self.out_features, self.in_features = normalized.shape
        self.register_buffer("weight", normalized)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @classmethod
    def from_linear(cls, linear: nn.Module, tau: float, keep_bias: bool = True) -> TauNormHead:
        """Tau-normalise a trained ``nn.Linear`` head, or an :class:`LWSHead`'s effective weights
        ``f_c w_c`` and bias ``f_c b_c`` (a copy; the head is left unchanged); any other head is refused
        with a ``ValueError``."""
        if isinstance(linear, LWSHead):
            return cls(linear.weight, linear.bias if keep_bias else None, tau)
        linear = _check_linear(linear)
        return cls(linear.weight, linear.bias if keep_bias else None, tau)

    def forward(self, features: Tensor) -> Tensor:
        """``f @ W_tau^T + b`` of shape ``[B, C]``."""
        return F.linear(features, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, tau={self.tau}"


class LWSHead(nn.Module):
    """Learnable weight scaling: ``logits_c = f_c * (w_c . x + b_c)`` with a frozen linear head (Kang et al.).

    ``W`` and ``b`` are copied from ``linear`` into buffers, so the per-class scales ``scales``
    (initialised to 1, i.e. the linear head's logits) are the only parameters; with ``train_linear``
    they are parameters too, trained jointly with the scales (MiSLAS's stage 2), under the same names
    (so the ``state_dict`` keys are the same either way). ``weight`` and ``bias`` are the *effective*
    ``f_c w_c`` and ``f_c b_c``, recomputed on access (not parameters).

    Example:
        >>> head = LWSHead(nn.Linear(4, 3))
        >>> [name for name, _ in head.named_parameters()]
        ['scales']
    """

    linear_weight: Tensor
    linear_bias: Tensor | None

    def __init__(self, linear: nn.Module, train_linear: bool = False) -> None:
        """Wrap a trained ``nn.Linear`` head; any other head is refused with a ``ValueError``."""
        super().__init__()
        linear = _check_linear(linear)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.train_linear = train_linear
        weight = linear.weight.detach().clone()
        bias = None if linear.bias is None else linear.bias.detach().clone()
        if train_linear:
            self.linear_weight = nn.Parameter(weight)
            self.linear_bias = None if bias is None else nn.Parameter(bias)
        else:
            self.register_buffer("linear_weight", weight)
            self.register_buffer("linear_bias", bias)
        self.scales = nn.Parameter(torch.ones_like(weight[:, 0]))

    def linear_parameters(self) -> list[nn.Parameter]:
        """The trainable ``W`` and ``b`` (``train_linear``), else none."""
        return [p for p in (self.linear_weight, self.linear_bias) if isinstance(p, nn.Parameter)]

    @property
    def weight(self) -> Tensor:
        """Effective weight ``f_c w_c``, ``[C, d]``."""
        return self.scales.unsqueeze(1) * self.linear_weight

    @property
    def bias(self) -> Tensor | None:
        """Effective bias ``f_c b_c``, ``[C]``, or ``None``."""
        return None if self.linear_bias is None else self.scales * self.linear_bias

    def forward(self, features: Tensor) -> Tensor:
        """``f * (x @ W^T + b)`` of shape ``[B, C]``."""
        return F.linear(features, self.linear_weight, self.linear_bias) * self.scales

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}"
                + (", train_linear=True" if self.train_linear else ""))


#: The heads a :class:`ccsam.models.Classifier` carries: the trained ``nn.Linear`` / :class:`CosineHead`, and
#: the stage-2 / post-hoc :class:`LWSHead` / :class:`TauNormHead` installed over a linear one. Each has
#: ``in_features``, ``out_features``, a ``[C, d]`` ``weight`` and a ``bias`` (``[C]`` or None) and maps
#: ``[B, d]`` features to ``[B, C]`` logits.
ClassifierHead = nn.Linear | CosineHead | TauNormHead | LWSHead

_HEAD_OPTIONS = {"linear": ("bias", "device", "dtype"), "cosine": ("scale", "device", "dtype")}


def build_head(kind: str, in_features: int, out_features: int, **kw: object) -> nn.Module:
    """Build a trainable head: ``"linear"`` (``nn.Linear``; options bias, device, dtype) or ``"cosine"``
    (:class:`CosineHead`; options scale, device, dtype).

    Example:
        >>> build_head("cosine", 64, 10, scale=1.0).scale
        1.0
    """
    if kind not in _HEAD_OPTIONS:
        close = difflib.get_close_matches(str(kind), list(_HEAD_OPTIONS), n=2)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown head {kind!r}{hint} (valid: {', '.join(_HEAD_OPTIONS)})")
    unknown = sorted(set(kw) - set(_HEAD_OPTIONS[kind]))
    if unknown:
        raise ValueError(f"head {kind!r} got unknown options {', '.join(unknown)}")
    if kind == "cosine":
        return CosineHead(in_features, out_features, **kw)  # type: ignore[arg-type]
    check_int("in_features", in_features, low=1)
    check_int("out_features", out_features, low=1)
    return nn.Linear(in_features, out_features, **kw)  # type: ignore[arg-type]
