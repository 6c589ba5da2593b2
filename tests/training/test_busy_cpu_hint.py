"""The note a CPU run prints when other work occupies the cores its torch threads would use."""

from __future__ import annotations

import os

from ccsam.training.precision import busy_cpu_hint


def test_a_busy_cpu_suggests_the_free_cores_and_an_idle_one_says_nothing(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert busy_cpu_hint(2, load=0.2) is None
    hint = busy_cpu_hint(2, load=1.1)
    assert hint is not None and "runtime.threads=1" in hint and "load average 1.1 on 2 cores" in hint
    assert "runtime.threads=1" in (busy_cpu_hint(2, load=7.0) or "")  # never fewer than one thread
    assert busy_cpu_hint(1, load=7.0) is None  # one thread already: nothing to suggest
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert "runtime.threads=10" in (busy_cpu_hint(16, load=6.0) or "")
