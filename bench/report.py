"""`python -m bench.report`: plots and a report page from the run records in reports/."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from bench.analysis import (  # noqa: E402
    SEGMENTS,
    NoRecordsError,
    load_phases,
    load_runs,
    measured,
    summarize,
    with_breakdown,
)
from bench.records import ENV_COLUMNS, SUMMARY_CSV  # noqa: E402

MODE_COLORS = {"plain": "#4c72b0", "local": "#dd8452", "dask": "#55a868"}
PLOTS = {
    "wall_time": "wall_time.png",
    "overhead": "overhead.png",
    "accuracy": "accuracy.png",
    "loss_curves": "loss_curves.png",
    "breakdown": "breakdown.png",
}
SEGMENT_STYLE = {  # label, colour: compute in blue, orchestration in warm colours
    "in_task_s": ("in-task compute", "#4c72b0"),
    "submit_s": ("submit (build, serialize, upload)", "#dd8452"),
    "until_running_s": ("until server runs it", "#c44e52"),
    "server_orchestration_s": ("server: scheduling, staging, transfer", "#ffb347"),
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


def plot_wall_time(runs: pd.DataFrame, path: Path) -> None:
    """Every measured round as a dot, the median as a bar, per configuration and mode."""
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
        ax.set_xticks(range(len(labels)), [("Covalent " + lb if lb != "plain" else lb)
                                           for lb in labels])
        ax.set_title(_wrap_id(config_id, 40), fontsize=8)
        ax.set_ylabel("wall time (s)")
        ax.margins(y=0.12)
    fig.suptitle("Wall time per run\n(bars: median; dots: measured rounds)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_overhead(summary: pd.DataFrame, runs: pd.DataFrame, path: Path) -> None:
    """Median overhead per configuration and executor; whiskers span the rounds' range."""
    fig, ax = _bar_figure(len(summary))
    for i, row in summary.reset_index(drop=True).iterrows():
        cov = runs[(runs["config_id"] == row["config_id"]) & (runs["executor"] == row["executor"])]
        spread = cov["wall_s"] - row["plain_median_s"]
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_accuracy(summary: pd.DataFrame, path: Path) -> None:
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_loss_curves(runs: pd.DataFrame, path: Path) -> None:
    """Training loss of the first measured round of each mode; identical runs overlap."""
    configs = list(dict.fromkeys(runs["config_id"]))
    fig, axes = plt.subplots(1, len(configs), figsize=(5 * len(configs), 3.8), squeeze=False)
    styles = {"plain": ("-", "o"), "local": ("--", "x"), "dask": (":", "+")}
    for ax, config_id in zip(axes[0], configs, strict=True):
        group = runs[runs["config_id"] == config_id].sort_values("round")
        for _, row in group.drop_duplicates(["mode", "executor"]).iterrows():
            label = _label(row)
            line, marker = styles.get(label, ("-", "."))
            ax.plot(json.loads(row["train_counter"]), json.loads(row["train_losses"]),
                    linestyle=line, marker=marker, markersize=5,
                    color=MODE_COLORS.get(label, "grey"),
                    label="Covalent " + label if label != "plain" else label)
        ax.set_title(_wrap_id(config_id, 40), fontsize=8)
        ax.set_xlabel("training samples seen")
        ax.set_ylabel("nll loss")
        ax.legend()
    fig.suptitle("Training loss (every log_interval batches; identical runs overlap)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_breakdown(runs: pd.DataFrame, path: Path) -> None:
    """Median of each wall-time segment, stacked, per configuration and mode."""
    keys = runs.drop_duplicates(["config_id", "mode", "executor"])
    fig, ax = plt.subplots(figsize=(11, 1.4 + 0.7 * len(keys)))
    labels = []
    for i, (_, key) in enumerate(keys.iterrows()):
        group = runs[(runs["config_id"] == key["config_id"]) & (runs["executor"] ==
                                                                 key["executor"])]
        left = 0.0
        for seg in SEGMENTS:
            value = group[seg].fillna(0).median()
            name, colour = SEGMENT_STYLE[seg]
            ax.barh(i, value, left=left, color=colour, label=name if i == 0 else None)
            left += value
        ax.annotate(f"{group['wall_s'].median():.1f} s", (left, i), va="center",
                    xytext=(4, 0), textcoords="offset points", fontsize=8)
        labels.append(f"{_label(key)}\n{_wrap_id(key['config_id'], 30)}")
    ax.set_yticks(range(len(keys)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("seconds (medians of measured rounds)")
    ax.set_title("Where the wall time goes")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.margins(x=0.12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _environment_table(runs: pd.DataFrame) -> str:
    latest = runs.sort_values("timestamp").iloc[-1]
    env = {col: latest[col] for col in ENV_COLUMNS}
    env["torch threads (inside tasks)"] = ", ".join(
        f"{_label(r)}: {int(r['torch_threads'])}"
        for _, r in runs.drop_duplicates(["mode", "executor"]).iterrows()
    )
    startup = runs["server_startup_s"].dropna()
    if len(startup):
        env["Covalent server start-up (s, not counted as overhead)"] = f"{startup.iloc[-1]:.1f}"
    return pd.DataFrame({"": list(env), "value": list(env.values())}).to_markdown(index=False)


def write_page(runs: pd.DataFrame, summary: pd.DataFrame, out_dir: Path) -> Path:
    sessions = ", ".join(sorted(set(runs["session_id"])))
    table = summary[["profile", "config_id", "executor", "plain_median_s", "covalent_median_s",
                     "overhead_s", "overhead_pct", "plain_rounds", "covalent_rounds",
                     "plain_accuracy", "covalent_accuracy", "same_weights", "comparable"]]
    lines = [
        "# What does Covalent cost? MNIST tutorial, plain vs Covalent",
        "",
        "The Covalent MNIST tutorial's workflow run as plain Python functions and as a "
        "Covalent lattice on a real server, same seed and thread count. Wall time is the "
        "client's view: for Covalent, from the dispatch call until the result is downloaded. "
        "Overhead = median Covalent wall − median plain wall over the measured rounds "
        "(warm-up rounds excluded). `same_weights`: every run of both modes ended with "
        "bit-identical model weights. `comparable`: same torch thread count and device.",
        "",
        f"Sessions: {sessions}",
        "",
        "## Summary",
        "",
        table.to_markdown(index=False, floatfmt=".2f"),
        "",
        "## Plots",
        "",
    ]
    lines += [f"![{name}]({file})" for name, file in PLOTS.items()]
    if "orchestration_s" in summary and summary["orchestration_s"].notna().any():
        where = summary[["config_id", "executor", "overhead_s", "plain_in_task_s",
                         "covalent_in_task_s", "compute_inflation_s", "orchestration_s",
                         "submit_median_s", "until_running_median_s",
                         "server_orchestration_s", "completion_detect_median_s",
                         "retrieve_median_s"]]
        lines += [
            "", "## Where the time goes", "",
            "Each task is timed from inside (wall and CPU, any executor). "
            "*compute inflation* = the tasks' own time under Covalent − their time plain "
            "(same code running slower or faster); *orchestration* = Covalent wall − "
            "in-task time, split into submit, waiting until the server runs the "
            "dispatch, server time outside the tasks (scheduling, staging, transfers), "
            "completion detection (50 ms polling) and result download. Parallel tasks "
            "count once. Per-phase rows are in `phases.csv`.",
            "",
            where.to_markdown(index=False, floatfmt=".2f"),
        ]
    lines += ["", "## Environment", "", _environment_table(runs), ""]
    page = out_dir / "README.md"
    page.write_text("\n".join(lines))
    return page


def make_report(in_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> Path:
    in_dir = Path(in_dir)
    out_dir = Path(out_dir) if out_dir else in_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = measured(load_runs(in_dir))
    if runs.empty:
        raise NoRecordsError(f"{in_dir}: runs.csv has no completed, measured (non-warm-up) runs")
    phases = load_phases(in_dir)
    summary = summarize(runs, phases)
    summary.to_csv(out_dir / SUMMARY_CSV, index=False, float_format="%.4f")
    plot_wall_time(runs, out_dir / PLOTS["wall_time"])
    plot_loss_curves(runs, out_dir / PLOTS["loss_curves"])
    if phases is not None:
        plot_breakdown(with_breakdown(runs, phases), out_dir / PLOTS["breakdown"])
    if not summary.empty:
        plot_overhead(summary, runs, out_dir / PLOTS["overhead"])
        plot_accuracy(summary, out_dir / PLOTS["accuracy"])
    return write_page(runs, summary, out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    parser.add_argument("--in", dest="in_dir", default=os.environ.get("BENCH_OUT", "reports"),
                        help="directory holding runs.csv (default: reports)")
    parser.add_argument("--out", dest="out_dir", default=None,
                        help="where plots and README.md go (default: the input directory)")
    args = parser.parse_args(argv)
    try:
        page = make_report(args.in_dir, args.out_dir)
    except NoRecordsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report written: {page} (plots beside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
