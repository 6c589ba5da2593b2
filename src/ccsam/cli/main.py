"""``ccsam`` command line: parse, build the config, call one library function. No training logic here."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ccsam.cli import analysis_cmd, data_cmd, eval_cmd, presets_cmd, train_cmd, tune_cmd
from ccsam.errors import CcsamError

_SUBCOMMANDS = {"train": train_cmd, "eval": eval_cmd, "presets": presets_cmd, "data": data_cmd,
                "tune": tune_cmd}
_ANALYSES = ("probe", "landscape", "sharpness", "report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ccsam",
        description="Deep long-tailed recognition with CC-SAM (Class-Conditional Sharpness-Aware Minimization).",
    )
    sub = parser.add_subparsers(dest="command", metavar="{train,eval,presets,data,tune,probe,landscape,sharpness,report}")
    for name, module in _SUBCOMMANDS.items():
        module.add_parser(sub)
    analysis_cmd.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ccsam`` console script; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["train"]  # `ccsam` alone runs the embedded default
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    try:
        module = analysis_cmd if args.command in _ANALYSES else _SUBCOMMANDS[args.command]
        return int(module.run(args, argv) or 0)
    except (CcsamError, FileNotFoundError) as exc:
        print(f"ccsam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ccsam: interrupted; continue with `ccsam train --resume RUN_DIR`", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
