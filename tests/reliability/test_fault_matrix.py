"""Bad files and settings (``faults.SCENARIOS``): each ends with its exit status and exactly one
``ccsam: error:`` line that names the problem, prints no traceback, runs no crafted payload, and leaves
every file that existed before byte-identical (md5) with no new file written."""

from __future__ import annotations

import pytest

from tests.reliability.faults import SCENARIOS, run_scenario


def test_scenario_names_are_unique():
    names = [s.name for s in SCENARIOS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_a_bad_input_is_one_line_and_changes_nothing(scenario, base, tmp_path):
    outcome = run_scenario(scenario, base, tmp_path / "scratch")
    assert outcome.problems(scenario) == []


def test_the_contract_can_fail(base, tmp_path):
    """The checker itself: a command that succeeds and writes files breaks the contract."""
    from tests.reliability.faults import Scenario

    ok = Scenario("presets list", "bad setting", lambda b, s: ["presets"], "anything")
    problems = run_scenario(ok, base, tmp_path / "scratch").problems(ok)
    assert any("exit 0" in p for p in problems) and any("not one error line" in p for p in problems)
