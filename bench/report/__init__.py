"""The report: plots, CSV tables and the page, from the records (`python -m bench.report`).
Its plots and sections are declared in bench.report.registry."""

from bench.report.page import main, make_report
from bench.report.registry import plots_of

# The per-configuration plots by name (the page's "plots" section).
PLOTS = {p.name: p.file for p in plots_of("plots")}

__all__ = ["PLOTS", "main", "make_report"]
