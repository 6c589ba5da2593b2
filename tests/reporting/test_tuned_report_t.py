"""benchmarks/tuned_report.py's 0.975 quantile of Student's t without scipy, for any df."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "tuned_report.py"
_spec = importlib.util.spec_from_file_location("tuned_report", _PATH)
assert _spec is not None and _spec.loader is not None
tuned_report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tuned_report)

# scipy.stats.t.ppf(0.975, df), to 6 decimals
_KNOWN = {1: 12.706205, 2: 4.302653, 4: 2.776445, 10: 2.228139, 11: 2.200985, 19: 2.093024, 29: 2.045230,
          30: 2.042272, 60: 2.000298, 120: 1.979930, 1000: 1.962339}


@pytest.mark.parametrize("df", sorted(_KNOWN))
def test_fallback_quantile_matches_known_values(df: int) -> None:
    assert tuned_report._t_quantile_975_math(df) == pytest.approx(_KNOWN[df], abs=1e-6)


def test_fallback_quantile_matches_scipy_for_df_1_to_60() -> None:
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, 61):
        assert tuned_report._t_quantile_975_math(df) == pytest.approx(float(stats.t.ppf(0.975, df)), abs=1e-9)
