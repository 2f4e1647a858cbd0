"""Covalent's envelope, in the report: the fitted cost per dispatch, node, edge, MB and
level of depth per environment and executor, the growth test, and measured against fitted
orchestration (bench.analysis.envelope; the `envelope` profile)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from bench.analysis.decompose import round_estimates  # noqa: E402
from bench.analysis.envelope import (  # noqa: E402
    ENVELOPE_RUNS_CSV,
    SWEEP_WORKLOAD,
    StoredEnvelope,
    coefficient_table,
    covalent_versions,
    envelope_runs,
    fits,
    growth,
    measured_against_predicted,
    task_count_series,
)
from bench.report.blocks import Block, Bullets, Figure, Heading, Table, Text, save_figure  # noqa: E402
from bench.report.registry import ReportData, derived, plot, section  # noqa: E402


@derived("envelope_runs", ENVELOPE_RUNS_CSV)
def _envelope_runs(data: ReportData) -> pd.DataFrame:
    """The `graph` workload's measured Covalent rounds with their census and features."""
    runs = data.all_runs
    if "workload" not in runs or not (runs["workload"] == SWEEP_WORKLOAD).any():
        return pd.DataFrame()
    return envelope_runs(round_estimates(runs, data.phases), runs)


@derived("envelope", "envelope.csv")
def _envelope(data: ReportData) -> pd.DataFrame:
    sweep = data.table("envelope_runs")
    return coefficient_table(fits(sweep)) if not sweep.empty else pd.DataFrame()


def _fitted(data: ReportData) -> bool:
    return not data.table("envelope").empty


@plot("envelope", "envelope.png", section="envelope", when=_fitted, caption=(
    "Each graph of the sweep: its measured orchestration against the envelope model's fit "
    "(log-log; the diagonal is a perfect fit), per environment and executor."))
def plot_envelope(data: ReportData, path: Path) -> bool:
    sweep = data.table("envelope_runs")
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    for found in fits(sweep):
        rows = sweep[(sweep["environment"] == found.environment)
                     & (sweep["executor"] == found.executor)]
        label = f"{found.environment}:{found.executor}" if found.environment else found.executor
        ax.scatter(found.model.fittedvalues, rows["orchestration_s"], s=18,
                   label=f"{label} (R² {found.r2:.2f})")
    low = max(0.1, float(sweep["orchestration_s"].min()) / 1.5)
    high = float(sweep["orchestration_s"].max()) * 1.5
    ax.plot([low, high], [low, high], color="grey", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):  # seconds as plain numbers, no crowded minor labels
        axis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("fitted orchestration (s)")
    ax.set_ylabel("measured orchestration (s)")
    ax.legend(fontsize=7)
    ax.set_title("The envelope model against the sweep", fontsize=10)
    save_figure(fig, path)
    return True


@section("envelope", order=34)
def envelope_section(data: ReportData, figures: list[Figure]) -> list[Block]:
    if not _fitted(data):
        return []
    table = data.table("envelope")
    sweep = data.table("envelope_runs")
    grown = growth(sweep, task_count_series(data.all_runs))
    return [
        Heading("Covalent's envelope"),
        Text("Orchestration per run fitted as a x dispatches + b x nodes + c x edges + d x "
             "MB (every node's stored output: the tasks', the parameters' and those of the "
             "nodes Covalent adds, such as a list argument's) + e x depth (the most nodes "
             "run one after another) over the sweep's graphs "
             "(weighted least squares, HC3 95 % CIs; "
             "`envelope.csv`). `python -m bench predict --bench-workload MODULE:ATTR "
             "--envelope <this folder>` applies it to your graph."),
        Bullets(tuple(g.sentence() for g in grown)),
        Table(table, floatfmt=".3g"),
        *figures,
    ]


# --- a session's graphs against the envelope's prediction ---------------------------------

POINT_TOLERANCE_PCT = 25.0  # the target for a point prediction


def _envelope_for(data: ReportData) -> StoredEnvelope | None:
    """The envelope named for this report (--envelope), else this session's own sweep."""
    if data.envelope is not None:
        return data.envelope
    own = data.table("envelope_runs")
    if own.empty:
        return None
    return StoredEnvelope("this session", own, covalent_versions(data.all_runs))


@derived("predicted", "predicted.csv")
def _predicted(data: ReportData) -> pd.DataFrame:
    """The session's graphs (their plain runs' census) measured against the prediction."""
    envelope = _envelope_for(data)
    runs = data.all_runs
    if envelope is None or runs.empty:
        return pd.DataFrame()  # (an envelope too small to fit: each row says so)
    return measured_against_predicted(round_estimates(runs, data.phases), runs, envelope)


@section("predicted", order=35)
def predicted_section(data: ReportData, figures: list[Figure]) -> list[Block]:
    table = data.table("predicted")
    if table.empty:
        return []
    envelope = _envelope_for(data)
    judged = table.dropna(subset=["predicted_orchestration_s"]) \
        if "predicted_orchestration_s" in table else table.iloc[0:0]
    close = int((judged["error_pct"].abs() <= POINT_TOLERANCE_PCT).sum()) if len(judged) else 0
    inside = int(judged["inside_interval"].sum()) if len(judged) else 0
    shown = table.rename(columns={"measured_orchestration_s": "measured (s)",
                                  "predicted_orchestration_s": "predicted (s)",
                                  "interval_low_s": "95 % low", "interval_high_s": "95 % high",
                                  "error_pct": "error %", "reference_scale": "speed x",
                                  "unscaled_predicted_s": "unscaled (s)"})
    keep = [c for c in ("config_id", "environment", "executor", "covalent", "rounds", "nodes",
                        "edges", "mb", "measured (s)", "unscaled (s)", "speed x",
                        "predicted (s)", "95 % low", "95 % high", "error %", "inside_interval",
                        "note") if c in shown]
    bullets = [f"{close} of {len(judged)} point predictions within ±{POINT_TOLERANCE_PCT:g} % "
               f"of the measured orchestration; {inside} of {len(judged)} measurements inside "
               f"the predicted 95 % interval."] if len(judged) else []
    bullets += sorted({n for n in table.get("note", pd.Series(dtype=str)).dropna() if n})
    return [
        Heading("Predicted from the envelope"),
        Text(f"Each configuration's measured orchestration (the median of its rounds) beside "
             f"what the envelope in {envelope.source if envelope else '?'} predicts for its "
             f"graph (its census, read by one plain run: nodes, edges, MB, sublattices) on "
             f"the same Covalent release and executor (`predicted.csv`). Where the session "
             f"also ran the envelope's reference graph (`--bench-reference`), the prediction "
             f"is the envelope's (`unscaled`) times this session's speed against the "
             f"envelope's on that graph (`speed x`), its interval widened by the speed's "
             f"95 % CI."),
        Bullets(tuple(bullets)),
        Table(shown[keep], floatfmt=".3g"),
    ]
