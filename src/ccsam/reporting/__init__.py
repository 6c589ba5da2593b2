"""Human-readable outputs of runs: console tables, Markdown tables over seeds, figures and reports."""

from ccsam.reporting.summary import format_results_table
from ccsam.reporting.tables import group_table, load_results

__all__ = ["format_results_table", "group_table", "load_results"]
