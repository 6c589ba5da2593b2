"""Paper-faithful CC-SAM with a perturbation scope beyond the head (ccsam-spec §1.1, §8 ``perturb_scope``).

The released code perturbs only the linear head, which has a closed form
(:func:`ccsam.method.head.class_conditional_logits`). Perturbing the last ``k`` backbone blocks or the
whole network has none, so here each class present in the batch gets its own gradient (one
``torch.autograd.grad``) and its own forward pass at ``w + eps_c`` through
``torch.func.functional_call``: a Python loop over classes, which STYLE G4 allows for this case. The
model's parameters are never mutated.

Per step (``P`` classes in the batch, ``B`` samples): one clean forward, ``P`` backward passes for
the class gradients (each only through the part of the graph that reaches ``params``), ``P`` forward
passes over the class subsets (``B`` rows in all), and the caller's single backward through the clean
and the ``P`` perturbed graphs. The graph keeps ``P`` perturbed copies of ``params`` until then.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ccsam.checks import check_int
from ccsam.method._common import check_counts
from ccsam.method.radius import GRAD_NORM_FLOOR, PARAM_NORM_EPS, ccsam_radius, global_norm
from ccsam.method.stage1 import Criterion
from ccsam.models.bn import BatchStatistics, bn_stats_frozen, normalised_with, recorded_batch_statistics

__all__ = ["ClassPassBn", "PerturbScope", "class_conditional_loss", "select_parameters"]

PerturbScope = Literal["head", "last_k", "all"]
ClassPassBn = Literal["class_rows", "batch"]


def select_parameters(model: nn.Module, scope: PerturbScope, k: int = 1) -> list[nn.Parameter]:
    """The trainable parameters that CC-SAM perturbs for a perturbation ``scope``.

    * ``"head"``: ``model.head``'s parameters (weight, then bias).
    * ``"last_k"``: the parameters of the last ``k`` blocks of ``model.backbone``, then the head's.
      Blocks are ``model.backbone.children()`` flattened one level (a child that is an
      ``nn.Sequential`` or ``nn.ModuleList`` contributes its own children, e.g. the BasicBlocks of a
      CIFAR ResNet's ``layer1..layer3``; any other child is one block), keeping only blocks that have
      trainable parameters. For ResNet-32, ``k = 1`` is ``layer3[4]`` and ``k = 5`` all of ``layer3``.
    * ``"all"``: every trainable parameter of ``model`` (``model.parameters()`` order).

    Parameters with ``requires_grad = False`` (e.g. a frozen backbone) are left out; each parameter
    appears once, in module registration order.

    Args:
        model: a :class:`ccsam.models.Classifier` (or any module with ``backbone`` and ``head``).
        scope: ``"head"``, ``"last_k"`` or ``"all"``.
        k: number of backbone blocks for ``"last_k"`` (``1 <= k <=`` the number of blocks).

    Returns:
        The parameters, a non-empty list.

    Example:
        >>> from ccsam.models import build_model
        >>> model = build_model("resnet32", in_channels=3, num_classes=10)
        >>> [len(select_parameters(model, s, 1)) for s in ("head", "last_k")]
        [2, 8]
    """
    if scope not in ("head", "last_k", "all"):
        raise ValueError(f"scope must be one of head, last_k, all, got {scope!r}")
    if scope == "all":
        chosen = list(model.parameters())
    else:
        head = getattr(model, "head", None)
        if not isinstance(head, nn.Module):
            raise ValueError(f"scope {scope!r} needs a model with a .head module")
        chosen = list(head.parameters())
        if scope == "last_k":
            chosen = _last_blocks_parameters(model, k) + chosen
    chosen = _unique([p for p in chosen if p.requires_grad])
    if not chosen:
        raise ValueError(f"scope {scope!r} selects no trainable parameters")
    return chosen


def _last_blocks_parameters(model: nn.Module, k: int) -> list[nn.Parameter]:
    """Parameters of the last ``k`` blocks of ``model.backbone`` (see :func:`select_parameters`)."""
    check_int("k", k, low=1)
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ValueError("scope 'last_k' needs a model with a .backbone module")
    blocks: list[nn.Module] = []
    for child in backbone.children():
        blocks += list(child.children()) if isinstance(child, (nn.Sequential, nn.ModuleList)) else [child]
    blocks = [b for b in blocks if any(p.requires_grad for p in b.parameters())]
    if k > len(blocks):
        raise ValueError(f"k = {k} exceeds the {len(blocks)} backbone blocks with trainable parameters")
    return [p for block in blocks[-k:] for p in block.parameters()]


def _unique(params: list[nn.Parameter]) -> list[nn.Parameter]:
    """``params`` without repeats (shared parameters), first occurrence kept."""
    out: dict[int, nn.Parameter] = {}
    for p in params:
        out.setdefault(id(p), p)
    return list(out.values())


def class_conditional_loss(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    class_counts: Tensor | Sequence[float],
    *,
    params: Sequence[nn.Parameter],
    noise_scale: float,
    flat_ratio: float,
    soft_targets: Tensor | None = None,
    criterion: Criterion = F.cross_entropy,
    clean_loss: Callable[[Tensor], Tensor] | None = None,
    freeze_bn_stats: bool = True,
    sum_over_processes: Callable[[Tensor], Tensor] | None = None,
    class_pass_bn: ClassPassBn = "class_rows",
    flat_loss: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """CC-SAM stage-1 objective with the perturbation on ``params`` (paper form of the radius).

    ``L = (1 - beta) * L_clean(f_w(x)) + beta * criterion([f_{w + eps_{y_i}}(x_i)]_i, y)`` with
    ``beta = flat_ratio``; ``L_clean`` is ``clean_loss`` or, by default, ``mean_i l_i(w)``, and the
    perturbed logits of every row, each at its own class's point, go to ``criterion`` together (so a
    class-weighted or logit-adjusted criterion sees the whole batch, as in the head closed form
    :func:`ccsam.method.stage1.stage1_loss`). With the defaults (cross-entropy) this is
    ``(1 - beta) * mean_i l_i(w) + beta * (1/B) sum_i CE(f_{w + eps_{y_i}}(x_i), y_i)``. Here
    ``l_i(w) = -sum_j q_ij log softmax(f_w(x_i))_j`` (``q = soft_targets``, e.g. mixup targets, or
    ``one_hot(labels)``), which also gives the perturbation direction whatever the criterion, and, for
    each class ``c`` present in ``labels``:

    * ``g_c = grad_w (1/m_c) sum_{i: y_i = c} l_i(w)``, ``w`` the concatenation of ``params``;
    * ``rho_c = s k^(1/4) sqrt(||w|| / (2 ||g_c||)) max(n_c - 1, 1)^(-1/4)``
      (:func:`ccsam.method.radius.ccsam_radius`) with ``k = sum_p p.numel()``, ``||w|| = ||w||_2 + 1e-12``;
    * ``eps_c = rho_c g_c / max(||g_c||, 1e-12)``, a constant (no gradient through it).

    ``||w||`` and ``||g_c||`` are ONE global norm over all of ``params`` (the paper's single vector).
    The head-only closed form follows the released code instead: ``||g_{c,t}||`` and the direction per
    tensor ``t in {W, b}``. The two agree when ``params`` is a single tensor (a bias-free head).

    Class ``c``'s rows are forwarded through the whole model at ``w + eps_c`` (the other parameters and
    buffers as they are), so the gradient of ``L`` reaches every parameter as at the perturbed points.
    BatchNorm in the class passes (``class_pass_bn``): ``"class_rows"`` runs it in the model's current
    mode, so in train mode each class pass normalises with the statistics of its own rows (a tail class
    with one row in the batch gets the statistics of one image; one sample fails in ``BatchNorm1d``) and,
    with ``freeze_bn_stats=False``, also updates the running statistics (``1 + P`` updates per step;
    ``freeze_bn_stats=True`` runs the class passes under :func:`ccsam.models.bn.bn_stats_frozen`, so only
    the clean pass updates them). ``"batch"`` normalises every class pass with the statistics the clean
    pass used for the whole batch (:func:`ccsam.models.bn.recorded_batch_statistics`, in its graph) and
    updates no running statistics, so that at ``eps_c = 0`` (hard labels, ``criterion`` the batch-mean
    cross-entropy) the perturbed loss equals the clean loss in value and gradient. Under several
    processes these are each process's own statistics, or with SyncBatchNorm the global batch's.

    Several processes (``sum_over_processes``, e.g. :func:`ccsam.distributed.all_reduce_sum`), each with
    its slice of a global batch: ``m_c`` and ``g_c`` are those of the global batch (per class, the
    processes' gradients of ``(1/m_c) sum_{own i: y_i = c} l_i`` are summed in one all-reduce of
    ``sum_p p.numel()`` numbers, after one all-reduce of the ``[C]`` batch class counts), so ``eps_c`` is
    the one-process perturbation; each process then forwards its own rows of every class present in the
    global batch (zero rows where it has none, so that a global BatchNorm's collectives line up) and
    returns the loss of its rows, whose mean over the processes is the global-batch loss.

    Args:
        model: maps ``inputs`` to logits ``[B, C]`` (pass the unwrapped module, not DDP).
        inputs: model input batch, first dimension ``B``.
        labels: ``[B]`` integer labels in ``[0, C)`` (``y_a`` under mixup); they group the classes and
            are the targets of the perturbed loss.
        class_counts: ``[C]`` training counts ``n_c``.
        params: the perturbed parameters of ``model`` (see :func:`select_parameters`), each requiring grad.
        noise_scale: ``s >= 0``; ``0`` perturbs nothing (the class passes still run).
        flat_ratio: ``beta`` in ``[0, 1]``; ``0`` returns the clean loss without the class passes.
        soft_targets: ``[B, C]`` targets of the default clean loss and of the gradient direction.
        criterion: mean-reduced loss ``criterion(logits [N, C], labels [N])`` of the perturbed logits
            (rows grouped by class, which a per-row loss with a batch mean does not see).
        clean_loss: loss of the clean logits ``[B, C]`` (e.g. the caller's mixup-aware criterion);
            ``None``: the soft-target cross-entropy ``mean_i l_i(w)``.
        flat_loss: the perturbed term as a function of the perturbed logits ``[B, C]`` put back in batch
            order (e.g. the mixup loss); ``None``: ``criterion`` of them against ``labels``.
        freeze_bn_stats: keep the class passes from updating BatchNorm running statistics.
        sum_over_processes: sum of a tensor over the processes that share the global batch (``None``:
            one process).
        class_pass_bn: ``"class_rows"`` or ``"batch"``: the BatchNorm statistics of the class passes.

    Returns:
        The scalar loss (reads ``labels`` back to the host to group the classes).

    Example:
        >>> from ccsam.models import build_model
        >>> model = build_model("small_cnn", in_channels=1, num_classes=3, width=4)
        >>> x, y = torch.randn(8, 1, 8, 8), torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
        >>> loss = class_conditional_loss(model, x, y, [50, 10, 2], params=select_parameters(model, "all"),
        ...                               noise_scale=1e-2, flat_ratio=0.5)
        >>> loss.backward()
    """
    names = _check_loss_args(model, inputs, labels, params, noise_scale, flat_ratio)
    if class_pass_bn not in ("class_rows", "batch"):
        raise ValueError(f"class_pass_bn must be 'class_rows' or 'batch', got {class_pass_bn!r}")
    recording: contextlib.AbstractContextManager[BatchStatistics] = (
        recorded_batch_statistics(model) if class_pass_bn == "batch" else contextlib.nullcontext({})
    )
    with recording as clean_stats:
        logits = model(inputs)
    if logits.dim() != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"model must return logits [{labels.shape[0]}, C], got {tuple(logits.shape)}")
    num_classes = logits.shape[1]
    if soft_targets is not None and soft_targets.shape != logits.shape:
        want, got = tuple(logits.shape), tuple(soft_targets.shape)
        raise ValueError(f"soft_targets must have shape {want}, got {got}")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{low}, {high}]")
    counts = check_counts(class_counts, num_classes, logits.device, torch.float64, True)
    targets = labels if soft_targets is None else soft_targets.to(logits.dtype)
    per_sample = F.cross_entropy(logits, targets, reduction="none")  # l_i(w)
    clean = per_sample.mean() if clean_loss is None else clean_loss(logits)
    if flat_ratio == 0.0:
        return clean

    with torch.no_grad():
        theta_norm = global_norm(params) + PARAM_NORM_EPS
    num_params = sum(p.numel() for p in params)
    bn_ctx: contextlib.AbstractContextManager[object] = (
        normalised_with(clean_stats) if class_pass_bn == "batch"
        else bn_stats_frozen(model) if freeze_bn_stats else contextlib.nullcontext()
    )
    perturbed_rows: list[Tensor] = []
    row_labels: list[Tensor] = []
    groups, batch_counts = _class_groups(labels, num_classes, sum_over_processes)
    with bn_ctx:
        for c, m_c in batch_counts:
            idx = groups.get(c, labels.new_zeros(0))
            moved: dict[str, Tensor] = {}
            if noise_scale > 0:  # s = 0 gives eps_c = 0 exactly: skip the class gradient
                grads = _class_gradient(per_sample[idx].sum() / m_c, params, idx.numel() > 0, sum_over_processes)
                with torch.no_grad():
                    grad_norm = global_norm(grads)
                    radius = ccsam_radius(theta_norm, grad_norm, counts[c], num_params, noise_scale)
                    scale = radius / grad_norm.clamp_min(GRAD_NORM_FLOOR)
                moved = {n: p + (scale * g).to(p.dtype) for n, p, g in zip(names, params, grads, strict=True)}
            perturbed_rows.append(functional_call(model, moved, (inputs[idx],)))
            row_labels.append(labels[idx])
    if flat_loss is None:
        perturbed = criterion(torch.cat(perturbed_rows), torch.cat(row_labels))
    else:  # the rows back in batch order (every row is in exactly one class pass)
        order = torch.cat([groups.get(c, labels.new_zeros(0)) for c, _ in batch_counts])
        rows = torch.cat(perturbed_rows)
        perturbed = flat_loss(rows.new_zeros(rows.shape).index_copy(0, order, rows))
    return (1.0 - flat_ratio) * clean + flat_ratio * perturbed


def _class_gradient(
    loss: Tensor, params: Sequence[nn.Parameter], has_rows: bool, total: Callable[[Tensor], Tensor] | None
) -> list[Tensor]:
    """``grad_params loss`` (zeros without rows of the class here), summed over the processes in one flat
    all-reduce when ``total`` is given. ``torch.autograd.grad`` accumulates nothing into ``p.grad`` and
    fires no DDP hook: the class gradient stays out of the step's own gradient. With several processes
    every one runs the backward, rows of the class or not: a global BatchNorm's backward is a collective
    (and sends the other processes the gradient through this process's rows)."""
    if has_rows or total is not None:
        grads = list(torch.autograd.grad(loss, params, retain_graph=True, materialize_grads=True))
    else:
        grads = [torch.zeros_like(p) for p in params]
    if total is None:
        return grads
    flat = total(torch.cat([g.reshape(-1) for g in grads]))
    return [part.view_as(g) for part, g in zip(flat.split([g.numel() for g in grads]), grads, strict=True)]


def _check_loss_args(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    params: Sequence[nn.Parameter],
    noise_scale: float,
    flat_ratio: float,
) -> list[str]:
    """Validate the arguments of :func:`class_conditional_loss`; return the names of ``params``."""
    if not noise_scale >= 0:
        raise ValueError(f"noise_scale must be >= 0, got {noise_scale}")
    if not 0.0 <= flat_ratio <= 1.0:
        raise ValueError(f"flat_ratio must lie in [0, 1], got {flat_ratio}")
    bad_dtype = labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool
    if labels.dim() != 1 or labels.numel() == 0 or bad_dtype:
        got = f"{labels.dtype} of shape {tuple(labels.shape)}"
        raise ValueError(f"labels must be a non-empty 1-D integer tensor, got {got}")
    if inputs.shape[:1] != labels.shape:
        raise ValueError(f"inputs must have {labels.shape[0]} rows, got shape {tuple(inputs.shape)}")
    if len(params) == 0:
        raise ValueError("params is empty")
    name_of = {id(p): n for n, p in model.named_parameters()}
    names = [name_of.get(id(p)) for p in params]
    if any(n is None for n in names):
        raise ValueError("every entry of params must be a parameter of model")
    if len(set(names)) != len(names):
        raise ValueError("params contains a parameter twice")
    if not all(p.requires_grad for p in params):
        raise ValueError("every entry of params must require grad")
    return [n for n in names if n is not None]


def _class_groups(
    labels: Tensor, num_classes: int, total: Callable[[Tensor], Tensor] | None
) -> tuple[dict[int, Tensor], list[tuple[int, int]]]:
    """This process's ``{c: indices of class c}`` and ``(c, m_c)`` for each class present in the (global)
    batch, ascending, ``m_c`` its number of samples there (one host read)."""
    order = torch.argsort(labels, stable=True)
    classes, sizes = torch.unique_consecutive(labels[order], return_counts=True)
    groups = dict(zip(classes.tolist(), torch.split(order, sizes.tolist()), strict=True))
    if total is None:
        return groups, list(zip(classes.tolist(), sizes.tolist(), strict=True))
    counts = total(torch.bincount(labels, minlength=num_classes)).tolist()
    return groups, [(c, int(m)) for c, m in enumerate(counts) if m > 0]
