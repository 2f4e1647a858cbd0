"""Covalent under load: N dispatches in flight at once (a profile's `concurrency` sweep,
`load` among the built-in profiles), what the server sustains and where it turns.

`load_table` gives, per configuration family (everything but the concurrency), executor and
environment, and per level N: dispatches, the ones that completed, the errors by kind,
throughput (completed dispatches, and tasks, per second of batch wall time), and latency
(batch start to a run's result in hand) p50, p95 and max. `knee` names, per executor, the
first level where errors appear or doubling the dispatches in flight stops buying
throughput. Pure functions: no I/O.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from bench import records as R

COMPLETED = "COMPLETED"
# A level is past the knee when going up one level (x2 in the sweeps here) adds less than
# this to throughput: from there, more dispatches in flight only queue (latency grows with
# N, throughput does not).
SATURATION_GAIN = 0.10

# Errors by kind, from a failed run's status and error text: the first pattern that
# matches wins (what Covalent's tracker reports under load: HTTP 500s, "database is
# locked", "too many open files", dispatches that never come back).
ERROR_KINDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("database locked", re.compile(r"database is locked", re.I)),
    ("too many open files", re.compile(r"too many open files|EMFILE", re.I)),
    ("HTTP", re.compile(r"\b(?:HTTP(?:Error)?|status(?: code)?)\D{0,12}([45]\d\d)\b", re.I)),
    ("connection", re.compile(r"connection (?:refused|reset|aborted)|ConnectionError|"
                              r"RemoteDisconnected|Max retries exceeded", re.I)),
    ("lost dispatch", re.compile(r"not found|no such dispatch|lost|vanished", re.I)),
)

def ramp_stop(batches: list[tuple[int, int, int, float]],
              gain: float = SATURATION_GAIN) -> str | None:
    """Why a concurrency ramp should not go higher, or None. `batches`: the measured batches
    so far of one configuration and mode, as (in flight, runs completed, runs, batch wall s).
    It stops at the first level with a failed run (errors appear), and once two successive
    doublings each bought less than `gain` more throughput (the knee, confirmed one level
    on), so that a ramp can list levels far past any knee and pay only for the ones that
    tell something."""
    failed = sorted((n, n - ok) for n, ok, total, _ in batches if ok < total)
    if failed:
        level, lost = failed[0]
        return f"errors at {level} in flight ({lost} run(s) of a batch did not complete)"
    per_level: dict[int, list[float]] = {}
    for n, ok, _, wall in batches:
        if wall > 0:
            per_level.setdefault(n, []).append(ok / wall)
    levels = sorted(per_level)
    rates = [float(np.median(per_level[n])) for n in levels]
    if len(levels) >= 3 and all(rates[i] < rates[i - 1] * (1 + gain) for i in (-1, -2)):
        shown = " -> ".join(f"{r:.2f}" for r in rates[-3:])
        return (f"past the knee: {shown} dispatches/s at {', '.join(map(str, levels[-3:]))} "
                f"in flight")
    return None


TIMEOUT_KIND = "timeout"
OTHER_KIND = "other"


def error_kind(status: str, error: str | float | None) -> str | None:
    """The kind of a run's failure ("HTTP 500", "database locked", "timeout" ...), None for
    a completed run."""
    if status == COMPLETED:
        return None
    if status == R.TIMEOUT:
        return TIMEOUT_KIND
    text = error if isinstance(error, str) else ""
    for kind, pattern in ERROR_KINDS:
        found = pattern.search(text)
        if found:
            return f"HTTP {found.group(1)}" if kind == "HTTP" else kind
    return OTHER_KIND if status != R.INTERRUPTED else "interrupted"


def _family(config_id: str) -> str:
    """A configuration without its concurrency suffix (`-n8`, bench.config.profiles)."""
    return re.sub(r"-n\d+$", "", str(config_id))


def _tasks(tasks_probed: object) -> float:
    """Tasks per dispatch from runs.csv's "probed/ran" (nan when unknown)."""
    found = re.fullmatch(r"\s*\d+\s*/\s*(\d+)\s*", str(tasks_probed))
    return float(found.group(1)) if found else float("nan")


def load_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per family, executor, environment and concurrency, over the measured Covalent runs:
    rounds, dispatches, completed, errors (total) and one column per kind seen
    (`errors: <kind>`), dispatches_per_s and tasks_per_s (completed per second of batch
    wall, all rounds pooled), latency_p50_s / p95 / max (completed runs' latency_s), and
    batch_wall_median_s. Empty without Covalent runs."""
    cov = runs[(runs["mode"] == "covalent") & ~runs["warmup"].astype(bool)]
    if cov.empty:
        return pd.DataFrame()
    cov = cov.assign(family=[_family(c) for c in cov["config_id"]],
                     environment=cov["environment"].fillna("").astype(str),
                     kind=[error_kind(s, e) for s, e in zip(cov["status"], cov["error"],
                                                            strict=True)],
                     tasks=[_tasks(t) for t in cov["tasks_probed"]])
    rows = []
    keys = ["family", "executor", "environment", "concurrency"]
    for (family, executor, environment, n), level in cov.groupby(keys, sort=True):
        batches = level.groupby(["session_id", "round"])["batch_wall_s"].first()
        ok = level[level["kind"].isna()]
        wall = float(pd.to_numeric(batches, errors="coerce").sum())
        tasks = float(ok["tasks"].median()) if ok["tasks"].notna().any() else float("nan")
        lat = pd.to_numeric(ok["latency_s"], errors="coerce").dropna()
        row = {"family": family, "executor": executor, "environment": environment,
               "concurrency": int(n), "rounds": len(batches), "dispatches": len(level),
               "completed": len(ok), "errors": len(level) - len(ok),
               "dispatches_per_s": len(ok) / wall if wall > 0 else float("nan"),
               "tasks_per_s": len(ok) * tasks / wall if wall > 0 else float("nan"),
               "latency_p50_s": float(lat.median()) if len(lat) else float("nan"),
               "latency_p95_s": float(lat.quantile(0.95)) if len(lat) else float("nan"),
               "latency_max_s": float(lat.max()) if len(lat) else float("nan"),
               "batch_wall_median_s": float(pd.to_numeric(batches, errors="coerce").median())}
        for kind, count in level["kind"].dropna().value_counts().items():
            row[f"errors: {kind}"] = int(count)
        rows.append(row)
    out = pd.DataFrame(rows)
    kinds = sorted(c for c in out.columns if c.startswith("errors: "))
    out[kinds] = out[kinds].fillna(0).astype(int)
    return out


def knee(table: pd.DataFrame, gain: float = SATURATION_GAIN) -> pd.DataFrame:
    """Per family, executor and environment: the knee of its sweep. Rows: knee (the first
    level where errors appear, or whose throughput is less than (1 + gain) x the level
    below's while no level above it beats the best so far by (1 + gain); NaN: none up to the
    top level), why ("errors" | "saturated" | ""), top (the
    highest level run), best_dispatches_per_s and the level it came at, and the
    throughput and p95 latency just below and at the knee."""
    rows = []
    for (family, executor, environment), sweep in table.groupby(
            ["family", "executor", "environment"], sort=False):
        sweep = sweep.sort_values("concurrency").reset_index(drop=True)
        at, why = None, ""
        rates = sweep["dispatches_per_s"]
        for i, level in sweep.iterrows():
            if level["errors"] > 0:
                at, why = i, "errors"
                break
            # A flat step is the knee only if no level above it buys more again: one noisy
            # batch (0.51 -> 0.49 -> 0.83 dispatches/s at 1, 2, 4) is not a saturation.
            if (i and level["dispatches_per_s"] < (1 + gain) * rates[i - 1]
                    and not (rates[i + 1:] >= (1 + gain) * rates[:i + 1].max()).any()):
                at, why = i, "saturated"
                break
        best = sweep.loc[sweep["dispatches_per_s"].idxmax()] if sweep[
            "dispatches_per_s"].notna().any() else sweep.iloc[-1]
        row = {"family": family, "executor": executor, "environment": environment,
               "knee": float(sweep.loc[at, "concurrency"]) if at is not None else np.nan,
               "why": why, "top": int(sweep["concurrency"].max()),
               "best_dispatches_per_s": float(best["dispatches_per_s"]),
               "best_at": int(best["concurrency"])}
        if at is not None:
            below = sweep.loc[max(at - 1, 0)]
            row.update(below_dispatches_per_s=float(below["dispatches_per_s"]),
                       knee_dispatches_per_s=float(sweep.loc[at, "dispatches_per_s"]),
                       below_p95_s=float(below["latency_p95_s"]),
                       knee_p95_s=float(sweep.loc[at, "latency_p95_s"]),
                       below=int(below["concurrency"]))
        rows.append(row)
    return pd.DataFrame(rows)


def knee_sentence(row: pd.Series) -> str:
    """One line per sweep: "`local`: knee at 8 in flight (1.9 -> 2.0 dispatches/s, p95
    latency 4.1 -> 8.0 s)", "... errors from 16 in flight ...", or "no knee up to 16"."""
    who = f"`{row['executor']}`"  # runs.csv as loaded: "ENV:EXECUTOR" side by side
    if pd.isna(row["knee"]):
        return (f"{who}: no knee up to {row['top']} in flight (best "
                f"{row['best_dispatches_per_s']:.2f} dispatches/s at {row['best_at']})")
    k = int(row["knee"])
    if row["why"] == "errors":
        return (f"{who}: errors from {k} in flight (best {row['best_dispatches_per_s']:.2f} "
                f"dispatches/s at {row['best_at']})")
    return (f"{who}: knee at {k} in flight: {row['below_dispatches_per_s']:.2f} → "
            f"{row['knee_dispatches_per_s']:.2f} dispatches/s from {row['below']}, p95 "
            f"latency {row['below_p95_s']:.1f} → {row['knee_p95_s']:.1f} s")
