"""The configuration matrix read across configurations (the MNIST workload's own section,
Workload.report_sections): overhead against workload size
per graph shape (with the fitted lines of fits.csv), bytes moved per shape, the K-model
sweep against the ideal parallel line, concurrent dispatches, and the findings in words
(the page's blocks, bench.report.blocks).

Reads summary.csv's rows (bench.analysis.summarize) and fits.csv's (overhead_fits) only.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from bench.analysis.decompose import family  # noqa: E402
from bench.analysis.findings import CHEAPEST, PAYOFF  # noqa: E402
from bench.analysis.stats import fit_line  # noqa: E402
from bench.report.blocks import Block, Bullets, Figure, Heading, Table, Text, save_figure  # noqa: E402
from bench.report.registry import ReportData, plot, section  # noqa: E402

SHAPE_ORDER = ("tutorial", "lean", "per-epoch", "monolithic")


def _single(summary: pd.DataFrame) -> pd.DataFrame:
    return summary[(summary["concurrency"] <= 1) & (summary["models"] <= 1)]


def _group_label(row: pd.Series | dict) -> str:
    if "shape" not in row:  # a fit: its family is the other parameters
        return str(row.get("family", ""))
    data = "" if row["data_path"] == "tutorial" else f", {row['data_path']}"
    return f"{row['shape']}{data} (ep{int(row['epochs'])}, bs{int(row['batch_size_train'])})"


def scaling_groups(summary: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    """Single-dispatch, single-model configurations that differ only in training size."""
    rows = _single(summary)
    rows = rows.assign(family=family(rows, "train_samples"))
    return [(keys, g.sort_values("train_samples"))
            for keys, g in rows.groupby(["executor", "family"], sort=False)
            if g["train_samples"].nunique() >= 2]


def _matrix(data: ReportData) -> bool:
    return data.full_summary["config_id"].nunique() >= 2


@plot("matrix_scaling", "matrix_scaling.png", section="matrix", when=_matrix, key=1, sweep_key=True,
      topics={CHEAPEST: 0, PAYOFF: 0}, caption=(
          "Overhead against training samples per graph shape and executor (top: seconds with "
          "95 % CI and the fitted line, dashed; bottom: % of plain): a line that heads below "
          "zero is where Covalent would pay off."))
def plot_scaling(data: ReportData, path: Path) -> bool:
    """Overhead (s, top; %, bottom) against training samples, one panel per executor."""
    summary, fits = data.full_summary, data.fits
    groups = scaling_groups(summary)
    if not groups:
        return False
    executors = list(dict.fromkeys(k[0] for k, _ in groups))
    fig, axes = plt.subplots(2, len(executors), figsize=(6.2 * len(executors), 8.5),
                             squeeze=False, sharex=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labels = list(dict.fromkeys(_group_label(g.iloc[0]) for _, g in groups))
    for col, executor in enumerate(executors):
        top, bottom = axes[0, col], axes[1, col]
        for _, g in (kg for kg in groups if kg[0][0] == executor):
            label = _group_label(g.iloc[0])
            colour = colours[labels.index(label) % len(colours)]
            x = g["train_samples"] / 1000
            top.errorbar(x, g["total_overhead_s"],
                         yerr=[g["total_overhead_s"] - g["total_overhead_s_ci_low"],
                               g["total_overhead_s_ci_high"] - g["total_overhead_s"]],
                         fmt="o", color=colour, capsize=3, label=label)
            fit = _fit_for(fits, executor, g.iloc[0])
            if fit is not None:
                xs = [0, x.max()]
                top.plot(xs, [fit["intercept_s"] + fit["slope_s_per_unit"] * v for v in xs],
                         color=colour, linewidth=1, linestyle="--")
            bottom.plot(x, g["total_overhead_pct"], marker="o", color=colour, label=label)
        top.axhline(0, color="black", linewidth=0.7)
        bottom.axhline(0, color="black", linewidth=0.7)
        top.set_title(f"Covalent {executor}")
        top.set_ylabel("overhead (s): median, 95 % CI; dashed: fit")
        bottom.set_ylabel("overhead (% of plain wall)")
        bottom.set_xlabel("training samples (thousands)")
        top.set_xlim(left=0)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Overhead as the workload grows, per graph shape "
                 "(fit: constant + per-1000-samples part)", fontsize=11)
    save_figure(fig, path)
    return True


def _fit_for(fits: pd.DataFrame, executor: str, group: pd.Series) -> pd.Series | None:
    """The train_samples fit of the family `group` belongs to."""
    rows = fits[(fits["executor"] == executor) & (fits["x"] == "train_samples")
                & (fits["y"] == "total_overhead_s")
                & (fits["family"] == group["family"])]
    return rows.iloc[0] if len(rows) else None


@plot("matrix_bytes", "matrix_bytes.png", section="matrix", when=_matrix, caption=(
    "MiB Covalent serializes per run, by graph shape and training size: the shapes with the "
    "tallest bars move the most data between tasks."))
def plot_bytes(data: ReportData, path: Path) -> bool:
    """Median bytes serialized per run (all node outputs), per shape and training size."""
    rows = _single(data.full_summary).dropna(subset=["bytes_moved_median"])
    rows = rows[(rows["epochs"] == rows["epochs"].mode().iloc[0])] if len(rows) else rows
    if rows.empty:
        return False
    rows = rows.drop_duplicates(["shape", "data_path", "train_samples", "batch_size_train"])
    groups = list(dict.fromkeys(_group_label(r) for _, r in rows.iterrows()))
    sizes = sorted(rows["train_samples"].unique())
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(groups) * max(1, len(sizes)) / 2), 4.6))
    width = 0.8 / len(sizes)
    for k, size in enumerate(sizes):
        values = []
        for label in groups:
            match = rows[(rows.apply(_group_label, axis=1) == label)
                         & (rows["train_samples"] == size)]
            values.append(match["bytes_moved_median"].iloc[0] / 2**20 if len(match) else 0.0)
        xs = [i + (k - (len(sizes) - 1) / 2) * width for i in range(len(groups))]
        bars = ax.bar(xs, values, width, label=f"{size / 1000:g}k samples")
        ax.bar_label(bars, fmt="%.1f", fontsize=6)
    ax.set_xticks(range(len(groups)), [g.replace(" (", "\n(") for g in groups], fontsize=7)
    ax.set_ylabel("MiB serialized per run (node outputs)")
    ax.set_title("Bytes Covalent moves per run, by graph shape")
    ax.legend(fontsize=7)
    save_figure(fig, path)
    return True


def sweep_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """K-model sweeps: families of configurations that differ only in `models` (K), K = 1
    included; `sweep` names each family."""
    single = summary[summary["concurrency"] <= 1]
    families = family(single, "models")
    swept = set(families[single["models"] > 1])
    rows = single[families.isin(swept)].assign(sweep=families[families.isin(swept)])
    labels = {f: _sweep_label(g.iloc[0]) for f, g in rows.groupby("sweep")}
    return rows.assign(sweep=rows["sweep"].map(labels)).sort_values(
        ["sweep", "executor", "models"])


def _sweep_label(row: pd.Series) -> str:
    return f"{_group_label(row)}, {row['train_samples'] / 1000:g}k samples"


def sweep_crossover(rows: pd.DataFrame) -> dict[tuple[str, str], int | None]:
    """Per sweep and executor, the smallest K from which Covalent's median beats plain's
    for good (None: it never does)."""
    out: dict[tuple[str, str], int | None] = {}
    for (sweep, executor), g in rows.groupby(["sweep", "executor"], sort=False):
        faster = list(g["covalent_median_s"] < g["plain_median_s"])
        ks = list(g["models"].astype(int))
        out[(sweep, executor)] = next((k for i, k in enumerate(ks) if all(faster[i:])), None)
    return out


@plot("matrix_sweep", "matrix_sweep.png", section="matrix", when=_matrix, topics={PAYOFF: 1},
      caption=("K models trained plain one after another (solid) vs under Covalent (dashed), "
               "with the ideal parallel line (dotted): Covalent pays off where its dashed line "
               "drops below the solid one."))
def plot_sweep(data: ReportData, path: Path) -> bool:
    rows = sweep_rows(data.full_summary)
    if rows.empty:
        return False
    cores = os.cpu_count() or 1
    executors = list(dict.fromkeys(rows["executor"]))
    sweeps = list(dict.fromkeys(rows["sweep"]))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    crossings = sweep_crossover(rows)
    fig, axes = plt.subplots(1, len(executors), figsize=(6.4 * len(executors), 4.8),
                             squeeze=False, sharey=True)
    for ax, executor in zip(axes[0], executors, strict=True):
        for n, sweep in enumerate(sweeps):
            g = rows[(rows["executor"] == executor) & (rows["sweep"] == sweep)]
            if g.empty:
                continue
            colour, k = colours[n % len(colours)], g["models"].astype(int)
            ax.plot(k, g["plain_median_s"], marker="o", color=colour, linestyle="-",
                    label=f"plain: {sweep}")
            ax.plot(k, g["covalent_median_s"], marker="s", color=colour, linestyle="--",
                    label=f"Covalent: {sweep}")
            ax.plot(k, g["plain_median_s"] / k.clip(upper=cores), color=colour,
                    linestyle=":", linewidth=1, alpha=0.7,
                    label=f"ideal parallel (plain / min(K, {cores} cores))" if n == 0 else None)
            cross = crossings.get((sweep, executor))
            if cross is not None:
                row = g[g["models"] == cross].iloc[0]
                ax.annotate(f"crossover K={cross}", (cross, row["covalent_median_s"]),
                            fontsize=8, color=colour, xytext=(6, -12),
                            textcoords="offset points")
        ks = sorted(rows["models"].astype(int).unique())
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(v) for v in ks])
        ax.set_xlabel("models in the sweep (K independent train+test branches)")
        ax.set_title(f"Covalent {executor}", fontsize=10)
        ax.legend(fontsize=6)
    axes[0, 0].set_ylabel("wall time (s, median)")
    fig.suptitle("Hyper-parameter sweep: K models, plain one after another vs Covalent "
                 "(solid: plain, dashed: Covalent)", fontsize=11)
    save_figure(fig, path)
    return True


def concurrency_rows(summary: pd.DataFrame) -> pd.DataFrame:
    batched = summary[summary["concurrency"] > 1]
    if batched.empty:
        return batched
    families = family(summary, "concurrency")
    base = family(batched.iloc[[0]], "concurrency").iloc[0]
    return summary[families == base].sort_values(["executor", "concurrency"])


@plot("matrix_concurrency", "matrix_concurrency.png", section="matrix", when=_matrix, caption=(
    "N workflows dispatched at once: throughput (left, higher is better) and latency (right, "
    "the band reaches the slowest) against plain one after another."))
def plot_concurrency(data: ReportData, path: Path) -> bool:
    rows = concurrency_rows(data.full_summary)
    if rows.empty:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    plain = rows.drop_duplicates("concurrency")
    left.plot(plain["concurrency"], plain["plain_per_min"], marker="o", color="#4c72b0",
              label="plain, one after another")
    for executor, g in rows.groupby("executor", sort=False):
        left.plot(g["concurrency"], g["covalent_per_min"], marker="s",
                  label=f"Covalent {executor}, dispatched at once")
        lat = g.assign(p50=g["covalent_latency_p50_s"].fillna(g["covalent_median_s"]),
                       p95=g["covalent_latency_p95_s"].fillna(g["covalent_median_s"]),
                       top=g["covalent_latency_max_s"].fillna(g["covalent_median_s"]))
        line = right.plot(lat["concurrency"], lat["p50"], marker="s",
                          label=f"{executor}: median")[0]
        right.fill_between(lat["concurrency"], lat["p50"], lat["top"], alpha=0.15,
                           color=line.get_color(), label=f"{executor}: median to max")
    plain_lat = plain["plain_latency_p50_s"].fillna(plain["plain_median_s"])
    right.plot(plain["concurrency"], plain_lat, marker="o", color="#4c72b0",
               label="plain: median")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(plain["concurrency"]), [str(int(v)) for v in plain["concurrency"]])
        ax.set_xlabel("workflows (N)")
        ax.legend(fontsize=7)
    left.set_ylabel("throughput (workflows per minute)")
    right.set_ylabel("latency: batch start to result in hand (s)")
    fig.suptitle("N workflows at once (Covalent) vs one after another (plain)", fontsize=11)
    save_figure(fig, path)
    return True


def _s(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else (
        f"{value:+.2f} s")


def findings(summary: pd.DataFrame, fits: pd.DataFrame) -> list[str]:
    """What the matrix says, in plain words, computed from its rows."""
    out: list[str] = []
    for _, fit in fits[(fits["x"] == "train_samples")
                       & (fits["y"] == "total_overhead_s")].iterrows():
        out.append(
            f"**{fit['executor']}, {_group_label(fit)}**: overhead ≈ {fit['intercept_s']:.2f} s "
            f"(± {fit['intercept_stderr_s']:.2f}) constant + {fit['slope_s_per_unit']:+.3f} s "
            f"(± {fit['slope_stderr']:.3f}) per 1000 training samples "
            f"(R² {fit['r2']:.2f}, {int(fit['points'])} rounds)."
        )
    for _, fit in fits[fits["x"] == "bytes_moved"].iterrows():
        out.append(
            f"**{fit['executor']}, bytes moved**: orchestration ≈ {fit['intercept_s']:.2f} s "
            f"(± {fit['intercept_stderr_s']:.2f}) + {fit['slope_s_per_unit'] * 100:+.2f} s "
            f"(± {fit['slope_stderr'] * 100:.2f}) per 100 MiB serialized (R² {fit['r2']:.2f}, "
            f"{int(fit['points'])} rounds over every single-model configuration)."
        )
    single = _single(summary)
    for executor, g in single.groupby("executor", sort=False):
        size = g["train_samples"].max()
        at = g[(g["train_samples"] == size) & (g["data_path"] == "tutorial")]
        at = at[at["epochs"] == at["epochs"].mode().iloc[0]] if len(at) else at
        at = at.drop_duplicates("shape")
        if at["shape"].nunique() >= 2:
            ranked = at.sort_values("overhead_s")
            best, worst = ranked.iloc[0], ranked.iloc[-1]
            tutorial = at[at["shape"] == "tutorial"]
            vs = tutorial.iloc[0]["overhead_s"] if len(tutorial) else worst["overhead_s"]
            out.append(
                f"**{executor}, shapes at {size / 1000:g}k samples**: least overhead with "
                f"`{best['shape']}` ({_s(best['overhead_s'])}, {best['overhead_pct']:+.0f} %), "
                f"{vs - best['overhead_s']:.2f} s less than the tutorial's shape "
                f"({_s(vs)}); most with `{worst['shape']}` ({_s(worst['overhead_s'])}). "
                "Order: " + ", ".join(f"{r['shape']} {_s(r['overhead_s'])}"
                                      for _, r in ranked.iterrows()) + "."
            )
        pre = g[g["data_path"] == "preloaded"]
        for _, row in pre.iterrows():
            twin = g[(g["data_path"] == "tutorial") & (g["shape"] == row["shape"])
                     & (g["train_samples"] == row["train_samples"])
                     & (g["epochs"] == row["epochs"])
                     & (g["batch_size_train"] == row["batch_size_train"])]
            if len(twin) and row["train_samples"] == pre["train_samples"].max():
                t = twin.iloc[0]
                out.append(
                    f"**{executor}, preloaded data ({row['shape']}, "
                    f"{row['train_samples'] / 1000:g}k)**: plain {t['plain_median_s']:.1f} → "
                    f"{row['plain_median_s']:.1f} s; Covalent {t['covalent_median_s']:.1f} → "
                    f"{row['covalent_median_s']:.1f} s; overhead {_s(t['overhead_s'])} → "
                    f"{_s(row['overhead_s'])}."
                )
    cheaper = summary[summary["covalent_median_s"] < summary["plain_median_s"]]
    if len(cheaper):
        out.append("**Covalent was faster than plain** in: " + "; ".join(
            f"{r['config_id']} on {r['executor']} ({r['overhead_pct']:+.0f} %)"
            for _, r in cheaper.iterrows()) + ".")
    dear = summary.sort_values("overhead_pct", ascending=False).head(3)
    out.append("**Dearest relative to plain**: " + "; ".join(
        f"{r['config_id']} on {r['executor']} ({r['overhead_pct']:+.0f} %, "
        f"{_s(r['overhead_s'])})" for _, r in dear.iterrows()) + ".")
    rows = sweep_rows(summary)
    if not rows.empty:
        for (sweep, executor), k in sweep_crossover(rows).items():
            g = rows[(rows["executor"] == executor) & (rows["sweep"] == sweep)]
            top = g.iloc[-1]
            speed = top["plain_median_s"] / top["covalent_median_s"]
            where = (f"crossover at K = {k}: from there Covalent beats running the models "
                     "one after another" if k is not None else
                     f"no crossover up to K = {int(top['models'])}: plain stays faster")
            out.append(f"**Sweep on {executor}, {sweep}**: {where}; at K = "
                       f"{int(top['models'])} plain "
                       f"{top['plain_median_s']:.1f} s vs Covalent "
                       f"{top['covalent_median_s']:.1f} s ({speed:.2f}× speed-up).")
            if len(g) >= 3:  # the cost of one more model, each way
                p = fit_line(g["models"], g["plain_median_s"])
                c = fit_line(g["models"], g["covalent_median_s"])
                plain_k, cov_k = p["slope_s_per_unit"], c["slope_s_per_unit"]
                if cov_k < plain_k:  # the lines meet where the gain per model pays the start
                    meet = (c["intercept_s"] - p["intercept_s"]) / (plain_k - cov_k)
                    verdict = f"the fitted lines cross at K ≈ {max(meet, 1):.1f}."
                else:
                    verdict = "the lines diverge: on this machine no K makes Covalent win."
                out[-1] += (f" One more model costs {plain_k:.2f} s plain and {cov_k:.2f} s "
                            f"under Covalent {executor} (slopes over K): {verdict}")
    conc = concurrency_rows(summary)
    if not conc.empty:
        for executor, g in conc.groupby("executor", sort=False):
            top = g.iloc[-1]
            out.append(
                f"**{int(top['concurrency'])} workflows at once on {executor}**: "
                f"{top['covalent_per_min']:.1f} per minute vs {top['plain_per_min']:.1f} plain "
                f"one after another; median latency {top['covalent_latency_p50_s']:.1f} s, "
                f"max {top['covalent_latency_max_s']:.1f} s; "
                f"{int(top['dispatches_ok'])} of {int(top['dispatches'])} dispatches completed."
            )
    return out


@section("matrix", order=40, per_workload=True)
def matrix_section(data: ReportData, figures: list[Figure]) -> list[Block]:
    """The page's blocks; empty when there is no matrix (none of its plots drawn)."""
    if not figures:
        return []
    summary, fits = data.full_summary, data.fits
    blocks: list[Block] = [
        Heading("Across the matrix: where Covalent pays off and where it costs"),
        Bullets(tuple(findings(summary, fits))),
        *figures,
    ]
    if len(fits):
        blocks += [Text("Fitted lines (`fits.csv`; least squares over every measured round):"),
                   Table(fits, floatfmt=".4g")]
    rounds = sorted(set(summary["covalent_rounds"].astype(int)))
    blocks.append(Text(
        f"Measured rounds per configuration: {', '.join(map(str, rounds))} (see each row's "
        "`covalent_rounds`); with few rounds the CIs are wide: read the fitted lines and the "
        "consistent signs rather than single medians."))
    return blocks
