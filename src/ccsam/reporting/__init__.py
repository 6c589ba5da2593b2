"""Human-readable summaries of run results."""

from ccsam.reporting.summary import format_results_table

__all__ = ["format_results_table"]
