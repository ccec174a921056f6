"""The run's one report: rows from the evaluation loop, the recommendation, tables (JSON, Markdown, CSV), plots."""
from evaluation.report.plots import write_plots
from evaluation.report.tables import build_report, load_report, provenance, write_report

__all__ = ["build_report", "load_report", "provenance", "write_plots", "write_report"]
