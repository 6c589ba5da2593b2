"""Markdown table of last-epoch test metrics over run folders, grouped by run name (mean +- std over seeds).

Usage: python benchmarks/summarize_runs.py RUN_DIR [RUN_DIR ...] > table.md
"""

from __future__ import annotations

import sys
from pathlib import Path

from ccsam.reporting.tables import group_table, load_results


def summarize(run_dirs: list[Path]) -> str:
    """The grouped table of :func:`ccsam.reporting.tables.group_table` for these run folders."""
    return group_table(load_results(run_dirs))


if __name__ == "__main__":
    print(summarize([Path(p) for p in sys.argv[1:]]), end="")
