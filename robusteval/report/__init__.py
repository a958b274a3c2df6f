"""The HTML report of a run: ``write_report(run_dir)`` rebuilds it from the run's records alone."""
from robusteval.report.html import render_report, write_report

__all__ = ["render_report", "write_report"]
