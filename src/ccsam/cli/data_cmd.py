"""``ccsam data export`` (a preset's splits in one lossless file) and ``ccsam data manifest`` (its split
manifest: train / validation indices, per-class counts, sha256)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ccsam.atomic_io import check_writable
from ccsam.config import DEFAULT_PRESET, resolve_config
from ccsam.data.build import build_data
from ccsam.data.cache import DataCacheError, export_cache
from ccsam.data.manifest_file import write_manifest_file


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="export a preset's data splits to one file (for machines without the data)",
                       description="Data utilities.")
    actions = p.add_subparsers(dest="data_command", metavar="{export,manifest}", required=True)
    export = actions.add_parser(
        "export", help="write the long-tailed train, validation and test splits of a preset to FILE",
        description="Write the long-tailed train subset, the validation and the test split of a preset "
        "(with its split manifest and normalisation statistics) to one losslessly compressed file; "
        "`ccsam train --data-cache FILE` then trains from it with no data set on disk.")
    export.add_argument("--preset", default=None, help=f"preset name or YAML file (default: {DEFAULT_PRESET})")
    export.add_argument("--data-root", default=None, help="folder that holds the data set")
    export.add_argument("--out", required=True, help="file to create (never overwritten)")
    export.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="overrides as for `ccsam train` (only data.* ones change the splits), "
                             "e.g. data.imbalance_ratio=200")
    manifest = actions.add_parser(
        "manifest", help="write a preset's split manifest (train / val indices, counts, sha256) to FILE",
        description="Draw the long-tailed training subset and the validation split of a preset exactly as "
        "`ccsam train` would, and write them as JSON (indices, per-class counts, subset seed and protocol, "
        "sha256 of the indices) without training, so a split can be checked or shared.")
    manifest.add_argument("--preset", default=None,
                          help=f"preset name or YAML file (default: {DEFAULT_PRESET})")
    manifest.add_argument("--data-root", default=None, help="folder that holds the data set")
    manifest.add_argument("--out", required=True, help="JSON file to create (never overwritten)")
    manifest.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                          help="overrides as for `ccsam train` (only data.* ones change the split; a training "
                               "command's own overrides give its split), e.g. data.subset_protocol=per_class_rng")


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    overrides = list(args.overrides)
    if args.data_root:
        overrides.append(f"data.root={Path(args.data_root).expanduser()}")
    config = resolve_config(args.preset, overrides)
    out = Path(args.out).expanduser()
    if out.exists():
        raise DataCacheError(f"'{out}' already exists; choose another --out (nothing was written)")
    check_writable(out.parent)  # before reading the data set
    if args.data_command == "manifest":
        info = write_manifest_file(config.data, out)
        print(f"wrote {out}: {info['train']} train / {info['val']} val indices, "
              f"subset_protocol {info['subset_protocol']}, sha256 {info['sha256']}")
        return 0
    data = build_data(config.data)
    info = export_cache(data, config.data, out)
    print(f"wrote {info['path']}: {info['bytes'] / 1e6:.1f} MB for {info['raw_pixel_bytes'] / 1e6:.1f} MB of pixels "
          f"({len(data.train)} train / {len(data.val)} val / {len(data.test)} test images)")
    return 0
