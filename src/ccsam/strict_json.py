"""Strict JSON for every file ccsam writes: no ``NaN`` / ``Infinity`` tokens, which are not JSON.

A number that is not finite is written as ``null``. In ccsam's files ``null`` always means "not
defined": a metric over an empty class group, a validation score with no validation split, or a value
that overflowed (a diverged loss). Readers therefore never meet a token a strict parser rejects.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_none(obj: Any) -> Any:
    """``obj`` with every non-finite float (at any depth of dicts, lists and tuples) replaced by ``None``."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: finite_or_none(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(value) for value in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`finite_or_none` (``obj``) with ``allow_nan=False``."""
    return json.dumps(finite_or_none(obj), allow_nan=False, **kwargs)
