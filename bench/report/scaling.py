"""How the overhead grows with a swept parameter, for the workloads that ask for this section
(Workload.report_sections: every one by default; MNIST has its matrix section instead):
orchestration per configuration against the parameter, with the
fitted line of fits.csv. For the chain and fan-out workloads, the slope against n is the
cost of one more task."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from bench.analysis.decompose import family  # noqa: E402
from bench.analysis.findings import CHEAPEST, PAYOFF  # noqa: E402
from bench.report.blocks import Block, Figure, Heading, Table, Text, save_figure  # noqa: E402
from bench.report.registry import ReportData, plot, section  # noqa: E402

COLORS = {"local": "#dd8452", "dask": "#55a868", "external": "#8172b3"}


def _fits(fits: pd.DataFrame) -> pd.DataFrame:
    return fits[(fits["y"] == "orchestration_s") & (fits["x"] != "bytes_moved")]


@plot("scaling", "scaling.png", section="scaling", key=2, sweep_key=True,
      topics={CHEAPEST: 1, PAYOFF: 2}, when=lambda d: not _fits(d.fits).empty, caption=(
          "Orchestration against the swept parameter, one colour per executor, with its "
          "fitted line: the slope is what one more unit costs (for chain and fanout: one more "
          "task); points off the line are configurations the fit does not explain."))
def plot_scaling(data: ReportData, path: Path) -> bool:
    summary, fits = data.full_summary, data.fits
    groups = list(_fits(fits).groupby(["workload", "x", "family"], sort=False))
    if not groups:
        return False
    cols = min(3, len(groups))
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, ((workload, x, fam), lines) in zip(axes.flat, groups, strict=False):
        points = summary[summary["workload"] == workload]
        points = points[family(points, x) == fam]
        for fit in lines.itertuples():
            mine = points[points["executor"] == fit.executor].sort_values(x)
            colour = COLORS.get(fit.executor, "grey")
            xs = pd.to_numeric(mine[x])
            ax.errorbar(xs, mine["orchestration_s"],
                        yerr=[mine["orchestration_s"] - mine["orchestration_s_ci_low"],
                              mine["orchestration_s_ci_high"] - mine["orchestration_s"]],
                        fmt="o", color=colour, capsize=3,
                        label=f"{fit.executor}: {fit.slope_s_per_unit * 1000:.1f} ms per {x}")
            scale = 1000 if "1000" in str(fit.unit) else 1
            ax.plot(xs, fit.intercept_s + fit.slope_s_per_unit * xs / scale, color=colour,
                    alpha=0.6)
        ax.set_title(f"{workload} ({fam or 'defaults'})", fontsize=9)
        ax.set_xlabel(x)
        ax.set_ylabel("orchestration (s)")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    fig.suptitle("Orchestration against the swept parameter (median, 95 % CI; fitted line)")
    save_figure(fig, path)
    return True


@section("scaling", order=30, per_workload=True)
def scaling_section(data: ReportData, figures: list[Figure]) -> list[Block]:
    rows = _fits(data.fits)
    if rows.empty:
        return []
    table = rows.assign(
        per_unit_ms=(rows["slope_s_per_unit"] * 1000).round(2),
        stderr_ms=(rows["slope_stderr"] * 1000).round(2),
    )[["workload", "executor", "x", "family", "points", "intercept_s", "per_unit_ms",
       "stderr_ms", "r2"]]
    blocks: list[Block] = [
        Heading("How the overhead grows"),
        Text("Least-squares lines of orchestration (Covalent wall − the tasks' own time) "
             "against each swept parameter, over every measured round. For `chain` and "
             "`fanout`, `per_unit_ms` against `n` is what one more task costs; the intercept "
             "is the cost of a dispatch with no tasks."),
        Table(table, floatfmt=".3g"),
    ]
    return blocks + figures
