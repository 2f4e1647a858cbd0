"""From run records to the per-configuration summary: plain vs Covalent, where the time
goes, and how sure we are (bootstrap confidence intervals over paired rounds).

Per Covalent run (seconds):
    wall     = submit + until_running + server + completion_detect + retrieve + rest
    server   = in_task + executor_cost + scheduling_gaps
where in_task is the union of the tasks' own intervals (parallel tasks count once),
executor_cost the rest of the nodes' spans (staging, (de)serialization, hand-off) and
scheduling_gaps the server time when no node ran. A plain run is in_task + rest.
Overhead = Covalent wall - plain wall of the same round splits into two families:
    orchestration     = Covalent wall - Covalent in_task (its named parts + Covalent rest)
    compute inflation = Covalent in_task - plain in_task (the same tasks, slower or faster)
and what no part names (rest of both runs) is reported as `unexplained_s`.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
from scipy import stats

from bench import records as R
from bench.analysis.stats import fit_line, median_ci
from bench.workloads import declared
from bench.workloads.base import CENSUS_KEYS

ORCHESTRATION_PARTS = (
    "submit_s",
    "until_running_s",
    "scheduling_gaps_s",
    "executor_cost_s",
    "completion_detect_s",
    "retrieve_s",
)
# Segments of a run's wall time, in the order they happen (plots stack them so).
SEGMENTS = (
    "submit_s",
    "until_running_s",
    "in_task_s",
    "executor_cost_s",
    "scheduling_gaps_s",
    "completion_detect_s",
    "retrieve_s",
    "rest_s",
)
# Per-round estimators that get a median and a bootstrap CI.
ESTIMATORS = ("total_overhead_s", "total_overhead_pct", "orchestration_s",
              "orchestration_pct", "compute_inflation_s")

# What the tasks themselves did, summed over a run's in-task rows (bench.probes): CPU time,
# its kernel share and page faults tell contention (wall up, CPU flat) from the same code
# doing more work (CPU up; with kernel time and faults up: the memory allocator).
TASK_WORK = {"cpu_s": "in_task_cpu_s", "sys_cpu_s": "in_task_sys_cpu_s",
             "page_faults": "in_task_page_faults"}

# Fixed columns of summary.csv; after them come the workload's parameters and, for each
# numeric output (MNIST: accuracy, test_loss), plain_<name> and covalent_<name>.
SUMMARY_COLUMNS = (
    "profile",
    "workload",
    "config_id",
    "executor",
    "environment",  # the Covalent environment ([[environments]]); executor is env:executor
    "covalent",  # the Covalent release the Covalent runs used
    "params",
    "concurrency",
    "plain_median_s",
    "covalent_median_s",
    "overhead_s",  # median Covalent wall - median plain wall
    "overhead_pct",
    "plain_rounds",
    "covalent_rounds",
    "same_output",  # every run of both modes returned the same digest
    "deterministic",  # each mode's runs agree with each other (else same_output can't hold)
    "tasks_probed",  # tasks timed from inside / task nodes of a Covalent run
    "plain_threads",
    "covalent_threads",
    "comparable",
    *(f"{e}{suffix}" for e in ESTIMATORS for suffix in ("", "_ci_low", "_ci_high")),
    "plain_in_task_s",
    "covalent_in_task_s",
    *(f"{mode}_{col}" for col in TASK_WORK.values() for mode in ("plain", "covalent")),
    "covalent_task_env",  # bench.probes.ENV_KNOBS as the Covalent tasks saw them
    *(f"{p.removesuffix('_s')}_median_s" for p in ORCHESTRATION_PARTS),
    "server_median_s",
    "stock_wall_median_s",
    "unexplained_s",
    "explained_pct",
    "plain_server_cpu_s",  # the idle server's CPU during a plain run: its tax
    "covalent_server_cpu_s",
    "cold_plain_s",  # first (warm-up) round after the server started
    "cold_covalent_s",
    "bytes_moved_median",  # serialized node outputs of one Covalent run (manifest sizes)
    # Batches (concurrency > 1) are judged by their makespan; these describe their runs.
    "dispatches",
    "dispatches_ok",
    "plain_per_min",  # throughput: runs finished per minute of batch wall time
    "covalent_per_min",
    "plain_latency_p50_s",
    "covalent_latency_p50_s",
    "covalent_latency_p95_s",
    "covalent_latency_max_s",
    "session_id",
)
# Least-squares lines of the overhead against a numeric parameter (fits.csv), one per
# workload, executor, y and family: configurations alike in every other parameter.
FIT_Y = ("total_overhead_s", "orchestration_s")
FIT_COLUMNS = ("workload", "executor", "x", "y", "family", "points", "intercept_s",
               "intercept_stderr_s", "slope_s_per_unit", "slope_stderr", "unit", "r2")


def as_batches(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs of concurrency > 1 collapsed to one row per batch, judged by its makespan.

    A batch row keeps wall_s = batch_wall_s, status COMPLETED only if every run completed,
    and counts its dispatches; it has no run_id, so no per-run breakdown attaches to it."""
    single = runs[runs["concurrency"] <= 1].assign(dispatches=1)
    single["dispatches_ok"] = (single["status"] == "COMPLETED").astype(int)
    multi = runs[runs["concurrency"] > 1]
    if multi.empty:
        return single
    keys = ["session_id", "config_id", "mode", "executor", "round"]  # one batch
    batches = []
    for _, batch in multi.groupby(keys, sort=False):
        row = batch.iloc[0].copy()
        ok = int((batch["status"] == "COMPLETED").sum())
        row["run_id"] = ""
        row["wall_s"] = batch["batch_wall_s"].iloc[0]
        row["status"] = "COMPLETED" if ok == len(batch) else "FAILED"
        row["dispatches"], row["dispatches_ok"] = len(batch), ok
        row["latency_p50_s"] = batch["latency_s"].median()
        row["latency_p95_s"] = batch["latency_s"].quantile(0.95)
        row["latency_max_s"] = batch["latency_s"].max()
        row["output_digest"] = "/".join(sorted(set(batch["output_digest"].astype(str))))
        batches.append(row)
    return pd.concat([single, pd.DataFrame(batches)], ignore_index=True)


def union_length(intervals: list[tuple[float, float]]) -> float:
    """Time covered by at least one interval: parallel tasks count once."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


# --- the overhead families: each defined here once; the summary, the environments'
# differences, the precision rule and the gate all compute them through these. They take
# numbers or aligned Series alike.


def in_task_time(intervals: list[tuple[float, float]]) -> float:
    """A run's in-task time: the union of its tasks' own intervals (parallel ones once)."""
    return union_length(intervals)


def orchestration(covalent_wall_s: Any, covalent_in_task_s: Any) -> Any:
    """What Covalent adds around the tasks: its wall minus the tasks' own time."""
    return covalent_wall_s - covalent_in_task_s


def total_overhead(covalent_wall_s: Any, plain_wall_s: Any) -> Any:
    """Covalent wall minus plain wall of the same round."""
    return covalent_wall_s - plain_wall_s


def total_overhead_pct(covalent_wall_s: Any, plain_wall_s: Any) -> Any:
    return 100 * (covalent_wall_s / plain_wall_s - 1)


def compute_inflation(covalent_in_task_s: Any, plain_in_task_s: Any) -> Any:
    """The same tasks, slower (or faster) under Covalent."""
    return covalent_in_task_s - plain_in_task_s


def _intervals(rows: pd.DataFrame) -> list[tuple[float, float]]:
    return list(zip(rows["start_s"], rows["start_s"] + rows["duration_s"], strict=True))


def breakdown(phases: pd.DataFrame) -> pd.DataFrame:
    """Per run, the segments phases.csv holds (submit and retrieve are in runs.csv)."""
    rows = []
    for run_id, group in phases.groupby("run_id", sort=False):
        in_task = in_task_time(_intervals(group[group["phase"] == R.IN_TASK]))
        nodes = union_length(_intervals(group[group["phase"] == R.NODE]))
        named = group.groupby("phase")["duration_s"].sum()
        server = named.get(R.SERVER, 0.0)
        rows.append({
            "run_id": run_id,
            "in_task_s": in_task,
            "until_running_s": named.get(R.UNTIL_RUNNING, 0.0),
            "executor_cost_s": max(nodes - in_task, 0.0) if server else 0.0,
            "scheduling_gaps_s": max(server - max(nodes, in_task), 0.0) if server else 0.0,
            "completion_detect_s": named.get(R.COMPLETION_DETECT, 0.0),
            "bytes_moved": group.loc[group["phase"] == R.NODE, "bytes"].sum()
            if "bytes" in group else float("nan"),
            **_task_work(group[group["phase"] == R.IN_TASK]),
        })
    return pd.DataFrame(rows)


def _task_work(tasks: pd.DataFrame) -> dict[str, object]:
    out: dict[str, object] = {
        name: tasks[col].sum(min_count=1) if col in tasks else float("nan")
        for col, name in TASK_WORK.items()
    }
    envs = tasks["task_env"].dropna().unique() if "task_env" in tasks else []
    out["task_env"] = " | ".join(sorted(map(str, envs)))
    return out


def with_breakdown(runs: pd.DataFrame, phases: pd.DataFrame | None) -> pd.DataFrame:
    """Runs joined with their segments; `rest_s` is wall time no segment explains."""
    if phases is None or phases.empty:
        return runs
    joined = runs.merge(breakdown(phases), on="run_id", how="left")
    seg = [c for c in SEGMENTS if c != "rest_s"]
    joined["rest_s"] = joined["wall_s"] - joined.reindex(columns=seg).fillna(0).sum(axis=1)
    return joined


def flagged(runs: pd.DataFrame) -> pd.Series:
    """Runs whose measurement saw something else happen (runs.csv `flags`, e.g. a worker
    restart): they completed, but what they measured is not the workflow alone. Profiled
    rounds are not among them: `measured` leaves those out always."""
    if "flags" not in runs:
        return pd.Series(False, index=runs.index)
    flags = _flags(runs)
    return (flags != "") & (flags != R.PROFILED)


def profiled(runs: pd.DataFrame) -> pd.Series:
    """Runs whose stacks were sampled (--bench-stacks): for the profiles and the sampling's
    cost only."""
    if "flags" not in runs:
        return pd.Series(False, index=runs.index)
    return _flags(runs).str.split(";").apply(lambda flags: R.PROFILED in flags)


def _flags(runs: pd.DataFrame) -> pd.Series:
    """runs.csv `flags` as text, "" where empty (an all-empty column reads as floats)."""
    return runs["flags"].astype(object).where(runs["flags"].notna(), "").astype(str).str.strip()


def bare(runs: pd.DataFrame) -> pd.Series:
    """Runs made without probes (runs.csv `probes` = off): only for the probes' own cost."""
    if "probes" not in runs:
        return pd.Series(False, index=runs.index)
    return runs["probes"].astype(str) == "off"


def measured(runs: pd.DataFrame) -> pd.DataFrame:
    """Completed, non-warm-up, probed rows of the latest session that measured each
    (config, mode)."""
    return _latest(runs[(runs["status"] == "COMPLETED") & (~runs["warmup"].astype(bool))
                        & ~bare(runs) & ~profiled(runs)])


def cold(runs: pd.DataFrame) -> pd.DataFrame:
    """The warm-up rounds (the first runs after the server started), latest session."""
    return _latest(runs[(runs["status"] == "COMPLETED") & runs["warmup"].astype(bool)])


def _latest(rows: pd.DataFrame) -> pd.DataFrame:
    keys = ["profile", "config_id", "mode", "executor"]
    latest = rows.groupby(keys)["session_id"].transform("max")
    return rows[rows["session_id"] == latest]


def paired_rounds(plain: pd.DataFrame, cov: pd.DataFrame) -> pd.DataFrame:
    """Per round, the estimators on the plain and Covalent run of that round."""
    p = plain.set_index("round")
    c = cov.set_index("round")
    both = p.index.intersection(c.index)
    p, c = p.loc[both], c.loc[both]
    out = pd.DataFrame(index=both)
    out["plain_wall_s"], out["covalent_wall_s"] = p["wall_s"], c["wall_s"]
    out["total_overhead_s"] = total_overhead(c["wall_s"], p["wall_s"])
    out["total_overhead_pct"] = total_overhead_pct(c["wall_s"], p["wall_s"])
    if "in_task_s" in c:
        out["orchestration_s"] = orchestration(c["wall_s"], c["in_task_s"])
        out["orchestration_pct"] = 100 * out["orchestration_s"] / p["wall_s"]
        out["compute_inflation_s"] = compute_inflation(c["in_task_s"], p["in_task_s"])
        out["unexplained_s"] = c["rest_s"] - p["rest_s"]
    return out


def round_estimates(runs: pd.DataFrame, phases: pd.DataFrame | None) -> pd.DataFrame:
    """One row per configuration, executor and measured round: the paired estimators."""
    done = with_breakdown(measured(as_batches(runs)), phases)
    frames = []
    for config_id, group in done.groupby("config_id", sort=False):
        plain = group[group["mode"] == "plain"]
        for executor, cov in group[group["mode"] == "covalent"].groupby("executor", sort=False):
            pairs = paired_rounds(plain, cov).rename_axis("round").reset_index()
            frames.append(pairs.assign(config_id=config_id, executor=executor))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def summarize(runs: pd.DataFrame, phases: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per configuration and executor."""
    rows = []
    runs = as_batches(runs)
    done = with_breakdown(measured(runs), phases)
    first = cold(runs)
    # Executors (and environments) in the order the profile lists them, the reference first:
    # the first round runs them in that order, later rounds vary it (engine.balanced_orders).
    order = list(dict.fromkeys(runs.loc[runs["mode"] == "covalent", "executor"]))
    for (profile, config_id), group in done.groupby(["profile", "config_id"], sort=False):
        plain = group[group["mode"] == "plain"]
        by_executor = dict(tuple(group[group["mode"] == "covalent"].groupby("executor")))
        for executor in sorted(by_executor, key=order.index):
            cov = by_executor[executor]
            row = _compare(profile, config_id, executor, plain, cov)
            cold_rows = first[first["config_id"] == config_id]
            row["cold_plain_s"] = _first(cold_rows[cold_rows["mode"] == "plain"]["wall_s"])
            row["cold_covalent_s"] = _first(cold_rows[cold_rows["executor"] == executor]["wall_s"])
            rows.append(row)
    extra = [*param_columns(runs), *(f"{mode}_{m}" for m in numeric_outputs(runs)
                                     for mode in ("plain", "covalent"))]
    return pd.DataFrame(rows, columns=list(dict.fromkeys([*SUMMARY_COLUMNS, *extra])))


def param_columns(frame: pd.DataFrame) -> list[str]:
    """The workload parameters the rows carry as columns (runs.csv `params`)."""
    names: dict[str, None] = {}
    for text in frame.get("params", pd.Series(dtype=str)).dropna().unique():
        names.update(dict.fromkeys(json.loads(text)))
    return [n for n in names if n in frame]


def run_facts(frame: pd.DataFrame) -> list[str]:
    """Outputs (runs.csv `outputs`) that describe how the rows ran rather than what they
    computed, as their workloads declare them (Workload.run_facts; MNIST: torch threads and
    device): compared for comparability, not summarized as results."""
    names = frame.get("workload", pd.Series(dtype=str)).dropna().unique()
    return list(dict.fromkeys(f for name in names for f in declared(name).run_facts))


def numeric_outputs(frame: pd.DataFrame) -> list[str]:
    """Numeric outputs the rows carry as columns (runs.csv `outputs`), results only."""
    names: dict[str, None] = {}
    facts = set(run_facts(frame))
    for text in frame.get("outputs", pd.Series(dtype=str)).dropna().unique():
        outputs = json.loads(text)
        # A graph's census (all of CENSUS_KEYS) is not a result; one such name alone is
        # the workflow's own (a chain returns how many tasks it ran: `tasks`).
        skip = facts | set(CENSUS_KEYS) if set(CENSUS_KEYS) <= set(outputs) else facts
        for key, value in outputs.items():
            if isinstance(value, int | float) and not isinstance(value, bool) \
                    and key not in skip:
                names[key] = None
    return [n for n in names if n in frame]


def family(frame: pd.DataFrame, dimension: str) -> pd.Series:
    """Per row, its parameters with `dimension` left out: rows alike in all else share it."""
    def key(text: object) -> str:
        params = json.loads(text) if isinstance(text, str) else {}
        params.pop(dimension, None)
        return ", ".join(f"{k}={v}" for k, v in params.items())

    return frame["params"].map(key)


def overhead_fits(runs: pd.DataFrame, phases: pd.DataFrame | None) -> pd.DataFrame:
    """The overhead's constant part and its growth, per workload and executor, from every
    measured round of single dispatches: against each numeric parameter that varies within
    a family (MNIST: training samples, epochs, models; chain/fanout: n tasks, whose slope is
    the cost of one more task), and orchestration against bytes moved."""
    rounds = round_estimates(runs, phases)
    if rounds.empty:
        return pd.DataFrame(columns=list(FIT_COLUMNS))
    firsts = runs.drop_duplicates("config_id").set_index("config_id")
    dims = param_columns(runs)
    rounds = rounds.join(firsts[["workload", "params", "concurrency", *dims]], on="config_id")
    moved = with_breakdown(measured(runs[runs["concurrency"] <= 1]), phases)
    if "bytes_moved" in moved:
        per_round = moved[moved["mode"] == "covalent"].set_index(
            ["config_id", "executor", "round"])["bytes_moved"]
        rounds = rounds.join(per_round, on=["config_id", "executor", "round"])
    rounds = rounds[rounds["concurrency"] <= 1]
    rows = []
    for x in dims:
        values = pd.to_numeric(rounds[x], errors="coerce")
        if values.isna().any() or values.nunique() < 2 or rounds[x].map(type).eq(bool).any():
            continue
        scale, unit = (1000, "s per 1000") if values.max() >= 5000 else (1, "s per 1")
        frame = rounds.assign(_x=values / scale, family=family(rounds, x))
        for (workload, executor, fam), group in frame.groupby(
                ["workload", "executor", "family"], sort=False):
            if group["_x"].nunique() < 2:
                continue
            for y in FIT_Y:
                if y in group and group[y].notna().all():
                    rows.append({"workload": workload, "executor": executor, "x": x, "y": y,
                                 "family": fam, "points": len(group), "unit": f"{unit} {x}",
                                 **fit_line(group["_x"], group[y])})
    if "bytes_moved" in rounds and "orchestration_s" in rounds:
        single = rounds.dropna(subset=["bytes_moved", "orchestration_s"])
        if "models" in single:  # a sweep's orchestration grows with its branches, not bytes
            single = single[pd.to_numeric(single["models"], errors="coerce").fillna(1) <= 1]
        for (workload, executor), group in single.groupby(["workload", "executor"]):
            if group["bytes_moved"].nunique() >= 2:
                rows.append({"workload": workload, "executor": executor, "x": "bytes_moved",
                             "y": "orchestration_s", "points": len(group), "unit": "s per MiB",
                             **fit_line(group["bytes_moved"] / 2**20, group["orchestration_s"])})
    return pd.DataFrame(rows, columns=list(FIT_COLUMNS))


def _first(values: pd.Series) -> float:
    return float(values.iloc[0]) if len(values) else float("nan")


def _median(frame: pd.DataFrame, column: str) -> float:
    if column not in frame or not len(frame):
        return float("nan")
    return pd.to_numeric(frame[column], errors="coerce").median()


def _facts(frame: pd.DataFrame, column: str) -> list[str]:
    if column not in frame:
        return []
    return sorted({str(v).removesuffix(".0") for v in frame[column].dropna()})


def _compare(
    profile: str, config_id: str, executor: str, plain: pd.DataFrame, cov: pd.DataFrame
) -> dict:
    plain_s, cov_s = _median(plain, "wall_s"), _median(cov, "wall_s")
    overhead = cov_s - plain_s
    plain_digests = set(plain["output_digest"].astype(str))
    digests = plain_digests | set(cov["output_digest"].astype(str))
    plain_threads, cov_threads = _facts(plain, "torch_threads"), _facts(cov, "torch_threads")
    first = cov.iloc[0]
    row = {
        "profile": profile,
        "workload": first.get("workload"),
        "config_id": config_id,
        "executor": executor,
        "environment": first.get("environment", ""),
        "covalent": first.get("covalent", ""),
        "params": first.get("params"),
        **{d: first.get(d) for d in param_columns(cov)},
        "concurrency": first.get("concurrency"),
        "plain_median_s": plain_s,
        "covalent_median_s": cov_s,
        "overhead_s": overhead,
        "overhead_pct": 100 * overhead / plain_s if plain_s else float("nan"),
        "plain_rounds": len(plain),
        "covalent_rounds": len(cov),
        **{f"{mode}_{m}": _median(rows, m) for m in numeric_outputs(cov)
           for mode, rows in (("plain", plain), ("covalent", cov))},
        "same_output": len(plain) > 0 and len(digests) == 1,
        # Each mode agrees with itself from round to round; if not, values can't be compared.
        "deterministic": len(plain_digests) <= 1
        and cov["output_digest"].astype(str).nunique() <= 1,
        "tasks_probed": " ".join(sorted(set(cov.get("tasks_probed", pd.Series(dtype=str))
                                            .dropna().astype(str)))),
        "plain_threads": "/".join(plain_threads),
        "covalent_threads": "/".join(cov_threads),
        # A pair that ran otherwise (other thread counts, devices) measures that, not Covalent.
        "comparable": all(_facts(plain, f) == _facts(cov, f) for f in run_facts(cov)),
        "plain_in_task_s": _median(plain, "in_task_s"),
        "covalent_in_task_s": _median(cov, "in_task_s"),
        **{f"{mode}_{col}": _median(rows, col) for col in TASK_WORK.values()
           for mode, rows in (("plain", plain), ("covalent", cov))},
        "covalent_task_env": " | ".join(sorted(set(cov.get("task_env", pd.Series()).dropna())
                                               - {""})),
        "server_median_s": _median(cov, "server_s"),
        "stock_wall_median_s": _median(cov, "stock_wall_s"),
        "plain_server_cpu_s": _median(plain, "server_cpu_s"),
        "covalent_server_cpu_s": _median(cov, "server_cpu_s"),
        "session_id": cov["session_id"].max(),
        "bytes_moved_median": _median(cov, "bytes_moved"),
        "dispatches": int(cov["dispatches"].sum()) if "dispatches" in cov else len(cov),
        "dispatches_ok": int(cov["dispatches_ok"].sum()) if "dispatches_ok" in cov else len(cov),
        "plain_latency_p50_s": _median(plain, "latency_p50_s"),
        "covalent_latency_p50_s": _median(cov, "latency_p50_s"),
        "covalent_latency_p95_s": _median(cov, "latency_p95_s"),
        "covalent_latency_max_s": _median(cov, "latency_max_s"),
    }
    n = int(first.get("concurrency") or 1)
    row["plain_per_min"] = 60 * n / plain_s if plain_s else float("nan")
    row["covalent_per_min"] = 60 * n / cov_s if cov_s else float("nan")
    for part in ORCHESTRATION_PARTS:
        row[f"{part.removesuffix('_s')}_median_s"] = _median(cov, part)
    pairs = paired_rounds(plain, cov)
    for estimator in ESTIMATORS:
        if estimator in pairs:
            row[estimator], row[f"{estimator}_ci_low"], row[f"{estimator}_ci_high"] = median_ci(
                pairs[estimator])
    if "unexplained_s" in pairs:
        row["unexplained_s"] = pairs["unexplained_s"].median()
        total = pairs["total_overhead_s"].median()
        if total:
            row["explained_pct"] = 100 * (1 - abs(row["unexplained_s"]) / abs(total))
    return row


# What the probes cost: probed run - bare run of the same round, per mode (bench.run.probes
# says what a probe does). Columns of runs.csv compared, by mode.
PROBE_COST_METRICS = {"plain": ("wall_s",), "covalent": ("wall_s", "submit_s", "server_s")}
PROBE_COST_COLUMNS = ("config_id", "executor", "metric", "rounds", "probed_median_s",
                      "bare_median_s", "cost_s", "cost_ci_low", "cost_ci_high", "cost_pct",
                      "p_value", "significant")


def probe_cost(runs: pd.DataFrame) -> pd.DataFrame:
    """Per configuration, mode and metric: the paired difference probed - bare over the
    rounds that ran both, its median, 95 % CI and the Wilcoxon signed-rank p (two-sided).
    Empty unless a profile ran with probes = "compare"."""
    if not bare(runs).any():
        return pd.DataFrame(columns=list(PROBE_COST_COLUMNS))
    runs = runs[~profiled(runs)]
    return _paired_cost(runs, bare(runs), PROBE_COST_METRICS)


# What sampling the stacks costs (--bench-stacks): profiled run - unprofiled run of the same
# round, the same columns as the probes' cost ("probed" = profiled, "bare" = unprofiled).
STACKS_COST_METRICS = {"plain": ("wall_s",), "covalent": ("wall_s", "submit_s", "server_s")}


def stacks_cost(runs: pd.DataFrame) -> pd.DataFrame:
    """Per configuration, mode (and environment) and metric: profiled − unprofiled run of the
    same round, median, 95 % CI, Wilcoxon p. Empty without profiled rounds."""
    marked = profiled(runs)
    if not marked.any():
        return pd.DataFrame(columns=list(PROBE_COST_COLUMNS))
    keep = ~bare(runs)
    return _paired_cost(runs[keep], ~marked[keep], STACKS_COST_METRICS)


def _paired_cost(runs: pd.DataFrame, untreated: pd.Series,
                 metrics: dict[str, tuple[str, ...]]) -> pd.DataFrame:
    """The treated run (probed, profiled) minus the untreated one of the same round."""
    done = runs.assign(untreated=untreated)
    done = done[(done["status"] == "COMPLETED") & (~done["warmup"].astype(bool))
                & (done["concurrency"] <= 1)]
    if "environment" in done:
        # Named by environment once (records.load_runs may have done it already).
        done = done.assign(executor=[
            f"{env}:{ex}" if isinstance(env, str) and env and not str(ex).startswith(f"{env}:")
            else ex for env, ex in zip(done["environment"], done["executor"], strict=True)])
    rows = []
    for (config_id, mode, executor), group in done.groupby(
            ["config_id", "mode", "executor"], sort=False):
        treated = group[~group["untreated"]].groupby("round").first()
        plain = group[group["untreated"]].groupby("round").first()
        both = treated.index.intersection(plain.index)
        for metric in metrics.get(mode, ()):
            if metric not in group or len(both) == 0:
                continue
            a = pd.to_numeric(treated.loc[both, metric], errors="coerce")
            b = pd.to_numeric(plain.loc[both, metric], errors="coerce")
            diff = (a - b).dropna()
            if diff.empty:
                continue
            mid, low, high = median_ci(diff)
            p = float(stats.wilcoxon(diff).pvalue) if len(diff) >= 2 and diff.any() \
                else float("nan")
            rows.append({
                "config_id": config_id, "executor": executor or "plain", "metric": metric,
                "rounds": len(diff), "probed_median_s": a.median(), "bare_median_s": b.median(),
                "cost_s": mid, "cost_ci_low": low, "cost_ci_high": high,
                "cost_pct": 100 * mid / b.median() if b.median() else float("nan"),
                # Both: with few rounds a bootstrap CI can exclude 0 by luck of 3 signs.
                "p_value": p, "significant": bool((low > 0 or high < 0) and p < 0.05),
            })
    return pd.DataFrame(rows, columns=list(PROBE_COST_COLUMNS))


# Environments side by side: each against the reference (the first environment of the
# session), per executor and round: the paired difference of each overhead family and of
# each orchestration part, so a part that changed for a known reason shows as itself.
ENV_DIFF_METRICS = ("orchestration_s", "total_overhead_s", *ORCHESTRATION_PARTS)
ENV_DIFF_COLUMNS = ("config_id", "executor", "environment", "reference", "covalent",
                    "reference_covalent", "metric", "rounds", "median_s", "reference_median_s",
                    "diff_s", "diff_ci_low", "diff_ci_high", "p_value", "significant")


def environments_of(frame: pd.DataFrame) -> list[str]:
    """The Covalent environments a frame (runs or summary) names, the reference first (the
    order they first appear: the first round runs them in the profile's order)."""
    if "environment" not in frame:
        return []
    named = frame["environment"].fillna("").astype(str)
    return [e for e in dict.fromkeys(named) if e]


def environment_diffs(runs: pd.DataFrame, phases: pd.DataFrame | None) -> pd.DataFrame:
    """Every environment against the reference: for each configuration, executor and metric,
    the median over rounds of (environment − reference) in the same round with its 95 % CI,
    and the two-sided Mann–Whitney U p of the two samples. Empty without environments."""
    order = environments_of(runs)
    if not order:
        return pd.DataFrame(columns=list(ENV_DIFF_COLUMNS))
    done = with_breakdown(measured(as_batches(runs)), phases)
    cov = done[(done["mode"] == "covalent") & (done["environment"].fillna("") != "")]
    if "in_task_s" in cov:
        cov = cov.assign(orchestration_s=orchestration(cov["wall_s"], cov["in_task_s"]))
    plain = done[done["mode"] == "plain"].groupby(["config_id", "round"])["wall_s"].first()
    cov = cov.join(plain.rename("plain_wall_s"), on=["config_id", "round"])
    cov["total_overhead_s"] = total_overhead(cov["wall_s"], cov["plain_wall_s"])
    reference = order[0]
    rows = []
    for (config_id, base), group in cov.groupby(["config_id", "base_executor"], sort=False):
        ref = group[group["environment"] == reference].set_index("round")
        for env in order[1:]:
            mine = group[group["environment"] == env].set_index("round")
            both = ref.index.intersection(mine.index)
            for metric in ENV_DIFF_METRICS:
                if metric not in group or len(both) == 0:
                    continue
                a = pd.to_numeric(mine.loc[both, metric], errors="coerce").dropna()
                b = pd.to_numeric(ref.loc[both, metric], errors="coerce").dropna()
                diff = (a - b).dropna()
                if diff.empty:
                    continue
                mid, low, high = median_ci(diff)
                p = float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue) \
                    if len(a) >= 2 and len(b) >= 2 else float("nan")
                rows.append({
                    "config_id": config_id, "executor": base, "environment": env,
                    "reference": reference, "covalent": mine["covalent"].iloc[0]
                    if "covalent" in mine else "", "reference_covalent": ref["covalent"].iloc[0]
                    if "covalent" in ref else "", "metric": metric, "rounds": len(diff),
                    "median_s": a.median(), "reference_median_s": b.median(), "diff_s": mid,
                    "diff_ci_low": low, "diff_ci_high": high, "p_value": p,
                    "significant": bool(p < 0.05 and (low > 0 or high < 0)),
                })
    return pd.DataFrame(rows, columns=list(ENV_DIFF_COLUMNS))
