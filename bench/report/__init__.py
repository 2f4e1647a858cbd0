"""The report: plots, CSV tables and the page, from the records (`python -m bench.report`)."""

from bench.report.page import PLOTS, main, make_report

__all__ = ["PLOTS", "main", "make_report"]
