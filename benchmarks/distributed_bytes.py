"""Bytes each rank exchanges per training step under torchrun, on paper (issue 11).

For every data set of the papers (their batch size, feature size, class count and backbone) it prints
the CC-SAM gathers of the global-batch statistics next to the gradient all-reduce, for W ranks, as the
bytes one rank receives with the ring algorithms NCCL uses:

* all-gather of ``B`` rows of ``s`` bytes: ``(W - 1) / W * B * s``
* all-reduce of ``P`` float32 gradients: ``2 (W - 1) / W * 4 P`` (reduce-scatter + all-gather)

Stage 1 (head closed form) gathers the features (``d`` numbers; float32, or bf16 under autocast),
the labels and, under mixup, the partners' labels (int64 each). Stage 2 gathers features and labels.
DDP all-reduces the gradient once per step for SGD, MP and CC-SAM, twice for SAM / ASAM / ImbSAM / GP.

The paper-form scopes (``stage1.perturb_scope=last_k|all``) all-reduce, per step, the ``[C]`` class
counts of the batch and then one float32 gradient of the perturbed parameters per class present in the
global batch (``P <= min(B, C)`` classes; the table takes ``P = min(B, C)``, the most): ``P`` all-reduces
of ``k`` values, ``k`` the last block plus the head (``last_k=1``) or every parameter (``all``).

Usage: python benchmarks/distributed_bytes.py [--world 8] [--markdown]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

# Parameter counts without the classifier: torchvision ResNet-50 / ResNet-152 (fc removed) and the
# CIFAR ResNet-32 of ccsam.models (its 64-d features, fc removed).
BACKBONES = {"resnet32": 464_154 - 650, "resnet50": 23_508_032, "resnet152": 58_143_808}
# Parameters of the last backbone block (``last_k=1``): ResNet-32's last BasicBlock (two 3x3 64->64 convs
# + 2 BN), the last Bottleneck of ResNet-50 / -152 (1x1 2048->512, 3x3 512->512, 1x1 512->2048 + 3 BN).
LAST_BLOCK = {"resnet32": 2 * 64 * 64 * 9 + 4 * 64,
              "resnet50": 2048 * 512 + 512 * 512 * 9 + 512 * 2048 + 4 * 512 + 2 * 2048}
LAST_BLOCK["resnet152"] = LAST_BLOCK["resnet50"]


@dataclass(frozen=True)
class DataSet:
    name: str
    batch: int
    classes: int
    dim: int
    backbone: str


DATA_SETS = (
    DataSet("CIFAR-10-LT", 64, 10, 64, "resnet32"),
    DataSet("CIFAR-100-LT", 64, 100, 64, "resnet32"),
    DataSet("ImageNet-LT", 256, 1000, 2048, "resnet50"),
    DataSet("Places-LT", 128, 365, 2048, "resnet152"),
    DataSet("iNaturalist 2018", 512, 8142, 2048, "resnet50"),
)


def gather_bytes(batch: int, row_bytes: int, world: int) -> float:
    """Bytes one rank receives in a ring all-gather of ``batch`` rows of ``row_bytes``."""
    return (world - 1) / world * batch * row_bytes


def all_reduce_bytes(params: int, world: int) -> float:
    """Bytes one rank receives in a ring all-reduce of ``params`` float32 values."""
    return 2 * (world - 1) / world * 4 * params


def rows(world: int) -> list[dict[str, float | str]]:
    out = []
    for ds in DATA_SETS:
        params = BACKBONES[ds.backbone] + ds.classes * ds.dim + ds.classes
        stage1_fp32 = gather_bytes(ds.batch, 4 * ds.dim + 16, world)
        stage1_bf16 = gather_bytes(ds.batch, 2 * ds.dim + 16, world)
        stage2 = gather_bytes(ds.batch, 4 * ds.dim + 8, world)
        grads = all_reduce_bytes(params, world)
        head = ds.classes * ds.dim + ds.classes
        present = min(ds.batch, ds.classes)
        counts = all_reduce_bytes(ds.classes, world) * 2  # int64 counts: twice the bytes of float32
        last_k = counts + present * all_reduce_bytes(LAST_BLOCK[ds.backbone] + head, world)
        every = counts + present * all_reduce_bytes(params, world)
        out.append({"data set": ds.name, "B": ds.batch, "C": ds.classes, "d": ds.dim,
                    "params": params, "stage1 fp32": stage1_fp32, "stage1 bf16": stage1_bf16,
                    "stage2": stage2, "grad all-reduce": grads, "share": stage1_fp32 / grads,
                    "last_k": last_k, "all": every})
    return out


def _mb(x: float) -> str:
    return f"{x / 2**20:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=int, nargs="+", default=[2, 8])
    args = parser.parse_args()
    for world in args.world:
        print(f"\nW = {world} ranks; MiB received per rank per step\n")
        print("| data set | B | C | d | params | stage-1 gather (fp32 / bf16 features) | stage-2 gather "
              "| gradient all-reduce (SGD) | stage-1 gather / all-reduce | last_k=1 class gradients "
              "| all class gradients |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows(world):
            print(f"| {r['data set']} | {r['B']} | {r['C']} | {r['d']} | {r['params'] / 1e6:.2f}M "
                  f"| {_mb(r['stage1 fp32'])} / {_mb(r['stage1 bf16'])} | {_mb(r['stage2'])} "
                  f"| {_mb(r['grad all-reduce'])} | {100 * r['share']:.2f} % | {_mb(r['last_k'])} "
                  f"| {_mb(r['all'])} |")


if __name__ == "__main__":
    main()
