"""`python -m bench.report`: plots and a report page from the run records in reports/."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from bench import records as R  # noqa: E402
from bench.analysis.decompose import (  # noqa: E402
    ORCHESTRATION_PARTS,
    SEGMENTS,
    as_batches,
    environment_diffs,
    flagged,
    measured,
    numeric_outputs,
    probe_cost,
    stacks_cost,
    total_overhead,
    with_breakdown,
)
from bench.analysis.envelope import StoredEnvelope, stored_envelope  # noqa: E402
from bench.analysis.findings import (  # noqa: E402
    CHEAPEST,
    INFLATION,
    LARGEST_PART,
    OVERHEAD,
    PRECISION,
    SAME_WORK,
    findings,
)
from bench.analysis.hotspots import growers  # noqa: E402
from bench.analysis.stats import CONFIDENCE  # noqa: E402
from bench.gate import HISTORY_CSV  # noqa: E402
from bench.records import (  # noqa: E402
    ENV_COLUMNS,
    NoRecordsError,
    RecordsSchemaError,
    dropped_note,
    load_environments,
    load_hotspots,
    load_phases,
    load_runs,
    missing_note,
)

# Imported for their sections and plots, which they declare in the registry.
from bench.report import envelope, environments, load, matrix, profiles, scaling  # noqa: E402, F401
from bench.report import registry as reg  # noqa: E402
from bench.report.blocks import (  # noqa: E402
    Block,
    Figure,
    Findings,
    Heading,
    Table,
    Text,
    save_figure,
    to_markdown,
)
from bench.report.html import write_html  # noqa: E402
from bench.report.registry import ReportData, plot, section  # noqa: E402
from bench.report.tables import write_summary  # noqa: E402

# Per-configuration plots stay readable up to this many configurations; a larger matrix
# gets them for its core (tutorial shape and data path, one model, one dispatch) only.
MAX_DETAIL = 8

MODE_COLORS = {"plain": "#4c72b0", "local": "#dd8452", "dask": "#55a868", "external": "#8172b3"}
PROBE_COST_CSV = "probe_cost.csv"
STACKS_COST_CSV = "stacks_cost.csv"  # what sampling the stacks cost (--bench-stacks)
ENVIRONMENTS_CSV = "environments.csv"
PROBES_TEXT = (
    "Each round also ran every mode bare, without the in-task probes (profile setting "
    "`probes = \"compare\"`), interleaved with the probed runs. `cost_s` is the median over "
    "rounds of probed − bare in the same round, with its 95 % CI and the Wilcoxon signed-rank "
    "p (two-sided); `significant` when the CI excludes 0 and p < 0.05 (at least 6 rounds). "
    "Plain: the probed run against the bare task functions; Covalent: submit (the probe "
    "wrappers travel in the graph), the server's span, and wall time. Every other figure on "
    "this page comes from probed runs, so it includes this cost.")
FAMILY_STYLE = {  # estimator: label, colour
    "total_overhead_s": ("total (Covalent − plain)", "#555555"),
    "orchestration_s": ("orchestration", "#dd8452"),
    "compute_inflation_s": ("compute inflation", "#4c72b0"),
}
SEGMENT_STYLE = {  # label, colour: compute in blue, orchestration in warm colours
    "in_task_s": ("in-task compute", "#4c72b0"),
    "submit_s": ("submit (build, serialize, upload)", "#dd8452"),
    "until_running_s": ("until server runs it", "#c44e52"),
    "executor_cost_s": ("executor: staging, (de)serialization, hand-off", "#ffb347"),
    "scheduling_gaps_s": ("server: gaps between tasks", "#e377c2"),
    "completion_detect_s": ("completion detection", "#8172b3"),
    "retrieve_s": ("result download", "#937860"),
    "rest_s": ("rest (client glue, unexplained)", "#bbbbbb"),
}


def _label(row: pd.Series | dict) -> str:
    return row["executor"] if row["executor"] else "plain"


def _wrap_id(config_id: str, width: int = 22) -> str:
    """Config ids are long: break them at their dashes to fit under a bar."""
    return "\n".join(textwrap.wrap(config_id.replace("-", " "), width)).replace(" ", "-")


def _bar_labels(summary: pd.DataFrame) -> list[str]:
    return [f"{r.executor}\n{_wrap_id(r.config_id)}" for r in summary.itertuples()]


def _bar_figure(n_bars: int) -> tuple[plt.Figure, plt.Axes]:
    return plt.subplots(figsize=(max(5.0, 2.2 * n_bars + 1.5), 4.6))


def _phases(data: ReportData) -> bool:
    return data.phases is not None


def _summary(data: ReportData) -> bool:
    return not data.summary.empty


def _summary_and_phases(data: ReportData) -> bool:
    return _summary(data) and _phases(data)


# The per-configuration plots ("plots" section), in the page's order.
@plot("wall_time", "wall_time.png", section="plots", key=6, caption=(
    "Each dot is one measured round, each bar the median: compare the Covalent bars with "
    "plain's, and look for rounds far from their median."))
def plot_wall_time(data: ReportData, path: Path) -> None:
    """Every measured round as a dot, the median as a bar, per configuration and mode."""
    runs = data.runs
    configs = list(dict.fromkeys(runs["config_id"]))
    fig, axes = plt.subplots(
        1, len(configs), figsize=(4.5 * len(configs), 4), squeeze=False, sharey=False
    )
    for ax, config_id in zip(axes[0], configs, strict=True):
        group = runs[runs["config_id"] == config_id]
        labels = [_label(r) for _, r in group.drop_duplicates(["mode", "executor"]).iterrows()]
        for x, label in enumerate(labels):
            walls = group[group.apply(_label, axis=1) == label]["wall_s"]
            ax.bar(x, walls.median(), color=MODE_COLORS.get(label, "grey"), alpha=0.5)
            ax.scatter([x] * len(walls), walls, color="black", s=14, zorder=3)
            ax.annotate(f"{walls.median():.1f} s", (x, walls.max()), ha="center",
                        va="bottom", fontsize=8, xytext=(0, 3), textcoords="offset points")
        names = [("Covalent " + lb if lb != "plain" else lb) for lb in labels]
        crowded = sum(len(n) for n in names) > 40  # environments' labels would overlap
        ax.set_xticks(range(len(labels)), names, rotation=30 if crowded else 0,
                      ha="right" if crowded else "center", fontsize=8 if crowded else None)
        ax.set_title(_wrap_id(config_id, 40), fontsize=8)
        ax.set_ylabel("wall time (s)")
        ax.margins(y=0.12)
    fig.suptitle("Wall time per run\n(bars: median; dots: measured rounds)", fontsize=11)
    save_figure(fig, path)


@plot("overhead", "overhead.png", section="plots", when=_summary, key=5,
      topics={OVERHEAD: 1, CHEAPEST: 2}, caption=(
          "Covalent − plain median wall time per configuration, whiskers spanning the "
          "rounds: the bar's height is what Covalent costs per run."))
def plot_overhead(data: ReportData, path: Path) -> None:
    """Median overhead per configuration and executor; whiskers span the rounds' range."""
    summary, runs = data.summary, data.runs
    fig, ax = _bar_figure(len(summary))
    for i, row in summary.reset_index(drop=True).iterrows():
        cov = runs[(runs["config_id"] == row["config_id"]) & (runs["executor"] == row["executor"])]
        spread = total_overhead(cov["wall_s"], row["plain_median_s"])
        low, high = row["overhead_s"] - spread.min(), spread.max() - row["overhead_s"]
        ax.bar(i, row["overhead_s"], color=MODE_COLORS.get(row["executor"], "grey"),
               yerr=[[low], [high]], capsize=4)
        ax.annotate(f"{row['overhead_s']:+.1f} s\n({row['overhead_pct']:+.0f} %)",
                    (i, max(spread.max(), 0)), ha="center", va="bottom", fontsize=8,
                    xytext=(0, 4), textcoords="offset points")
    ax.set_xticks(range(len(summary)), _bar_labels(summary), fontsize=7)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("Covalent − plain, median wall (s)")
    ax.set_title("Covalent overhead per configuration\n(whiskers: range over rounds)",
                 fontsize=11)
    ax.margins(y=0.25)
    save_figure(fig, path)


@plot("accuracy", "accuracy.png", section="plots", topics={SAME_WORK: 0},
      when=lambda d: _summary(d) and "plain_accuracy" in d.summary
      and d.summary["plain_accuracy"].notna().any(), caption=(
          "Test accuracy of both modes side by side: equal bars mean both did the same "
          "training."))
def plot_accuracy(data: ReportData, path: Path) -> None:
    summary = data.summary
    fig, ax = _bar_figure(len(summary))
    width = 0.38
    for i, row in summary.reset_index(drop=True).iterrows():
        for offset, label, value in ((-width / 2, "plain", row["plain_accuracy"]),
                                     (width / 2, row["executor"], row["covalent_accuracy"])):
            ax.bar(i + offset, value, width, color=MODE_COLORS.get(label, "grey"),
                   label=("Covalent " + label if label != "plain" else label))
            ax.annotate(f"{value:.2f}", (i + offset, value), ha="center", va="bottom",
                        fontsize=8, xytext=(0, 2), textcoords="offset points")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), loc="upper center", ncol=3, fontsize=8,
              bbox_to_anchor=(0.5, -0.28))
    ax.set_xticks(range(len(summary)), _bar_labels(summary), fontsize=7)
    ax.set_ylim(0, 110)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy: both modes did the same work")
    save_figure(fig, path)


def _listed(value: object) -> list:
    """A list column as read back: a list (expanded from `outputs`) or its JSON text."""
    return json.loads(value) if isinstance(value, str) else list(value)  # type: ignore[arg-type]


@plot("loss_curves", "loss_curves.png", section="plots", topics={SAME_WORK: 1},
      when=lambda d: "train_losses" in d.runs and d.runs["train_losses"].notna().any(),
      caption=("Training loss per logged batch: identical runs overlap, so one visible line "
               "per configuration is the good case."))
def plot_loss_curves(data: ReportData, path: Path) -> None:
    """Training loss of the first measured round of each mode; identical runs overlap."""
    runs = data.runs[data.runs["train_losses"].notna()]
    configs = list(dict.fromkeys(runs["config_id"]))
    fig, axes = plt.subplots(1, len(configs), figsize=(5 * len(configs), 3.8), squeeze=False)
    styles = {"plain": ("-", "o"), "local": ("--", "x"), "dask": (":", "+"),
              "external": ("-.", "1")}
    for ax, config_id in zip(axes[0], configs, strict=True):
        group = runs[runs["config_id"] == config_id].sort_values("round")
        for _, row in group.drop_duplicates(["mode", "executor"]).iterrows():
            label = _label(row)
            line, marker = styles.get(label, ("-", "."))
            ax.plot(_listed(row["train_counter"]), _listed(row["train_losses"]),
                    linestyle=line, marker=marker, markersize=5,
                    color=MODE_COLORS.get(label, "grey"),
                    label="Covalent " + label if label != "plain" else label)
        ax.set_title(_wrap_id(config_id, 40), fontsize=8)
        ax.set_xlabel("training samples seen")
        ax.set_ylabel("nll loss")
        ax.legend()
    fig.suptitle("Training loss (every log_interval batches; identical runs overlap)", fontsize=10)
    save_figure(fig, path)


@plot("breakdown", "breakdown.png", section="plots", when=_phases,
      topics={LARGEST_PART: 1, INFLATION: 1}, caption=(
          "Median wall time split into segments, one bar per mode: blue is the tasks' own "
          "compute, warm colours are orchestration; compare each bar with plain's."))
def plot_breakdown(data: ReportData, path: Path) -> None:
    """Median of each wall-time segment, stacked, per configuration and mode."""
    runs = with_breakdown(data.runs, data.phases)
    keys = runs.drop_duplicates(["config_id", "mode", "executor"])
    fig, ax = plt.subplots(figsize=(11, 1.4 + 0.7 * len(keys)))
    labels: list[str] = []
    ends: list[float] = []
    for i, (_, key) in enumerate(keys.iterrows()):
        group = runs[(runs["config_id"] == key["config_id"]) & (runs["executor"] ==
                                                                 key["executor"])]
        left = 0.0
        for seg in SEGMENTS:
            # A negative median (the rest, where the named segments overlap) would be drawn
            # backwards over the others: the stack shows the positive segments only.
            value = max(group[seg].fillna(0).median(), 0.0)
            name, colour = SEGMENT_STYLE[seg]
            ax.barh(i, value, left=left, color=colour, label=name if i == 0 else None)
            left += value
        # The label (the median wall) goes past the bar's end, wherever the medians add up.
        wall = group["wall_s"].median()
        end = max(left, wall)
        ax.annotate(f"{wall:.1f} s", (end, i), va="center", xytext=(4, 0),
                    textcoords="offset points", fontsize=8)
        ends.append(end)
        labels.append(f"{_label(key)}\n{_wrap_id(key['config_id'], 30)}")
    ax.set_yticks(range(len(keys)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("seconds (medians of measured rounds)")
    ax.set_title("Where the wall time goes")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    # Room for the longest bar's label inside the axes (margins() stops at the stacked
    # segments' sticky edges, and the label would land on the legend).
    ax.set_xlim(0, max(ends) * 1.12 if max(ends) > 0 else 1.0)
    save_figure(fig, path)


@plot("overhead_parts", "overhead_parts.png", section="plots", when=_summary_and_phases,
      key=3, topics={LARGEST_PART: 0}, caption=(
          "The overhead split into its named parts (stacked, negative parts below zero), the "
          "diamond marking the total: the median over rounds of each round's overhead, the "
          "parts' own estimator (the summary's `overhead_s`, Covalent's median minus plain's, "
          "can differ from it by the rounds' spread). The tallest block is the part to work "
          "on."))
def plot_overhead_parts(data: ReportData, path: Path) -> None:
    """The overhead's named parts stacked (negative parts below zero), per configuration."""
    summary = data.summary
    parts = [*ORCHESTRATION_PARTS, "compute_inflation_s", "unexplained_s"]
    fig, ax = _bar_figure(len(summary))
    for i, row in enumerate(summary.itertuples()):
        up = down = 0.0
        for part in parts:
            column = "compute_inflation_s" if part == "compute_inflation_s" else (
                "unexplained_s" if part == "unexplained_s" else
                f"{part.removesuffix('_s')}_median_s")
            value = getattr(row, column)
            if pd.isna(value):
                continue
            seg = {"compute_inflation_s": "in_task_s", "unexplained_s": "rest_s"}.get(part, part)
            name, colour = SEGMENT_STYLE[seg]
            if part == "compute_inflation_s":
                name = "compute inflation"
            base = up if value >= 0 else down
            ax.bar(i, value, bottom=base, color=colour, label=name if i == 0 else None,
                   edgecolor="white", linewidth=0.5)
            up, down = (up + value, down) if value >= 0 else (up, down + value)
        ax.scatter([i], [row.total_overhead_s], color="black", marker="D", s=25, zorder=3,
                   label="total overhead (median of each round's)" if i == 0 else None)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(summary)), _bar_labels(summary), fontsize=7)
    ax.set_ylabel("seconds (medians)")
    ax.set_title("What the overhead is made of")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.set_size_inches(fig.get_size_inches()[0] + 3.5, fig.get_size_inches()[1])
    save_figure(fig, path)


@plot("overhead_ci", "overhead_ci.png", section="plots", when=_summary_and_phases, key=4,
      topics={OVERHEAD: 0, INFLATION: 0, PRECISION: 0}, caption=(
          "Total overhead, orchestration and compute inflation with their 95 % CIs: a "
          "whisker that crosses zero means no measurable effect."))
def plot_overhead_ci(data: ReportData, path: Path) -> None:
    """Each overhead family's median with its bootstrap 95 % CI, per configuration."""
    summary = data.summary
    fig, ax = _bar_figure(len(summary))
    width = 0.8 / len(FAMILY_STYLE)
    for i, row in enumerate(summary.itertuples()):
        for k, (family, (name, colour)) in enumerate(FAMILY_STYLE.items()):
            mid = getattr(row, family)
            low, high = getattr(row, f"{family}_ci_low"), getattr(row, f"{family}_ci_high")
            x = i + (k - 1) * width
            ax.bar(x, mid, width, color=colour, label=name if i == 0 else None)
            ax.errorbar(x, mid, yerr=[[mid - low], [high - mid]], color="black", capsize=3)
            ax.annotate(f"{mid:+.2f}\n±{(high - low) / 2:.2f}", (x, max(high, 0)),
                        ha="center", va="bottom", fontsize=6, xytext=(0, 2),
                        textcoords="offset points")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(summary)), _bar_labels(summary), fontsize=7)
    ax.set_ylabel("seconds")
    ax.set_title(f"Overhead families: median of paired rounds, {CONFIDENCE:.0%} CI")
    ax.legend(fontsize=7)
    ax.margins(y=0.2)
    save_figure(fig, path)


@plot("timeline", "timeline.png", section="plots", when=_phases, caption=(
    "One round on one time axis: the gaps between the blue task bars are time Covalent "
    "spends around the tasks (staging, scheduling, hand-off)."))
def plot_timeline(data: ReportData, path: Path) -> None:
    """Gantt chart of one measured round: the plain run and each Covalent run, one time
    axis: client phases, each node's span on the server and the task's own time in it."""
    runs, phases = data.runs, data.phases
    last = runs.sort_values("round").groupby(["config_id"])["round"].max()
    config_id, rnd = last.index[0], last.iloc[0]
    chosen = runs[(runs["config_id"] == config_id) & (runs["round"] == rnd)]
    lanes, y = [], 0
    n_lanes = sum(1 + phases[(phases["run_id"] == r) & phases["phase"].isin([R.NODE, R.IN_TASK])]
                  ["task"].nunique() for r in chosen["run_id"])
    fig, ax = plt.subplots(figsize=(11, 1.5 + 0.22 * n_lanes))
    client_colours = {R.SUBMIT: "#dd8452", R.UNTIL_RUNNING: "#c44e52",
                      R.COMPLETION_DETECT: "#8172b3", R.RETRIEVE: "#937860"}
    for _, run in chosen.iterrows():
        ph = phases[phases["run_id"] == run["run_id"]]
        label = "plain" if run["mode"] == "plain" else f"Covalent {run['executor']}"
        ax.barh(y, run["wall_s"], color="#eeeeee", edgecolor="grey")
        lanes.append(f"{label}: wall {run['wall_s']:.1f} s")
        for _, p in ph[ph["phase"].isin(list(client_colours))].iterrows():
            ax.barh(y, p["duration_s"], left=p["start_s"], color=client_colours[p["phase"]])
        y += 1
        nodes = ph[ph["phase"] == R.NODE].sort_values("start_s")
        tasks = ph[ph["phase"] == R.IN_TASK].sort_values("start_s")
        names = list(dict.fromkeys([*tasks["task"], *nodes["task"]]))
        for name in names:
            for _, p in nodes[nodes["task"] == name].iterrows():
                ax.barh(y, p["duration_s"], left=p["start_s"], color="#ffb347", height=0.6)
            for _, p in tasks[tasks["task"] == name].iterrows():
                ax.barh(y, p["duration_s"], left=p["start_s"], color="#4c72b0", height=0.6)
            lanes.append(f"  {name}")
            y += 1
    ax.set_yticks(range(len(lanes)), lanes, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("seconds from the run's start")
    ax.set_title(f"One round ({config_id}, round {rnd}): blue = inside the task, "
                 "orange = node span on the server", fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in client_colours.values()]
    ax.legend(handles, list(client_colours), fontsize=7, loc="lower right")
    save_figure(fig, path)


@plot("cold_start", "cold_start.png", section="plots",
      when=lambda d: _summary(d) and d.summary[["cold_plain_s", "cold_covalent_s"]]
      .notna().to_numpy().any(), caption=(
          "The first warm-up run of each mode (hatched: right after the server started, left "
          "out of every other figure) beside its measured median (whiskers: the rounds' "
          "range): the gap is what a first run on a fresh server costs on top of a warm one."))
def plot_cold_start(data: ReportData, path: Path) -> None:
    """Per configuration and mode: the cold (warm-up) run against the measured rounds."""
    summary, runs = data.summary, data.runs
    configs = list(dict.fromkeys(summary["config_id"]))
    bars = 1 + summary.groupby("config_id")["executor"].count().max()  # modes per panel
    fig, axes = plt.subplots(1, len(configs), squeeze=False,
                             figsize=(max(7.5, max(4.5, 1.25 * bars) * len(configs)), 4.6))
    width = 0.38
    for ax, config_id in zip(axes[0], configs, strict=True):
        rows = summary[summary["config_id"] == config_id]
        mine = runs[runs["config_id"] == config_id]
        modes = [("plain", rows["cold_plain_s"].iloc[0], mine[mine["mode"] == "plain"])]
        modes += [(r.executor, r.cold_covalent_s,
                   mine[(mine["mode"] == "covalent") & (mine["executor"] == r.executor)])
                  for r in rows.itertuples()]
        for x, (label, cold_s, walls) in enumerate(modes):
            colour = MODE_COLORS.get(label.rpartition(":")[2], "grey")
            wall = walls["wall_s"]
            median = wall.median()
            ax.bar(x - width / 2, median, width, color=colour, capsize=3,
                   yerr=[[median - wall.min()], [wall.max() - median]])
            if pd.notna(cold_s):
                ax.bar(x + width / 2, cold_s, width, color=colour, alpha=0.35, hatch="//",
                       edgecolor=colour)
                ax.annotate(f"{cold_s - median:+.2f} s", (x + width / 2, cold_s), ha="center",
                            va="bottom", fontsize=8, xytext=(0, 3), textcoords="offset points")
        # An environment's executor (env:executor) is named by both, one per line.
        ax.set_xticks(range(len(modes)), [
            lb if lb == "plain" else lb.replace(":", "\n") if ":" in lb else f"Covalent\n{lb}"
            for lb, _, _ in modes], fontsize=8)
        ax.set_title(_wrap_id(config_id, 40), fontsize=8)
        ax.set_ylabel("wall time (s)")
        ax.margins(y=0.15)
    handles = [plt.Rectangle((0, 0), 1, 1, color="grey"),
               plt.Rectangle((0, 0), 1, 1, facecolor="grey", alpha=0.35, hatch="//")]
    fig.legend(handles, ["measured median (whiskers: range over rounds)",
                         "cold run (first warm-up); label: cold − median"],
               loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle("Cold start: the first run after the server started vs the measured rounds",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


@plot("history", "history.png", section="history", when=lambda d: d.history is not None,
      caption=("Each gate run's overhead across commits with its CI: red crosses are "
               "regressions, the dashed line the baseline."))
def plot_history(data: ReportData, path: Path) -> None:
    """Each gate run's overhead (median, CI) across commits; regressions in red."""
    history = data.history
    metrics = list(dict.fromkeys(history["metric"]))
    fig, axes = plt.subplots(len(metrics), 1, figsize=(9, 2.8 * len(metrics)), squeeze=False)
    for ax, metric in zip(axes[:, 0], metrics, strict=True):
        rows = history[history["metric"] == metric].reset_index(drop=True)
        order = list(dict.fromkeys(rows["session_id"]))
        for (config_id, executor), line in rows.groupby(["config_id", "executor"], sort=False):
            x = [order.index(s) for s in line["session_id"]]
            ax.errorbar(x, line["new_median"],
                        yerr=[line["new_median"] - line["new_ci_low"],
                              line["new_ci_high"] - line["new_median"]],
                        marker="o", capsize=3, label=f"{executor} {_wrap_id(config_id, 60)}")
            bad = line["verdict"] == "regression"
            ax.scatter([xi for xi, b in zip(x, bad, strict=True) if b], line["new_median"][bad],
                       color="red", s=120, marker="x", zorder=4,
                       label="regression" if bad.any() else None)
            ax.plot(x, line["baseline_median"], color="grey", linestyle="--", linewidth=0.8)
        commits = rows.drop_duplicates("session_id")["git_commit"].astype(str).str[:8]
        ax.set_xticks(range(len(order)), list(commits), rotation=30, fontsize=7)
        ax.set_ylabel(metric)
        ax.legend(fontsize=7)
    axes[0, 0].set_title("Overhead across commits (dashed: baseline; x: regression)")
    save_figure(fig, path)


def _environment_table(runs: pd.DataFrame) -> Table:
    latest = runs.sort_values("timestamp").iloc[-1]
    env = {col: latest[col] for col in ENV_COLUMNS if col in latest}
    if "torch_threads" in runs and runs["torch_threads"].notna().any():
        env["torch threads (inside tasks)"] = ", ".join(
            f"{_label(r)}: {int(r['torch_threads'])}"
            for _, r in runs.drop_duplicates(["mode", "executor"]).iterrows()
            if pd.notna(r["torch_threads"])
        )
    startup = runs["server_startup_s"].dropna() if "server_startup_s" in runs else []
    if len(startup):
        env["Covalent server start-up (s, not counted as overhead)"] = f"{startup.iloc[-1]:.1f}"
    return Table(pd.DataFrame({"": list(env), "value": [str(v) for v in env.values()]}))


WHERE_TEXT = (
    "Every task is timed from inside (wall and CPU time, any executor). Each round runs "
    "plain and Covalent back to back (interleaved), and each estimator is taken per round: "
    "**total** = Covalent wall − plain wall; **orchestration** = Covalent wall − the tasks' "
    "own time under Covalent (submit, waiting until the server runs the dispatch, executor "
    "staging and (de)serialization, gaps between tasks, completion detection, download); "
    "**compute inflation** = the tasks' own time under Covalent − plain (the same code "
    "running slower or faster: CPU shared with the server and workers, threads). Parallel "
    "tasks count once. `unexplained` is what no part names; `explained` its complement. "
    "`idle tax` is the CPU the server's process tree used during a plain run. "
    "`stock wall` is what `ct.get_result(wait=True)` (1 s polling) would have shown. "
    "Per-phase rows are in `phases.csv`."
)
INTRO_TEXT = (
    "The workflow run as plain Python functions (the lattice's own function, electrons as "
    "plain calls) and as a Covalent lattice on a real server. Wall time is the client's "
    "view: for Covalent, from the dispatch call until the result is downloaded. "
    "Overhead = median Covalent wall − median plain wall over the measured rounds "
    "(warm-up rounds excluded). `same_output`: every run of both modes returned the same "
    "value (equal digests). `comparable`: same torch thread count and device, where the "
    "workload reports them."
)
FINDINGS_NOTE = (
    "Derived from summary.csv and fits.csv by the rules in `bench/analysis/findings.py`. "
    "Seconds per run; brackets: 95 % CI of the median over paired rounds (exact order "
    "statistics from 6 rounds on, the percentile bootstrap below).")
PART_COLUMNS = ["submit_median_s", "until_running_median_s", "executor_cost_median_s",
                "scheduling_gaps_median_s", "completion_detect_median_s",
                "retrieve_median_s", "unexplained_s", "explained_pct", "stock_wall_median_s",
                "plain_server_cpu_s", "covalent_server_cpu_s"]


def _families_table(summary: pd.DataFrame) -> list[Block]:
    def fmt(row: pd.Series, family: str, unit: str) -> str:
        mid, low, high = (row[family], row[f"{family}_ci_low"], row[f"{family}_ci_high"])
        return f"{mid:+.2f} {unit} [{low:+.2f}, {high:+.2f}] (±{(high - low) / 2:.2f})"

    table = pd.DataFrame({
        "config_id": summary["config_id"],
        "executor": summary["executor"],
        "rounds": summary["covalent_rounds"],
        "total": [fmt(r, "total_overhead_s", "s") for _, r in summary.iterrows()],
        "total %": [fmt(r, "total_overhead_pct", "%") for _, r in summary.iterrows()],
        "orchestration": [fmt(r, "orchestration_s", "s") for _, r in summary.iterrows()],
        "orchestration %": [fmt(r, "orchestration_pct", "%") for _, r in summary.iterrows()],
        "compute inflation": [fmt(r, "compute_inflation_s", "s")
                              for _, r in summary.iterrows()],
        "comparable": summary["comparable"],
    })
    return [Text(f"Overhead families, median of paired rounds [{CONFIDENCE:.0%} CI] "
                 "(± CI half-width):"), Table(table)]


def _task_work_table(summary: pd.DataFrame) -> list[Block]:
    """What the tasks did, plain -> Covalent: the reading of compute inflation."""
    if summary["covalent_in_task_cpu_s"].isna().all():
        return []

    table = summary[["config_id", "executor"]].copy()
    for title, col, fmt in (("in-task wall s", "in_task_s", ".1f"),
                            ("CPU s", "in_task_cpu_s", ".1f"),
                            ("of it kernel s", "in_task_sys_cpu_s", ".1f"),
                            ("page faults", "in_task_page_faults", ",.0f")):
        table[title] = [f"{p:{fmt}} → {c:{fmt}}" for p, c in
                        zip(summary[f"plain_{col}"], summary[f"covalent_{col}"], strict=True)]
    table["Covalent tasks' environment"] = summary["covalent_task_env"]
    return [Text(
        "What the tasks did, plain → Covalent (medians per run, summed over tasks). Wall up "
        "with CPU flat is contention; CPU up is the same code doing more work, and with "
        "kernel time and page faults up it is the memory allocator. Dask's nanny starts "
        "every worker with `MALLOC_TRIM_THRESHOLD_=65536`; setting it at all turns off "
        "glibc's dynamic mmap threshold, so every large allocation is mapped and "
        "page-faulted afresh (remedy: `bench/dask/keep-malloc-defaults.yaml`)."), Table(table)]


def _task_table(runs: pd.DataFrame, phases: pd.DataFrame) -> list[Block]:
    """Per task: calls per run, its own time per call (measured inside the task) in each
    mode, its node's server-side span per call, and its serialized output (the manifest)."""
    rows = phases[phases["run_id"].isin(runs["run_id"])
                  & phases["phase"].isin([R.IN_TASK, R.NODE])].copy()
    rows = rows[~rows["task"].astype(str).str.startswith(":") | (rows["phase"] == R.IN_TASK)]
    rows = rows.dropna(subset=["task"])  # a phases.csv without task names: no per-task table
    if rows.empty:
        return []
    rows["where"] = rows["executor"].fillna("").replace("", "plain")
    per_run = rows[rows["phase"] == R.IN_TASK].groupby(["config_id", "task", "run_id"]).size()
    calls = per_run.groupby(["config_id", "task"]).max().rename("calls per run")
    parts = [calls]
    for phase, title in ((R.IN_TASK, "in-task s"), (R.NODE, "node span s")):
        sel = rows[rows["phase"] == phase]
        if sel.empty:
            continue
        med = sel.groupby(["config_id", "task", "where"])["duration_s"].median().unstack()
        parts.append(med.rename(columns=lambda w, t=title: f"{t} ({w})"))
    nodes = rows[rows["phase"] == R.NODE]
    if "bytes" in nodes and nodes["bytes"].notna().any():
        parts.append(nodes.groupby(["config_id", "task"])["bytes"].max().div(2**20)
                     .rename("output MiB"))
    table = pd.concat(parts, axis=1).reset_index()
    return [Text("Per task (medians per call over the measured rounds): its own time, measured "
                 "inside the task in each mode; under Covalent, its node's span on the server "
                 "(staging, (de)serialization and the task); and its serialized output (base64 "
                 "cloudpickle, from the dispatch manifest). Tasks of a sublattice run in its "
                 "sub-dispatch: they have in-task times but no node of their own here."),
            Table(table, floatfmt=".3f")]


def detail_configs(summary: pd.DataFrame) -> list[str]:
    """Configurations that get the per-configuration plots and tables."""
    single = summary[summary["concurrency"] <= 1]
    ids = list(dict.fromkeys(single["config_id"]))
    if len(ids) <= MAX_DETAIL or not {"shape", "data_path", "models"} <= set(single):
        return ids[:MAX_DETAIL]
    core = single[(single["shape"] == "tutorial") & (single["data_path"] == "tutorial")
                  & (single["models"] <= 1)]
    return list(dict.fromkeys(core["config_id"]))[:MAX_DETAIL]


def _probing(summary: pd.DataFrame) -> str:
    """Where tasks could not be timed from inside, say so: their time counts as
    orchestration."""
    notes = []
    for r in summary.itertuples():
        text = str(r.tasks_probed or "")
        for item in text.split():
            probed, _, rest = item.partition("/")
            tasks = rest.partition("+")[0]
            if probed.isdigit() and tasks.isdigit() and int(probed) < int(tasks):
                notes.append(f"{r.config_id} [{r.executor}]: {probed} of {tasks} task nodes")
    if not notes:
        return ""
    return ("Tasks timed from inside: " + "; ".join(sorted(set(notes))) + ". The time of a "
            "task that was not probed counts as orchestration, not in-task time.")


def findings_block(data: ReportData, figures: dict[str, Figure]) -> Findings:
    """The page's opening: the findings, each pointing at the plot that shows it, beside the
    key plot."""
    items = [(f.text, reg.topic_figure(f.topic, figures))
             for f in findings(data.full_summary, data.fits, data.probes, data.diffs,
                               growers(data.table("hotspot_diffs")), data.table("predicted"))]
    key = reg.key_figure(data.full_summary["config_id"].nunique() > 1, figures)
    return Findings(tuple(items), key=key, note=FINDINGS_NOTE)


def head_blocks(data: ReportData, opening: Findings) -> list[Block]:
    """Title, findings, what was measured, and the summary table."""
    summary, runs = data.full_summary, data.runs
    sessions = ", ".join(sorted(set(summary["session_id"].dropna()) | set(runs["session_id"])))
    outputs = [f"{mode}_{m}" for m in numeric_outputs(runs) for mode in ("plain", "covalent")
               if f"{mode}_{m}" in summary]
    table = summary[["profile", "config_id", "executor", "plain_median_s", "covalent_median_s",
                     "overhead_s", "overhead_pct", "plain_rounds", "covalent_rounds",
                     *outputs[:4], "same_output", "comparable"]]
    blocks: list[Block] = [
        Heading(page_title(summary), level=1),
        opening,
        Text(INTRO_TEXT),
        Text(f"Sessions: {sessions}"),
        *[Text(note) for note in data.notes],
        Heading("Summary"),
        Table(table),
    ]
    probing = _probing(summary)
    return blocks + ([Text(probing)] if probing else [])


@section("plots", order=50)
def plots_section(data: ReportData, figures: list[Figure]) -> list[Block]:
    if len(data.summary) < len(data.full_summary):
        heading: list[Block] = [Heading("Per configuration"), Text(
            f"The plots and tables below cover {data.summary['config_id'].nunique()} core "
            f"configurations of {data.full_summary['config_id'].nunique()} (tutorial shape "
            "and data path, one model, one dispatch); summary.csv has every row.")]
    else:
        heading = [Heading("Plots")]
    return heading + list(figures)


@section("time", order=60)
def time_section(data: ReportData, figures: list[Figure]) -> list[Block]:
    """Where the time goes: the overhead's families and parts, what the tasks did, per task,
    and the cold runs."""
    summary = data.summary
    if not summary["orchestration_s"].notna().any():
        return []
    blocks = [Heading("Where the time goes"), Text(WHERE_TEXT), *_families_table(summary),
              Text("Parts (medians over measured rounds, seconds):"),
              Table(summary[["config_id", "executor", *PART_COLUMNS]])]
    blocks += _task_work_table(summary)
    blocks += _task_table(data.runs, data.phases) if data.phases is not None else []
    cold_rows = summary[["config_id", "executor", "cold_plain_s", "cold_covalent_s",
                         "plain_median_s", "covalent_median_s"]]
    return blocks + [Text("Cold runs (the warm-up round right after the server started; "
                          "excluded from everything above):"), Table(cold_rows)]


@section("probes", order=70)
def probes_section(data: ReportData, figures: list[Figure]) -> list[Block]:
    if data.probes.empty:
        return []
    return [Heading("What the probes cost"), Text(PROBES_TEXT),
            Table(data.probes, floatfmt=".4f")]


@section("history", order=80)
def history_section(data: ReportData, figures: list[Figure]) -> list[Block]:
    return [Heading("Overhead across commits"), *figures] if figures else []


@section("environment", order=90)
def environment_section(data: ReportData, figures: list[Figure]) -> list[Block]:
    return [Heading("Environment"), _environment_table(data.runs)]


def page_blocks(data: ReportData) -> list[Block]:
    """The report page as blocks: findings first, then every section in its order, each
    with the plots drawn for it (draw_plots)."""
    figures = {p.file: p.figure() for p in reg.PLOTS if (data.out_dir / p.file).exists()}
    opening = findings_block(data, figures)
    blocks = head_blocks(data, opening)
    for sec in reg.sections():
        scoped = reg.scoped(sec, data)
        if scoped is not None:
            blocks += sec.build(scoped, [figures[p.file] for p in reg.plots_of(sec.name)
                                         if p.file in figures])
    # The key plot opens the page; it is not repeated further down.
    shown = {opening.key.file} if opening.key else set()
    return [b for b in blocks if not (isinstance(b, Figure) and b.file in shown)]


def write_tables(data: ReportData) -> None:
    """Every declared derived table that is not empty, as its CSV beside the page; none
    left from an earlier report that this data can't make."""
    for d in reg.DERIVED:
        table = data.table(d.name)
        path = data.out_dir / d.file
        path.unlink(missing_ok=True)
        if not table.empty:
            table.to_csv(path, index=False, float_format="%.4g")


def draw_plots(data: ReportData) -> None:
    """Every declared plot the data supports, into data.out_dir; none left from an earlier
    report that this data can't make."""
    for p in reg.PLOTS:
        (data.out_dir / p.file).unlink(missing_ok=True)
    for sec in reg.sections():
        scoped = reg.scoped(sec, data)
        for p in reg.plots_of(sec.name) if scoped is not None else []:
            if p.when(scoped):
                p.draw(scoped, data.out_dir / p.file)


def page_title(summary: pd.DataFrame) -> str:
    workloads = ", ".join(dict.fromkeys(summary["workload"].astype(str)))
    return f"What does Covalent cost? {workloads}, plain vs Covalent"


@dataclass(frozen=True)
class Report:
    """A written report: the page's path (README.md; index.html beside it) and its blocks,
    which the Python API shows inline (bench.api.Session)."""

    page: Path
    blocks: tuple[Block, ...]
    title: str


def write_page(data: ReportData) -> Report:
    """README.md (for GitHub) and index.html (self-contained, plots embedded) beside it,
    from the same blocks."""
    blocks = page_blocks(data)
    page = data.out_dir / "README.md"
    page.write_text(to_markdown(blocks))
    title = page_title(data.full_summary)
    write_html(blocks, data.out_dir, title)
    return Report(page, tuple(blocks), title)


def phases_coverage(runs: pd.DataFrame, phases: pd.DataFrame | None, in_dir: Path
                    ) -> list[str]:
    """A note when phases.csv is missing or covers only some measured runs: the breakdown
    (orchestration, where the time goes) then stands on fewer runs, or on none."""
    if runs.empty:
        return []
    if phases is None:
        return [f"{in_dir / R.PHASES_CSV} is missing: no breakdown of where the time goes "
                f"(orchestration, phases, per-task times); the walls and total overhead only"]
    covered = runs["run_id"].isin(phases["run_id"])
    if covered.all():
        return []
    return [f"{in_dir / R.PHASES_CSV} covers {int(covered.sum())} of {len(runs)} measured "
            f"runs (cut off, or rows lost?): the breakdown stands on those only"]


def make_report(in_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                include_flagged: bool = False,
                envelope_dir: str | os.PathLike | None = None) -> Report:
    """The report of the records in `in_dir`. `envelope_dir`: an envelope session whose
    model predicts this session's graphs (default: DEFAULT_ENVELOPE where it holds one)."""
    in_dir = Path(in_dir)
    stored = _envelope(in_dir, envelope_dir)
    out_dir = Path(out_dir) if out_dir else in_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    all_runs = load_runs(in_dir)
    phases = load_phases(in_dir)
    notes = [note for frame in (all_runs, phases) if frame is not None
             for note in (dropped_note(frame), missing_note(frame)) if note]
    notes += phases_coverage(measured(all_runs), phases, in_dir)
    marked = flagged(all_runs)
    if marked.any():
        kinds = ", ".join(sorted(set(all_runs.loc[marked, "flags"].astype(str))))
        notes.append(
            f"{int(marked.sum())} run(s) flagged ({kinds}: a process of the server's tree died "
            f"during the run, e.g. a Dask worker restarted and its task ran again) "
            + ("are included, as asked." if include_flagged else
               "are left out of every figure; `python -m bench.report --include-flagged` "
               "keeps them."))
        if not include_flagged:
            all_runs = all_runs[~marked]
    runs = measured(as_batches(all_runs))
    if runs.empty:
        raise NoRecordsError(f"{in_dir}: runs.csv has no completed, measured (non-warm-up) runs")
    full_summary, fits = write_summary(out_dir, in_dir, include_flagged)
    diffs = environment_diffs(all_runs, phases)
    if not diffs.empty:
        diffs.to_csv(out_dir / ENVIRONMENTS_CSV, index=False, float_format="%.4f")
    sessions = set(all_runs["session_id"].astype(str))
    probes = probe_cost(all_runs)
    if not probes.empty:
        probes.to_csv(out_dir / PROBE_COST_CSV, index=False, float_format="%.4f")
    stacks = stacks_cost(all_runs)
    if not stacks.empty:
        stacks.to_csv(out_dir / STACKS_COST_CSV, index=False, float_format="%.4f")
    history = in_dir / HISTORY_CSV
    keep = detail_configs(full_summary)
    data = ReportData(
        out_dir=out_dir, runs=runs[runs["config_id"].isin(keep)],
        summary=full_summary[full_summary["config_id"].isin(keep)], full_summary=full_summary,
        fits=fits, phases=phases, diffs=diffs,
        definitions=[d for d in load_environments(in_dir) if d["session_id"] in sessions],
        probes=probes, notes=notes,
        history=pd.read_csv(history, dtype={"executor": str})
        if history.is_file() and history.stat().st_size else None,
        hotspots=load_hotspots(in_dir, sessions), stacks=stacks, all_runs=all_runs,
        envelope=stored)
    write_tables(data)
    draw_plots(data)
    return write_page(data)


DEFAULT_ENVELOPE = Path("reports/envelope")  # `python -m bench predict`'s default too


def _envelope(in_dir: Path, given: str | os.PathLike | None) -> StoredEnvelope | None:
    """The envelope named, else the default one if it is there and is not this session."""
    if given is not None:
        return stored_envelope(given)  # named: its absence is an error
    if not (DEFAULT_ENVELOPE / "runs.csv").is_file() or \
            DEFAULT_ENVELOPE.resolve() == in_dir.resolve():
        return None
    try:
        return stored_envelope(DEFAULT_ENVELOPE)
    except (NoRecordsError, RecordsSchemaError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    parser.add_argument("--in", dest="in_dir", default=os.environ.get("BENCH_OUT", "reports"),
                        help="directory holding runs.csv (default: reports)")
    parser.add_argument("--out", dest="out_dir", default=None,
                        help="where plots and README.md go (default: the input directory)")
    parser.add_argument("--include-flagged", action="store_true",
                        help="keep runs flagged in runs.csv (a worker restarted during them) "
                        "in the statistics; by default they are left out")
    parser.add_argument("--envelope", dest="envelope_dir", default=None, metavar="DIR",
                        help="an envelope session (--bench-profile envelope) whose model "
                        "predicts this session's graphs, shown beside what was measured "
                        f"(default: {DEFAULT_ENVELOPE} if it holds one)")
    args = parser.parse_args(argv)
    try:
        page = make_report(args.in_dir, args.out_dir, args.include_flagged,
                           args.envelope_dir).page
    except (NoRecordsError, RecordsSchemaError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report written: {page} (plots beside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
