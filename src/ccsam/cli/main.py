"""``ccsam`` command line: parse, build the config, call one library function. No training logic here."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

from ccsam._version import __version__
from ccsam.cli import analysis_cmd, data_cmd, eval_cmd, presets_cmd, train_cmd, tune_cmd
from ccsam.cli.boundary import debug_requested, run_guarded
from ccsam.errors import EXIT_BAD_INPUT

_SUBCOMMANDS = {"train": train_cmd, "eval": eval_cmd, "presets": presets_cmd, "data": data_cmd,
                "tune": tune_cmd}
_ANALYSES = ("probe", "landscape", "sharpness", "report")
_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")

_EPILOG = """exit status: 0 done, 2 bad input / config / file (one line says which and what to do),
3 the loss diverged (runtime.on_nonfinite=stop), 130 interrupted (resume it), 1 any other failure.
--debug (or CCSAM_DEBUG=1) prints the traceback behind an error line."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors, like every other ccsam error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"ccsam: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ccsam",
        description="Deep long-tailed recognition with CC-SAM (Class-Conditional Sharpness-Aware Minimization).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ccsam {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback behind an error line (also CCSAM_DEBUG=1; allowed anywhere)")
    sub = parser.add_subparsers(
        dest="command", metavar="{train,eval,presets,data,tune,probe,landscape,sharpness,report}")
    for _name, module in _SUBCOMMANDS.items():
        module.add_parser(sub)
    analysis_cmd.add_parsers(sub)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``, accepting ``KEY=VALUE`` overrides anywhere (before, between or after options)."""
    args, extras = parser.parse_known_args(argv)
    if extras and hasattr(args, "overrides") and all(_OVERRIDE.match(x) for x in extras):
        args.overrides = [*(args.overrides or []), *extras]
    elif extras:
        hint = (" (a YAML config file is given as --preset FILE)"
                if any(x == "--config" or x.startswith("--config=") for x in extras) else "")
        parser.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ccsam`` console script; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    if not argv:
        argv = ["train"]  # `ccsam` alone runs the embedded default
    parser = build_parser()
    try:
        args = parse(parser, argv)
    except SystemExit as exc:  # --help, --version, or a one-line usage error
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_BAD_INPUT)
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    module = analysis_cmd if args.command in _ANALYSES else _SUBCOMMANDS[args.command]
    return run_guarded(lambda: module.run(args, argv), debug=debug)


if __name__ == "__main__":
    raise SystemExit(main())
