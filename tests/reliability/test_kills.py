"""kill -9 at seeded random moments, some inside checkpoint writes, never loses a completed epoch:
resuming gives the uninterrupted run's results bit for bit (see ``kills.py``)."""

from __future__ import annotations

from tests.reliability.kills import kill_chain


def test_kill_minus_nine_then_resume_equals_the_uninterrupted_run(tmp_path):
    report = kill_chain(tmp_path, seed=0)
    assert report.kills >= 5, report.log
    assert report.kills_in_write >= 2, report.log
    assert report.stale_temp_files_seen >= 2, report.log  # the kills did land inside writes
    assert report.bytes_lost == 0, report.log
    assert report.mismatches == [], report.log
