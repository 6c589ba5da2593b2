"""``ccsam presets``: list the shipped presets, or print one fully resolved."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ccsam.config import config_to_yaml, list_presets, resolve_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("presets", help="list presets, or show one resolved",
                       description="List the presets shipped with ccsam, or print one with every key.")
    p.add_argument("--show", metavar="NAME", default=None, help="print the resolved config of preset NAME")


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    if args.show:
        print(config_to_yaml(resolve_config(args.show)), end="")
        return 0
    presets = list_presets()
    width = max(len(name) for name, _ in presets)
    for name, description in presets:
        print(f"{name.ljust(width)}  {description}")
    return 0
