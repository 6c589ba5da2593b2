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


def test_paired_interval_is_the_t_interval_of_the_per_seed_differences() -> None:
    # diffs 0.01, 0.02, 0.03 (seed "3" is unpaired): mean 0.02, sd 0.01, half-width t(2) * 0.01 / sqrt(3)
    r = tuned_report.paired_interval({"0": 0.81, "1": 0.82, "2": 0.83, "3": 0.9}, {"0": 0.80, "1": 0.80, "2": 0.80})
    half = 4.302653 * 0.01 / 3**0.5
    assert r["seeds"] == ["0", "1", "2"]
    assert r["mean"] == pytest.approx(0.02) and r["low"] == pytest.approx(0.02 - half, abs=1e-8)
    assert r["high"] == pytest.approx(0.02 + half, abs=1e-8)
    assert tuned_report.paired_interval({"0": 0.5}, {"0": 0.4}) is None


def test_ablation_rows_carry_their_paired_difference_from_the_tuned_row() -> None:
    def runs(top1: dict[str, float]) -> dict:
        metrics = dict.fromkeys(("many", "medium", "few", "ece", "nll"), 0.5)
        return {"per_seed": {s: {"test": {"top1": v, **metrics}, "val": {"top1": v}} for s, v in top1.items()}}

    class Spec:
        seeds = [0, 1, 2]

    summary = {tuned_report.ABLATED: {
        "final": runs({"0": 0.81, "1": 0.82, "2": 0.83}),
        "variants": {"radius-none": runs({"0": 0.80, "1": 0.80, "2": 0.80}), "half-done": runs({"0": 0.7})},
    }}
    lines = tuned_report._ablations(Spec(), summary, ["radius-none", "half-done", "not-started"])
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines if line.startswith("| ")}
    half = 100 * 4.302653 * 0.01 / 3**0.5
    assert rows["radius-none"].endswith(f"| +2.00 [{2 - half:+.2f}, {2 + half:+.2f}] |")
    assert rows["half-done"].endswith("| - |") and "missing 1, 2" in rows["half-done"]
    assert rows["not-started"].endswith("| - |")


def test_the_isolation_grid_pairs_each_stage_with_the_other_fixed() -> None:
    def runs(top1: list[float]) -> dict:
        return {"per_seed": {str(s): {"test": {"top1": v}} for s, v in enumerate(top1)}}

    summary = {tuned_report.ABLATED: {"final": runs([0.80, 0.81, 0.82]), "variants": {
        "s1-erm+s2-ccsam": runs([0.81, 0.82, 0.83]),   # ERM stage 1: +1 point on every seed
        "s1-ccsam+s2-crt": runs([0.78, 0.80, 0.82]),   # cRT stage 2: -2, -1, 0
        "s1-erm+s2-crt": runs([0.80, 0.81, 0.82]),
    }}}
    rows = {line.split(" | ")[0].lstrip("| "): line for line in tuned_report._isolation(summary, 3)
            if line.startswith("| ")}
    half = 100 * 4.302653 * 0.01 / 3**0.5  # diffs -1, 0, +1 points: sd 1 point
    assert rows["CC-SAM"].startswith("| CC-SAM | 81.00 ± 1.00 | 80.00 ± 2.00 |")
    assert f"+1.00 [{1 - half:+.2f}, {1 + half:+.2f}]" in rows["CC-SAM"]  # CC-SAM stage 2 - cRT, CC-SAM stage 1
    assert "+1.00 [+1.00, +1.00]" in rows["ERM"]
    assert rows["CC-SAM − ERM"].startswith("| CC-SAM − ERM | -1.00 [-1.00, -1.00] |")
