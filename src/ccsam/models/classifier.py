"""A backbone plus a linear head, with the hooks that stage 2, cRT and CC-SAM need.

Stage-2 code (classifier re-training, adversarial features, head-only CC-SAM) talks to a model only
through ``features``, ``head``, ``freeze_backbone`` and ``reset_head`` (STYLE G9), so it never reaches
into a backbone's internals or through a wrapper's ``.module``.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import Tensor, nn

from ccsam.checks import check_int
from ccsam.models.heads import ClassifierHead

__all__ = ["Classifier"]


class Classifier(nn.Module):
    """``logits = head(backbone(x))`` with ``head = nn.Linear(feature_dim, num_classes)`` (or another
    :data:`~ccsam.models.heads.ClassifierHead` installed later: cosine, LWS, tau-norm).

    The head gets PyTorch's default ``nn.Linear`` initialisation (as in the official CC-SAM code; LDAM-DRW's
    ``resnet32`` re-initialises it Kaiming-normal: ``model.head_init=kaiming_normal`` in the training engine).

    Args:
        backbone: module mapping an input batch to features of shape ``[B, feature_dim]``.
        feature_dim: width of the backbone's output.
        num_classes: number of classes (rows of the head's weight).
        bias: whether the head has a bias.

    Example:
        >>> import torch
        >>> from ccsam.models import build_model
        >>> model = build_model("resnet32", in_channels=3, num_classes=10)
        >>> model(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, bias: bool = True) -> None:
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise ValueError(f"backbone must be an nn.Module, got {type(backbone).__name__}")
        check_int("feature_dim", feature_dim, low=1)
        check_int("num_classes", num_classes, low=1)
        self.backbone = backbone
        # a linear head here; the engine may install a cosine head (LDAM / GCL), an LWS or a tau-norm head
        self.head: ClassifierHead = nn.Linear(feature_dim, num_classes, bias=bias)
        self._train_from: str | None = None  # freeze_backbone_before: the prefix's BatchNorm stays in eval mode

    def train(self, mode: bool = True) -> Classifier:
        """``nn.Module.train``, except that the BatchNorm layers of a frozen backbone prefix
        (:meth:`freeze_backbone_before`) stay in eval mode (they normalise with their running statistics
        and never update them). Found by name each time, so layers replaced later (SyncBatchNorm) count."""
        super().train(mode)
        for module in self.frozen_prefix_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    def frozen_prefix_modules(self) -> list[nn.Module]:
        """The backbone modules before the one :meth:`freeze_backbone_before` named, in order (none if it
        was not called)."""
        prefix: list[nn.Module] = []
        if self._train_from is not None:
            for name, module in self.backbone.named_modules():
                if name == self._train_from:
                    break
                prefix.append(module)
        return prefix

    def freeze_backbone_before(self, name: str) -> None:
        """Freeze every backbone parameter that comes before module ``name`` (a dotted name inside the
        backbone, e.g. ``layer4.2``) in the backbone's order, and keep that prefix's BatchNorm layers in
        eval mode from now on; ``name`` and everything after it train. This is the Places-LT protocol of
        OLTR / MiSLAS / GCL: an ImageNet ResNet-152 frozen up to its last bottleneck. A ``ValueError``
        names the backbone's top-level modules if ``name`` is not one of its modules with parameters."""
        names = [n for n, _ in self.backbone.named_parameters()]
        first = next((i for i, n in enumerate(names) if n.startswith(name + ".")), None)
        if first is None:
            tops = ", ".join(n for n, m in self.backbone.named_children() if any(True for _ in m.parameters()))
            raise ValueError(f"the backbone has no module {name!r} with parameters (its top-level ones: {tops})")
        frozen = set(names[:first])
        for n, p in self.backbone.named_parameters():
            if n in frozen:
                p.requires_grad_(False)
        self._train_from = name
        self.train(self.training)

    @property
    def feature_dim(self) -> int:
        """Width of the features fed to the head."""
        return self.head.in_features

    @property
    def num_classes(self) -> int:
        """Number of output logits (follows ``reset_head(num_classes)``)."""
        return self.head.out_features

    def features(self, x: Tensor) -> Tensor:
        """Backbone features ``z = backbone(x)`` of shape ``[B, feature_dim]``."""
        z = self.backbone(x)
        if z.dim() != 2 or z.shape[1] != self.feature_dim:
            raise ValueError(
                f"backbone returned shape {tuple(z.shape)}, expected [B, {self.feature_dim}]"
            )
        return z

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``head(z)`` with ``z = features(x)`` (``W z + b`` for a linear head), ``[B, num_classes]``."""
        return self.head(self.features(x))

    def freeze_backbone(self) -> None:
        """Set ``requires_grad = False`` on every backbone parameter; the head stays trainable.

        BatchNorm running statistics still update while the backbone is in train mode: whether stage 2
        keeps BN in train mode (released code) or calls ``model.backbone.eval()`` is the caller's choice.
        """
        for p in self.backbone.parameters():
            p.requires_grad_(False)

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """Iterate over the head's parameters (weight, then bias if any)."""
        return self.head.parameters()

    def reset_head(self, num_classes: int | None = None) -> None:
        """Replace the head by a freshly initialised ``nn.Linear`` (cRT-style re-initialisation).

        The new head keeps ``feature_dim``, the bias setting, and the old head's device and dtype;
        ``num_classes`` defaults to the current number of classes. The head's parameters are new
        objects, so build the head optimizer *after* calling this.
        """
        out = self.num_classes if num_classes is None else check_int("num_classes", num_classes, low=1)
        old = self.head
        self.head = nn.Linear(
            old.in_features,
            out,
            bias=old.bias is not None,
            device=old.weight.device,
            dtype=old.weight.dtype,
        )

    def extra_repr(self) -> str:
        return f"feature_dim={self.feature_dim}, num_classes={self.num_classes}"
