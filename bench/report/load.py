"""Covalent at scale, in the report: under load (a `concurrency` sweep, e.g. the `load`
profile: throughput and latency per level of dispatches in flight, the errors by kind, the
knee; bench.analysis.load) and in a soak (the `soak` profile: what grows dispatch after
dispatch; bench.analysis.soak)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from bench.analysis.load import SATURATION_GAIN, knee, knee_sentence, load_table  # noqa: E402
from bench.analysis.soak import (  # noqa: E402
    PER,
    SOAK_METRICS,
    SOAK_MIN_RUNS,
    soak_growth,
    soak_runs,
    soak_sentence,
)
from bench.report.blocks import Block, Bullets, Figure, Heading, Table, Text, save_figure  # noqa: E402
from bench.report.registry import ReportData, derived, plot, section  # noqa: E402


@derived("load", "load.csv")
def _load(data: ReportData) -> pd.DataFrame:
    """Per level of dispatches in flight, of the concurrency sweeps (none: empty). Only the
    configurations run at more than one level: in a session that also holds other parts
    (the envelope's graphs, its soak), those are not sweeps."""
    table = load_table(data.all_runs)
    if table.empty:
        return table
    levels = table.groupby(["family", "executor", "environment"])["concurrency"] \
        .transform("nunique")
    return table[levels > 1].reset_index(drop=True)


@derived("soak_runs", "soak_runs.csv")
def _soak_runs(data: ReportData) -> pd.DataFrame:
    """The soak-long sequences' runs, numbered (bench.analysis.soak.soak_runs)."""
    return soak_runs(data.all_runs, data.phases)


@derived("soak", "soak.csv")
def _soak(data: ReportData) -> pd.DataFrame:
    return soak_growth(data.table("soak_runs"))


def _swept(data: ReportData) -> bool:
    return not data.table("load").empty


def _label(row: pd.Series) -> str:
    return str(row["executor"])  # runs.csv as loaded: "ENV:EXECUTOR" side by side


@plot("load", "load.png", section="load", when=_swept, caption=(
    "N dispatches in flight at once: throughput (left; flat from the knee on: more in "
    "flight only queue) and latency from the batch's start to each result (right: median, "
    "p95 dashed, the band to the slowest); a red x where dispatches failed."))
def plot_load(data: ReportData, path: Path) -> bool:
    table = data.table("load")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    for (family, *_), sweep in table.groupby(["family", "executor", "environment"],
                                             sort=False):
        sweep = sweep.sort_values("concurrency")
        name = _label(sweep.iloc[0]) + (f" ({family})" if table["family"].nunique() > 1
                                        else "")
        line = left.plot(sweep["concurrency"], sweep["dispatches_per_s"], marker="o",
                         label=name)[0]
        colour = line.get_color()
        right.plot(sweep["concurrency"], sweep["latency_p50_s"], marker="o", color=colour,
                   label=f"{name}: median")
        right.plot(sweep["concurrency"], sweep["latency_p95_s"], linestyle="--",
                   color=colour, label=f"{name}: p95")
        right.fill_between(sweep["concurrency"], sweep["latency_p50_s"],
                           sweep["latency_max_s"], alpha=0.12, color=colour)
        failed = sweep[sweep["errors"] > 0]
        left.scatter(failed["concurrency"], failed["dispatches_per_s"].fillna(0), color="red",
                     marker="x", s=90, zorder=4)
    levels = sorted(table["concurrency"].unique())
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(int(v)) for v in levels])
        ax.set_xlabel("dispatches in flight (N)")
        ax.legend(fontsize=7)
    left.set_ylim(bottom=0)  # flat is flat: no zoom that makes noise look like a knee
    right.set_ylim(bottom=0)
    left.set_ylabel("throughput (completed dispatches per second)")
    right.set_ylabel("latency: batch start to result in hand (s)")
    fig.suptitle("Covalent under load", fontsize=11)
    save_figure(fig, path)
    return True


@section("load", order=35)
def load_section(data: ReportData, figures: list[Figure]) -> list[Block]:
    if not _swept(data):
        return []
    table = data.table("load")
    kinds = [c for c in table.columns if c.startswith("errors: ")]
    shown = table.assign(executor=[_label(r) for _, r in table.iterrows()])[
        ["family", "executor", "concurrency", "rounds", "dispatches", "completed",
         "dispatches_per_s", "tasks_per_s", "latency_p50_s", "latency_p95_s",
         "latency_max_s", *kinds]]
    errors = int(table["errors"].sum())
    return [
        Heading("Under load"),
        Text(f"N dispatches submitted at once, for each N of the sweep, every round "
             f"(`load.csv`). Throughput: completed dispatches (and their tasks) per second "
             f"of the batch's wall time, rounds pooled; latency: from the batch's start to "
             f"each result in hand. The knee: the first N with errors, or where doubling "
             f"the dispatches in flight adds less than {100 * SATURATION_GAIN:.0f} % to "
             f"throughput. " + (f"{errors} dispatches failed; each is a row of runs.csv "
                                f"with its error, by kind below." if errors else
                                "No dispatch failed.")),
        Bullets(tuple(knee_sentence(r) for _, r in knee(table).iterrows())),
        Table(shown, floatfmt=".3g"),
        *figures,
    ]


# --- soak ----------------------------------------------------------------------------------


@plot("soak", "soak.png", section="soak", when=lambda d: not d.table("soak").empty, caption=(
    "Dispatch after dispatch on one server: each panel a quantity read after every run, "
    "with its Theil–Sen line; a slope whose CI is above 0 is growth."))
def plot_soak(data: ReportData, path: Path) -> bool:
    cov, soak = data.table("soak_runs"), data.table("soak")
    metrics = [m for m in SOAK_METRICS if m in set(soak["metric"])]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.4),
                             squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=True):
        for (executor, environment), seq in cov.groupby(["executor", "environment"],
                                                        sort=False):
            y = pd.to_numeric(seq[metric], errors="coerce")
            name = executor
            dots = ax.plot(seq["dispatch"], y, ".", alpha=0.5, label=name)[0]
            fit = soak[(soak["executor"] == executor) & (soak["environment"] == environment)
                       & (soak["metric"] == metric)]
            if len(fit):
                f = fit.iloc[0]
                xs = [float(seq["dispatch"].min()), float(seq["dispatch"].max())]
                slope = f["slope_per_100"] / PER
                ax.plot(xs, [f["intercept"] + slope * x for x in xs], color=dots.get_color())
        ax.set_title(SOAK_METRICS[metric], fontsize=9)
        ax.set_xlabel("dispatch")
        ax.legend(fontsize=7)
    fig.suptitle("Soak: does anything grow with the dispatches?", fontsize=11)
    save_figure(fig, path)
    return True


@section("soak", order=36)
def soak_section(data: ReportData, figures: list[Figure]) -> list[Block]:
    soak = data.table("soak")
    if soak.empty:
        return []
    lines = []
    for executor, rows in soak.groupby("executor", sort=False):
        name = executor
        lines += [f"`{name}`, " + soak_sentence(r) for _, r in rows.iterrows()]
    grows = soak[soak["grows"]]
    return [
        Heading("Soak: dispatch after dispatch"),
        Text(f"Sequences of at least {SOAK_MIN_RUNS} dispatches on one server, each read "
             f"after its run (runs.csv `server_rss_mb`, `server_open_files`, "
             f"`server_db_mb`; orchestration from the phases). Growth is the Theil–Sen "
             f"slope per {PER} dispatches with its 95 % CI (`soak.csv`): "
             + (f"{len(grows)} of {len(soak)} grow." if len(grows) else
                "nothing is shown to grow.")),
        Bullets(tuple(lines)),
        *figures,
    ]
