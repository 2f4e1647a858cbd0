"""What one task costs: `python -m bench.pertask --out reports/pertask`.

Electrons that do nothing or sleep a fixed time, arranged as a chain (each takes the
previous one's output) or a fan-out (n independent tasks, gathered by the lattice's
return), for n = 1 ... 1000, dispatched to a real Covalent server on each executor; the
same functions called as plain Python, one after the other, are the baseline. Every run is
appended to `<out>/pertask.csv` the moment it ends. The summary fits wall time against n:
its slope is the cost of one more task.

Ideal time, the work itself with no orchestration: a chain must run its tasks one after the
other, n x sleep; a fan-out can run `slots` tasks at once (the executor's concurrency: the
local executor's process pool, CPU count; the server's Dask cluster or the external one,
workers x threads), ceil(n / slots) x sleep. Sleeping tasks use no CPU, so the slots, not
the cores, limit them. Per-task overhead = slope of (wall - ideal) against n, so that a
fan-out's parallelism is not counted as negative overhead, as (wall - plain) would count it
(plain runs the fan-out sequentially). Efficiency = ideal / wall (undefined for sleep 0).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import covalent as ct
import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from bench.analysis import CONFIDENCE, fit_line  # noqa: E402
from bench.cluster import DaskCluster, cluster_for  # noqa: E402
from bench.records import ENV_COLUMNS, CsvAppender, environment, utc_now  # noqa: E402
from bench.runner import POLL_S, TERMINAL  # noqa: E402
from bench.server import CovalentServer, server_for  # noqa: E402
from mnist_core.workflow import status_name  # noqa: E402

log = logging.getLogger(__name__)

PERTASK_CSV = "pertask.csv"
PERTASK_SUMMARY_CSV = "pertask_summary.csv"
SHAPES = ("chain", "fanout")
EXECUTORS = ("local", "dask", "external")  # external: a Dask cluster of our own or --dask-scheduler
DEFAULT_SIZES = (1, 10, 100, 1000)
DEFAULT_SLEEPS = (0.0, 0.01, 0.1)
# Published per-task costs of other systems (seconds per task), drawn as reference lines:
# Dask's docs give 200 us - 1 ms of scheduler overhead per task; Parsl's papers ~5 ms per task
# (HighThroughputExecutor); Ray ~1 ms per task round trip.
ANCHORS = {"Dask 0.2 ms": 2e-4, "Dask/Ray 1 ms": 1e-3, "Parsl 5 ms": 5e-3}
PLOTS = {
    "time": "pertask_time.png",
    "cost": "pertask_cost.png",
    "efficiency": "pertask_efficiency.png",
}
PERTASK_COLUMNS = (
    "timestamp",
    "session_id",
    "run_id",
    "mode",  # plain | covalent
    "executor",  # empty for plain, else local | dask | external
    "shape",  # chain | fanout
    "sleep_s",  # each task's own duration
    "n",  # number of tasks
    "round",
    "slots",  # tasks the executor can run at once (see the module docstring)
    "wall_s",  # plain: the calls; covalent: dispatch -> terminal status -> result downloaded
    "submit_s",  # the dispatch call: graph build, serialization, upload
    "server_s",  # result.end_time - result.start_time, as Covalent reports it
    "retrieve_s",
    "status",  # COMPLETED, FAILED, ..., TIMEOUT, ERROR, WRONG_RESULT, SKIPPED
    "dispatch_id",
    "error",  # what went wrong, or why a run was skipped
    "server_startup_s",
    "cluster_startup_s",
    *ENV_COLUMNS,
)


# --- the tasks and their graphs -------------------------------------------------------------
# Module level, so that Covalent pickles them by reference: server and workers import this.


def step(x: int, sleep_s: float) -> int:
    """One task: optionally sleep, then pass x + 1 on."""
    if sleep_s > 0:
        time.sleep(sleep_s)
    return x + 1


step_electron = ct.electron(step)


def chain(task: Callable[[int, float], int], n: int, sleep_s: float) -> int:
    """n tasks, each on the previous one's output; returns n."""
    x = 0
    for _ in range(n):
        x = task(x, sleep_s)
    return x


def fanout(task: Callable[[int, float], int], n: int, sleep_s: float) -> list[int]:
    """n independent tasks, gathered into one list; returns [1, ..., n]."""
    return [task(i, sleep_s) for i in range(n)]


def chain_workflow(n: int, sleep_s: float) -> int:
    return chain(step_electron, n, sleep_s)


def fanout_workflow(n: int, sleep_s: float) -> list[int]:
    return fanout(step_electron, n, sleep_s)


_BODIES = {"chain": (chain, chain_workflow), "fanout": (fanout, fanout_workflow)}


def expected_result(shape: str, n: int) -> int | list[int]:
    return n if shape == "chain" else list(range(1, n + 1))


def build_lattice(shape: str, executor: Any) -> ct.Lattice:
    """The shape as a lattice whose tasks run on `executor` ('local', 'dask' or an executor)."""
    if shape not in _BODIES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    return ct.lattice(_BODIES[shape][1], executor=executor)


def run_plain(shape: str, n: int, sleep_s: float) -> int | list[int]:
    """The same tasks as plain Python calls, one after the other."""
    return _BODIES[shape][0](step, n, sleep_s)


def ideal_time(shape: str, n: int, sleep_s: float, slots: float | None) -> float:
    """The work alone: a chain is sequential; a fan-out runs `slots` tasks at a time."""
    if sleep_s == 0:
        return 0.0
    if shape == "chain":
        return n * sleep_s
    if slots is None or not slots > 0:  # also NaN: unknown concurrency
        return math.nan
    return math.ceil(n / slots) * sleep_s


# --- measuring ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PertaskPlan:
    """What to run: every executor x shape x sleep x n x round."""

    executors: tuple[str, ...] = EXECUTORS
    shapes: tuple[str, ...] = SHAPES
    sleeps: tuple[float, ...] = DEFAULT_SLEEPS
    sizes: tuple[int, ...] = DEFAULT_SIZES
    rounds: int = 3
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        bad = [e for e in self.executors if e not in EXECUTORS]
        bad += [s for s in self.shapes if s not in SHAPES]
        if bad:
            raise ValueError(f"unknown executors/shapes {bad}: choose from {EXECUTORS}, {SHAPES}")
        if not self.sizes or min(self.sizes) < 1 or self.rounds < 1 or min(self.sleeps) < 0:
            raise ValueError("sizes and rounds must be >= 1 and sleeps >= 0")
        object.__setattr__(self, "sizes", tuple(sorted(set(self.sizes))))


def pertask_writer(out_dir: str | Path) -> CsvAppender:
    return CsvAppender(Path(out_dir) / PERTASK_CSV, PERTASK_COLUMNS)


def measure_dispatch(
    lattice: ct.Lattice, shape: str, n: int, sleep_s: float, address: str, timeout_s: float
) -> dict[str, Any]:
    """Dispatch, poll the status every POLL_S to a terminal one, download the result."""
    row: dict[str, Any] = {"status": "", "dispatch_id": "", "error": ""}
    start = time.perf_counter()
    try:
        dispatch_id = ct.dispatch(lattice, dispatcher_addr=address)(n, sleep_s)
    except Exception as exc:  # recorded, not hidden
        row.update(status="ERROR", error=f"dispatch: {type(exc).__name__}: {exc}"[:1000])
        return row
    submitted = time.perf_counter()
    row.update(dispatch_id=dispatch_id, submit_s=submitted - start)
    status = ""
    while status not in TERMINAL:
        if time.perf_counter() - submitted > timeout_s:
            row.update(status="TIMEOUT", wall_s=time.perf_counter() - start,
                       error=f"still {status or 'not started'} after {timeout_s:g} s; cancelled")
            _cancel(dispatch_id, address)
            return row
        time.sleep(POLL_S)
        reply = ct.get_result(dispatch_id, status_only=True, dispatcher_addr=address)
        status = status_name(reply["status"])
    done = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="covalent-pertask-") as results_dir:
        result = ct.get_result(dispatch_id, dispatcher_addr=address, results_dir=results_dir,
                               intermediate_outputs=False)
        end = time.perf_counter()
    row.update(status=status, wall_s=end - start, retrieve_s=end - done)
    if result.start_time is not None and result.end_time is not None:
        row["server_s"] = (result.end_time - result.start_time).total_seconds()
    if status != "COMPLETED":
        row["error"] = str(result.error or "")[:1000]
    elif result.result != expected_result(shape, n):
        row.update(status="WRONG_RESULT", error=f"returned {str(result.result)[:200]}")
    return row


def _cancel(dispatch_id: str, address: str, wait_s: float = 30.0) -> None:
    """Cancel a dispatch and wait a while for it to stop, so it does not load the next run."""
    try:
        ct.cancel(dispatch_id, dispatcher_addr=address)
        deadline = time.perf_counter() + wait_s
        while time.perf_counter() < deadline:
            reply = ct.get_result(dispatch_id, status_only=True, dispatcher_addr=address)
            if status_name(reply["status"]) in TERMINAL:
                return
            time.sleep(0.5)
    except Exception as exc:
        log.warning("could not cancel %s: %s", dispatch_id, exc)


def _slots(executor: str, server: CovalentServer, cluster: DaskCluster | None) -> float:
    if executor == "local":  # covalent's LocalExecutor: ProcessPoolExecutor(), CPU count
        return float(_server_cpus(server))
    if executor == "dask":
        if server.workers is None or server.threads_per_worker is None:
            return math.nan  # attached server: its cluster shape is not known here
        return float(server.workers * server.threads_per_worker)
    if cluster is None or cluster.threads_per_worker is None:
        return math.nan
    return float(cluster.workers * cluster.threads_per_worker)


def _server_cpus(server: CovalentServer) -> int:
    # The server runs on this machine when we own it; an attached one usually does too.
    return os.cpu_count() or 1


@contextlib.contextmanager
def _services(
    plan: PertaskPlan,
    covalent_address: str | None,
    dask_scheduler: str | None,
    cluster_workers: int,
    cluster_threads: int,
) -> Iterator[tuple[CovalentServer, DaskCluster | None]]:
    """The Covalent server and, for `external`, the Dask cluster: owned ones are stopped after."""
    # Without `dask` among the executors the server's own Dask cluster would only add noise.
    start = {} if "dask" in plan.executors or covalent_address else {"no_cluster": True}
    with server_for(covalent_address, **start) as server:
        if "external" not in plan.executors:
            yield server, None
            return
        kwargs = {} if dask_scheduler else {"workers": cluster_workers,
                                            "threads_per_worker": cluster_threads}
        with cluster_for(dask_scheduler, **kwargs) as cluster:
            yield server, cluster


def _executor_target(executor: str, cluster: DaskCluster | None) -> Any:
    if executor != "external":
        return executor
    assert cluster is not None
    return cluster.executor()


def run_pertask(
    out_dir: str | Path,
    plan: PertaskPlan,
    covalent_address: str | None = None,
    dask_scheduler: str | None = None,
    cluster_workers: int = 2,
    cluster_threads: int = 1,
) -> Path:
    """Run the plan, appending one row per run to <out_dir>/pertask.csv; its path.

    Order: for each shape, sleep and n (ascending), round by round, plain then each
    executor, so that drift hits all alike. A run that fails or times out skips the larger
    n of its executor, shape and sleep; each skip is a row with the reason."""
    writer = pertask_writer(out_dir)
    session_id = utc_now().replace(":", "") + "-" + uuid.uuid4().hex[:6]
    with _services(plan, covalent_address, dask_scheduler, cluster_workers,
                   cluster_threads) as (server, cluster):
        targets = {e: _executor_target(e, cluster) for e in plan.executors}
        slots = {e: _slots(e, server, cluster) for e in plan.executors}
        common = {
            "session_id": session_id,
            "server_startup_s": server.startup_s,
            "cluster_startup_s": cluster.startup_s if cluster is not None else None,
            **environment(),
        }

        def record(**row: Any) -> None:
            writer.append({"timestamp": utc_now(), "run_id": uuid.uuid4().hex[:12], **common,
                           **{k: round(v, 6) if isinstance(v, float) else v
                              for k, v in row.items()}})

        for shape in plan.shapes:
            for sleep_s in plan.sleeps:
                broken: dict[str, str] = {}  # executor -> why larger n are skipped
                for n in plan.sizes:
                    key = {"shape": shape, "sleep_s": sleep_s, "n": n}
                    for executor, reason in broken.items():
                        record(mode="covalent", executor=executor, slots=slots[executor],
                               status="SKIPPED", error=reason, **key)
                    live = [e for e in plan.executors if e not in broken]
                    if not live:  # a plain baseline alone compares with nothing
                        continue
                    for rnd in range(plan.rounds):
                        t0 = time.perf_counter()
                        run_plain(shape, n, sleep_s)
                        record(mode="plain", executor="", round=rnd, status="COMPLETED",
                               wall_s=time.perf_counter() - t0, **key)
                        for executor in live:
                            if executor in broken:
                                continue
                            lattice = build_lattice(shape, targets[executor])
                            row = measure_dispatch(lattice, shape, n, sleep_s, server.address,
                                                   plan.timeout_s)
                            record(mode="covalent", executor=executor, round=rnd,
                                   slots=slots[executor], **key, **row)
                            log.info("%s %s sleep=%g n=%d round %d: %s in %.2f s", executor,
                                     shape, sleep_s, n, rnd, row["status"],
                                     row.get("wall_s", math.nan))
                            if row["status"] != "COMPLETED":
                                broken[executor] = (f"n={n} round {rnd} ended {row['status']}: "
                                                    f"{row['error']}"[:500])
    return writer.path


# --- analysis -------------------------------------------------------------------------------


def load_pertask(in_dir: str | Path) -> pd.DataFrame:
    df = pd.read_csv(Path(in_dir) / PERTASK_CSV)
    df["executor"] = df["executor"].fillna("").astype(str)
    return df


def _with_ideal(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    slots = pd.to_numeric(df["slots"], errors="coerce") if "slots" in df else np.nan
    df["slots"] = slots
    df["ideal_s"] = [
        ideal_time(r.shape, int(r.n), float(r.sleep_s), None if pd.isna(r.slots) else r.slots)
        for r in df.itertuples()
    ]
    return df


def _fit(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Least-squares slope and intercept, the slope's CI from its stderr and Student's t."""
    out = {k: math.nan for k in ("slope_s", "slope_ci_low_s", "slope_ci_high_s", "intercept_s",
                                 "r2")}
    if len(np.unique(x)) < 2:
        return out
    fit = fit_line(x, y)
    slope = fit["slope_s_per_unit"]
    out.update(slope_s=slope, intercept_s=fit["intercept_s"], r2=fit["r2"])
    if len(x) > 2:
        half = stats.t.ppf(0.5 + CONFIDENCE / 2, len(x) - 2) * fit["slope_stderr"]
        out.update(slope_ci_low_s=slope - half, slope_ci_high_s=slope + half)
    return out


def pertask_efficiency(df: pd.DataFrame) -> pd.DataFrame:
    """Per executor, shape, sleep and n of completed Covalent runs: median wall, ideal time,
    efficiency (ideal / median wall; NaN for sleep 0) and overhead per task."""
    cov = _with_ideal(df[(df["mode"] == "covalent") & (df["status"] == "COMPLETED")])
    if cov.empty:
        return pd.DataFrame(columns=["executor", "shape", "sleep_s", "n", "runs", "wall_s",
                                     "ideal_s", "efficiency", "overhead_per_task_s"])
    out = (cov.groupby(["executor", "shape", "sleep_s", "n"], as_index=False)
           .agg(runs=("wall_s", "size"), wall_s=("wall_s", "median"), ideal_s=("ideal_s", "first")))
    out["efficiency"] = np.where(out["sleep_s"] > 0, out["ideal_s"] / out["wall_s"], np.nan)
    out["overhead_per_task_s"] = (out["wall_s"] - out["ideal_s"]) / out["n"]
    return out


def pertask_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per executor, shape and sleep: the per-task overhead fit and what completed.

    slope_s (with its 95 % CI) is the cost of one more task: the least-squares slope of
    (wall - ideal) against n over every completed run; intercept_s the fixed cost of a
    dispatch. plain_slope_s is the same fit of the plain runs' wall time (about sleep_s)."""
    df = _with_ideal(df)
    eff = pertask_efficiency(df)
    plain = df[(df["mode"] == "plain") & (df["status"] == "COMPLETED")]
    rows = []
    cov = df[df["mode"] == "covalent"]
    for (executor, shape, sleep_s), group in cov.groupby(["executor", "shape", "sleep_s"]):
        done = group[group["status"] == "COMPLETED"]
        fit = _fit(done["n"].to_numpy(float), (done["wall_s"] - done["ideal_s"]).to_numpy(float))
        same = plain[(plain["shape"] == shape) & (plain["sleep_s"] == sleep_s)]
        plain_fit = _fit(same["n"].to_numpy(float), same["wall_s"].to_numpy(float))
        mine = eff[(eff["executor"] == executor) & (eff["shape"] == shape)
                   & (eff["sleep_s"] == sleep_s)].sort_values("n")
        bad = group[~group["status"].isin(["COMPLETED", "SKIPPED"])]
        skipped = group[group["status"] == "SKIPPED"]
        largest = mine.iloc[-1] if not mine.empty else None
        rows.append({
            "executor": executor,
            "shape": shape,
            "sleep_s": sleep_s,
            "runs": len(done),
            **fit,
            "plain_slope_s": plain_fit["slope_s"],
            "max_n_completed": int(done["n"].max()) if not done.empty else 0,
            "efficiency_at_max_n": largest["efficiency"] if largest is not None else math.nan,
            "overhead_per_task_at_max_n_s": (
                largest["overhead_per_task_s"] if largest is not None else math.nan),
            "efficiency_by_n": "; ".join(
                f"{int(r.n)}: {r.efficiency:.2f}" for r in mine.itertuples()
                if not pd.isna(r.efficiency)),
            "failed_runs": len(bad),
            "first_failure": (f"{bad.iloc[0]['status']} at n={int(bad.iloc[0]['n'])}: "
                              f"{bad.iloc[0]['error']}")[:300] if not bad.empty else "",
            "skipped_n": ", ".join(str(int(v)) for v in sorted(skipped["n"].unique())),
        })
    return pd.DataFrame(rows)


def write_pertask_summary(in_dir: str | Path, out_dir: str | Path | None = None) -> pd.DataFrame:
    summary = pertask_summary(load_pertask(in_dir))
    summary.to_csv(Path(out_dir or in_dir) / PERTASK_SUMMARY_CSV, index=False)
    return summary


# --- plots and the report section -----------------------------------------------------------

_SLEEP_COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"]


def _grid(rows: Sequence[str], cols: Sequence[str]) -> tuple[plt.Figure, np.ndarray]:
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(4.2 * len(cols), 3.6 * len(rows)),
                             squeeze=False, sharex=True, sharey=True)
    return fig, axes


def plot_time_vs_n(df: pd.DataFrame, summary: pd.DataFrame, path: Path) -> None:
    """Wall time against task count, log-log, per executor (columns) and shape (rows): every
    completed run, the fit (ideal + intercept + slope x n), and the published anchors'
    per-task costs as lines of time = cost x n."""
    cov = _with_ideal(df[(df["mode"] == "covalent") & (df["status"] == "COMPLETED")])
    executors = sorted(cov["executor"].unique())
    shapes = [s for s in SHAPES if s in set(cov["shape"])]
    if cov.empty:
        return
    fig, axes = _grid(shapes, executors)
    sleeps = sorted(cov["sleep_s"].unique())
    n_all = np.array(sorted(cov["n"].unique()), dtype=float)
    for i, shape in enumerate(shapes):
        for j, executor in enumerate(executors):
            ax = axes[i][j]
            for k, sleep_s in enumerate(sleeps):
                color = _SLEEP_COLORS[k % len(_SLEEP_COLORS)]
                runs = cov[(cov["executor"] == executor) & (cov["shape"] == shape)
                           & (cov["sleep_s"] == sleep_s)]
                if runs.empty:
                    continue
                ax.scatter(runs["n"], runs["wall_s"], s=12, color=color, alpha=0.7,
                           label=f"sleep {sleep_s:g} s")
                fit = summary[(summary["executor"] == executor) & (summary["shape"] == shape)
                              & (summary["sleep_s"] == sleep_s)]
                if not fit.empty and not pd.isna(fit.iloc[0]["slope_s"]):
                    f = fit.iloc[0]
                    slots = runs["slots"].iloc[0]
                    ideal = np.array([ideal_time(shape, int(n), sleep_s,
                                                 None if pd.isna(slots) else slots)
                                      for n in n_all])
                    line = ideal + f["intercept_s"] + f["slope_s"] * n_all
                    ax.plot(n_all, np.clip(line, 1e-3, None), color=color, lw=1,
                            label=f"fit: {1e3 * f['slope_s']:.1f} ms/task")
            for (label, cost), style in zip(ANCHORS.items(), [":", "--", "-."], strict=True):
                ax.plot(n_all, cost * n_all, color="#777777", ls=style, lw=0.9, label=label)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{executor}, {shape}")
            ax.grid(True, which="both", alpha=0.3)
            if i == len(shapes) - 1:
                ax.set_xlabel("tasks n")
            if j == 0:
                ax.set_ylabel("wall time (s)")
            ax.legend(fontsize=6, loc="upper left")
    fig.suptitle("Covalent wall time against task count (lines: anchors' cost × n)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cost(summary: pd.DataFrame, path: Path) -> None:
    """Per-task overhead (slope, 95 % CI) per executor, shape and sleep, against the anchors."""
    fitted = summary.dropna(subset=["slope_s"])
    if fitted.empty:
        return
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(fitted) + 2), 4))
    x = np.arange(len(fitted))
    low = (fitted["slope_s"] - fitted["slope_ci_low_s"]).fillna(0).clip(lower=0)
    high = (fitted["slope_ci_high_s"] - fitted["slope_s"]).fillna(0).clip(lower=0)
    ax.errorbar(x, fitted["slope_s"] * 1e3, yerr=[low * 1e3, high * 1e3], fmt="o",
                color="#dd8452", capsize=3, label="Covalent per-task overhead (95 % CI)")
    for (label, cost), style in zip(ANCHORS.items(), [":", "--", "-."], strict=True):
        ax.axhline(cost * 1e3, color="#777777", ls=style, lw=0.9, label=label)
    ax.set_xticks(x, [f"{r.executor}\n{r.shape}\n{r.sleep_s:g} s" for r in fitted.itertuples()],
                  fontsize=7)
    positive = fitted["slope_s"][fitted["slope_s"] > 0]
    if not positive.empty:
        ax.set_yscale("log")
    ax.set_ylabel("ms per task")
    ax.set_title("Cost of one more task (slope of wall − ideal against n)")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_efficiency(eff: pd.DataFrame, path: Path) -> None:
    """Efficiency (ideal / wall) against task duration, one line per executor, shape and n."""
    eff = eff.dropna(subset=["efficiency"])
    if eff.empty:
        return
    shapes = [s for s in SHAPES if s in set(eff["shape"])]
    fig, axes = plt.subplots(1, len(shapes), figsize=(5 * len(shapes), 3.8), squeeze=False)
    for ax, shape in zip(axes[0], shapes, strict=True):
        rows = eff[eff["shape"] == shape]
        for k, ((executor, n), line) in enumerate(rows.groupby(["executor", "n"])):
            line = line.sort_values("sleep_s")
            ax.plot(line["sleep_s"], line["efficiency"], marker="o",
                    color=_SLEEP_COLORS[k % len(_SLEEP_COLORS)], label=f"{executor}, n={n}")
        ax.set_xscale("log")
        ax.set_ylim(0, 1.05)
        ax.axhline(1.0, color="#777777", lw=0.8)
        ax.set_xlabel("task duration (s)")
        ax.set_ylabel("efficiency (ideal / wall)")
        ax.set_title(shape)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(df: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """All per-task plots that the data allows; the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = pertask_summary(df)
    plot_time_vs_n(df, summary, out / PLOTS["time"])
    plot_cost(summary, out / PLOTS["cost"])
    plot_efficiency(pertask_efficiency(df), out / PLOTS["efficiency"])
    return [out / name for name in PLOTS.values() if (out / name).exists()]


def _ms(value: float) -> str:
    return "" if pd.isna(value) else f"{1e3 * value:.2f}"


def pertask_section(in_dir: Path, out_dir: Path | None = None) -> str:
    """A markdown section on the per-task cost, from <in_dir>/pertask.csv ("" if none).

    Writes the plots and pertask_summary.csv into `out_dir` (default `in_dir`); image links
    are relative to it."""
    in_dir = Path(in_dir)
    out_dir = Path(out_dir) if out_dir is not None else in_dir
    if not (in_dir / PERTASK_CSV).exists():
        return ""
    df = load_pertask(in_dir)
    summary = pertask_summary(df)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out_dir / PERTASK_SUMMARY_CSV, index=False)
    images = write_plots(df, out_dir)
    table = pd.DataFrame({
        "executor": summary["executor"],
        "shape": summary["shape"],
        "task sleep (s)": summary["sleep_s"],
        "ms per task": summary["slope_s"].map(_ms),
        "95 % CI (ms)": [
            "" if pd.isna(lo) else f"{_ms(lo)} … {_ms(hi)}"
            for lo, hi in zip(summary["slope_ci_low_s"], summary["slope_ci_high_s"], strict=True)
        ],
        "fixed cost (s)": summary["intercept_s"].map(lambda v: "" if pd.isna(v) else f"{v:.2f}"),
        "largest n done": summary["max_n_completed"],
        "efficiency by n": summary["efficiency_by_n"],
        "failures": [
            f"{f}; skipped n {s}" if s else (f or "") for f, s in
            zip(summary["first_failure"], summary["skipped_n"], strict=True)
        ],
    }) if not summary.empty else pd.DataFrame()
    lines = [
        "## What one task costs",
        "",
        "No-op or sleeping electrons in a chain (each on the previous output) or a fan-out "
        "(independent, gathered by the lattice's return). *ms per task*: slope of "
        "(wall − ideal) against n by least squares, with its 95 % CI; ideal = n × sleep for a "
        "chain, ceil(n / slots) × sleep for a fan-out (slots: the executor's concurrency). "
        "*Efficiency* = ideal / wall. Published anchors: Dask scheduler 0.2–1 ms per task, "
        "Parsl ~5 ms, Ray ~1 ms per round trip.",
        "",
        table.to_markdown(index=False) if not table.empty else "_No Covalent runs recorded._",
        "",
    ]
    lines += [f"![{p.stem}]({p.name})" for p in images]
    return "\n".join(lines) + "\n"


# --- command line ---------------------------------------------------------------------------


def _list(kind: Callable[[str], Any]) -> Callable[[str], tuple[Any, ...]]:
    def parse(text: str) -> tuple[Any, ...]:
        try:
            return tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pertask", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="reports/pertask", help="output directory")
    parser.add_argument("--executors", type=_list(str), default=EXECUTORS,
                        help=f"comma-separated, of {','.join(EXECUTORS)}")
    parser.add_argument("--sizes", type=_list(int), default=DEFAULT_SIZES)
    parser.add_argument("--sleeps", type=_list(float), default=DEFAULT_SLEEPS)
    parser.add_argument("--shapes", type=_list(str), default=SHAPES)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0, help="per dispatch, seconds")
    parser.add_argument("--covalent-address", default=None,
                        help="attach to this server (env COVALENT_BENCH_SERVER)")
    parser.add_argument("--dask-scheduler", default=None,
                        help="external: use this scheduler tcp://host:port instead of "
                        "starting one (env COVALENT_BENCH_DASK_SCHEDULER)")
    parser.add_argument("--cluster-workers", type=int, default=2)
    parser.add_argument("--cluster-threads-per-worker", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        plan = PertaskPlan(args.executors, args.shapes, args.sleeps, args.sizes, args.rounds,
                           args.timeout)
    except ValueError as exc:
        parser.error(str(exc))
    out = Path(args.out)
    path = run_pertask(out, plan, args.covalent_address, args.dask_scheduler,
                       args.cluster_workers, args.cluster_threads_per_worker)
    summary = write_pertask_summary(out)
    write_plots(load_pertask(out), out)
    print(f"runs: {path}\nsummary: {out / PERTASK_SUMMARY_CSV}")
    if not summary.empty:
        print(summary[["executor", "shape", "sleep_s", "runs", "slope_s", "slope_ci_low_s",
                       "slope_ci_high_s", "intercept_s", "max_n_completed"]]
              .to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
