"""argparse ``type=`` functions that check a numeric option's range when the command line is parsed.

A value out of range is a usage error (``ccsam: error: argument --draws: must be an int >= 1, got '0'``,
exit status 2) before any run folder, model or data set is read.

Example:
    >>> count = int_in_range(1)
    >>> count("5")
    5
    >>> number_in_range(0, above=True)("0.5")
    0.5
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["SEED_MAX", "int_in_range", "number_in_range"]

#: Largest seed the analyses accept (torch's CPU generator takes a seed below 2**64).
SEED_MAX = 2**63 - 1


def int_in_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """A ``type=`` function: the text as an ``int`` with ``low <= value <= high`` (``high=None``: no upper
    bound), else ``argparse.ArgumentTypeError`` naming the valid range and the value given."""
    wanted = f"an int in [{low}, {_int_text(high)}]" if high is not None else f"an int >= {low}"

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        return value

    parse.__name__ = "int"  # argparse names the type in some messages
    return parse


def _int_text(value: int) -> str:
    """``value`` as digits, or as ``2**k - 1`` for a large bound of that form (readable in a message)."""
    k = (value + 1).bit_length() - 1
    return f"2**{k} - 1" if value >= 2**32 - 1 and value + 1 == 2**k else str(value)


def number_in_range(low: float, *, above: bool = False) -> Callable[[str], float]:
    """A ``type=`` function: the text as a finite ``float`` that is ``> low`` (``above=True``) or ``>= low``,
    else ``argparse.ArgumentTypeError`` naming the valid range and the value given."""
    wanted = f"a finite number {'>' if above else '>='} {low:g}"

    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (above and value == low):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        return value

    parse.__name__ = "float"
    return parse
