"""Input checks at the boundaries (config, public functions): one wording for every message.

Python's ``bool`` is an ``int``; these checks refuse it where a count or an index is meant, so that
``copies=True`` is an error rather than one copy.

Example:
    >>> check_int("copies", 2, low=1)
    2
    >>> check_number("bound", 0.5, low=0)
    0.5
"""

from __future__ import annotations

import math

__all__ = ["check_int", "check_number"]


def check_int(name: str, value: object, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` if it is an ``int`` (not a ``bool``) with ``low <= value <= high``; else ``ValueError``.

    The message reads ``"<name> must be a positive int, got <value!r>"`` for ``low=1`` (``non-negative``
    for ``low=0``) and otherwise ``"<name> must be an int >= <low>, got <value!r>"`` (the bounds given)."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if ok and ((low is not None and value < low) or (high is not None and value > high)):  # type: ignore[operator]
        ok = False
    if not ok:
        named = {1: "a positive int", 0: "a non-negative int"}
        kind = named[low] if low in named and high is None else f"an int{_bounds(low, high)}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return value  # type: ignore[return-value]


def check_number(name: str, value: object, *, low: float | None = None, finite: bool = True) -> float:
    """``float(value)`` if it is a real number (not a ``bool``), finite unless ``finite=False``, and
    ``>= low``; else ``ValueError`` (``"<name> must be a finite number >= <low>, got <value!r>"``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and finite and not math.isfinite(value):  # type: ignore[arg-type]
        ok = False
    if ok and low is not None and not value >= low:  # type: ignore[operator]
        ok = False
    if not ok:
        kind = "a finite number" if finite else "a number"
        raise ValueError(f"{name} must be {kind}{_bounds(low, None)}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _bounds(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f" in [{low}, {high}]"
    if low is not None:
        return f" >= {low}"
    if high is not None:
        return f" <= {high}"
    return ""
