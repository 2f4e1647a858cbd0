"""`python -m bench.gate`: did Covalent's overhead get significantly worse than the baseline?

Compares, per configuration and executor, two overhead families of the latest benchmark
session in --in with the baseline kept in the repo (reports/baseline/):
  * orchestration_s: Covalent wall - the tasks' own time under Covalent (compute-corrected,
    the precise one; only compared when the environment matches the baseline's). Scaled by
    the machine's speed in the session (baseline plain median / new plain median) first:
    orchestration is CPU work, so a machine that runs the plain workflow 20 % slower runs it
    slower too, and a shared CI machine has slow days. A slower Covalent does not slow the
    plain runs, so a real regression still shows;
  * total_overhead_pct: 100 * (Covalent wall / plain wall - 1), machine-independent.
A metric regresses only when it is significantly worse (one-sided Mann-Whitney U p < alpha,
or the 95 % CIs do not overlap) AND its median is worse than the baseline's by more than a
threshold (default 25 %). Every run appends its verdicts to <in>/history.csv.

`python -m bench.gate --refresh-baseline` deliberately replaces the baseline with the
latest session's rounds and environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import pandas as pd

from bench.analysis.decompose import round_estimates
from bench.analysis.gate import METRICS, Verdict, judge, speed_scale
from bench.records import ENV_COLUMNS, CsvAppender, NoRecordsError, load_phases, load_runs, utc_now

# A different one of these makes absolute seconds incomparable (relative overhead stays).
ENV_KEYS = ("covalent", "torch", "python", "cpu_count")
BASELINE_DIR = Path("reports/baseline")
ROUNDS_CSV, ENV_JSON, HISTORY_CSV = "rounds.csv", "environment.json", "history.csv"
HISTORY_COLUMNS = (
    "date", "session_id", "config_id", "executor", "metric", "new_median", "new_ci_low",
    "new_ci_high", "baseline_median", "change_pct", "threshold_pct", "p_value", "verdict",
    "speed_scale", *ENV_COLUMNS,
)


def latest_session(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["session_id"] == runs["session_id"].max()]


def environment_of(runs: pd.DataFrame) -> dict[str, str]:
    last = runs.sort_values("timestamp").iloc[-1]
    return {k: str(last[k]) for k in ENV_COLUMNS}


def _thresholds(default: float, overrides: list[str]) -> dict[str, float]:
    out = dict.fromkeys(METRICS, default)
    for item in overrides:
        metric, sep, value = item.partition("=")
        if not sep or metric not in METRICS:
            raise SystemExit(f"--threshold-for expects METRIC=PERCENT with METRIC in "
                             f"{', '.join(METRICS)}; got {item!r}")
        out[metric] = float(value)
    return out


def refresh_baseline(in_dir: Path, baseline: Path) -> Path:
    runs = latest_session(load_runs(in_dir))
    rounds = round_estimates(runs, load_phases(in_dir))
    if rounds.empty:
        raise NoRecordsError(f"{in_dir}: no measured plain + Covalent rounds to take as baseline")
    baseline.mkdir(parents=True, exist_ok=True)
    rounds.to_csv(baseline / ROUNDS_CSV, index=False, float_format="%.5f")
    env = {**environment_of(runs), "session_id": str(runs["session_id"].iloc[0]),
           "profile": str(runs["profile"].iloc[0]), "taken": utc_now()}
    (baseline / ENV_JSON).write_text(json.dumps(env, indent=2) + "\n")
    return baseline


def check(
    in_dir: Path, baseline: Path, thresholds: dict[str, float], alpha: float
) -> tuple[list[Verdict], list[str]]:
    """Verdicts for every comparable metric, and notes (environment, missing configs)."""
    if not (baseline / ROUNDS_CSV).is_file():
        raise NoRecordsError(
            f"no baseline at {baseline}. Take one deliberately with\n"
            f"  python -m bench.gate --refresh-baseline --in {in_dir} --baseline {baseline}"
        )
    runs = latest_session(load_runs(in_dir))
    new = round_estimates(runs, load_phases(in_dir))
    base = pd.read_csv(baseline / ROUNDS_CSV, dtype={"executor": str})
    base_env = json.loads((baseline / ENV_JSON).read_text())
    env = environment_of(runs)
    notes, metrics = [], list(METRICS)
    differs = {k: (base_env.get(k), env[k]) for k in ENV_KEYS if str(base_env.get(k)) != env[k]}
    if differs:
        metrics = ["total_overhead_pct"]
        notes.append("environment differs from the baseline's ("
                     + ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in differs.items())
                     + "): comparing relative overhead only")
    verdicts = []
    for (config_id, executor), group in new.groupby(["config_id", "executor"], sort=False):
        ref = base[(base["config_id"] == config_id) & (base["executor"] == executor)]
        if ref.empty:
            notes.append(f"{config_id} [{executor}] is not in the baseline: not judged")
            continue
        walls = {"plain_s": group["plain_wall_s"].median(),
                 "covalent_s": group["covalent_wall_s"].median()}
        for metric in metrics:
            scale = 1.0
            if metric == "orchestration_s" and "plain_wall_s" in ref:
                scale = speed_scale(group["plain_wall_s"], ref["plain_wall_s"])
            v = judge(group[metric] * scale, ref[metric], metric, thresholds[metric], alpha,
                      config_id, executor)
            verdicts.append(dataclasses.replace(v, **walls, speed_scale=scale))
    return verdicts, notes


def record_history(in_dir: Path, verdicts: list[Verdict], runs: pd.DataFrame) -> None:
    env, session = environment_of(runs), str(runs["session_id"].iloc[0])
    CsvAppender(in_dir / HISTORY_CSV, HISTORY_COLUMNS).append(*(
        {"date": utc_now(), "session_id": session, "config_id": v.config_id,
         "executor": v.executor, "metric": v.metric, "new_median": v.new[0],
         "new_ci_low": v.new[1], "new_ci_high": v.new[2], "baseline_median": v.baseline[0],
         "change_pct": round(v.change_pct, 2), "threshold_pct": v.threshold_pct,
         "p_value": round(v.p_value, 5), "verdict": v.verdict,
         "speed_scale": round(v.speed_scale, 4), **env}
        for v in verdicts
    ))


def table(verdicts: list[Verdict]) -> str:
    rows = [{
        "config": v.config_id, "executor": v.executor, "plain s": f"{v.plain_s:.2f}",
        "Covalent s": f"{v.covalent_s:.2f}", "metric": v.metric,
        "speed scale": f"x{v.speed_scale:.2f}",
        "new [95% CI]": f"{v.new[0]:.2f} [{v.new[1]:.2f}, {v.new[2]:.2f}]",
        "baseline": f"{v.baseline[0]:.2f}", "change": f"{v.change_pct:+.0f}%",
        "threshold": f"{v.threshold_pct:.0f}%", "p": f"{v.p_value:.3f}", "verdict": v.verdict,
    } for v in verdicts]
    return pd.DataFrame(rows).to_markdown(index=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--in", dest="in_dir", type=Path,
                        default=Path(os.environ.get("BENCH_OUT", "reports")))
    parser.add_argument("--baseline", type=Path, default=BASELINE_DIR)
    parser.add_argument("--threshold", type=float, default=25.0,
                        help="percent worse than the baseline that counts (default 25)")
    parser.add_argument("--threshold-for", action="append", default=[], metavar="METRIC=PCT",
                        help=f"per-metric threshold, METRIC in {', '.join(METRICS)}")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level")
    parser.add_argument("--refresh-baseline", action="store_true",
                        help="replace the baseline with the latest session (deliberate)")
    args = parser.parse_args(argv)
    try:
        if args.refresh_baseline:
            print(f"baseline written: {refresh_baseline(args.in_dir, args.baseline)}")
            return 0
        verdicts, notes = check(args.in_dir, args.baseline,
                                _thresholds(args.threshold, args.threshold_for), args.alpha)
        runs = latest_session(load_runs(args.in_dir))
    except NoRecordsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"note: {note}")
    if verdicts:
        text = table(verdicts)
        print(text)
        (args.in_dir / "gate.md").write_text(
            "## Covalent overhead vs baseline\n\n" + "".join(f"- {n}\n" for n in notes)
            + "\n" + text + "\n")
        record_history(args.in_dir, verdicts, runs)
    regressions = [v for v in verdicts if v.verdict == "regression"]
    for v in regressions:
        print(f"REGRESSION: {v.message()}", file=sys.stderr)
    if not verdicts:
        print("error: nothing comparable with the baseline", file=sys.stderr)
        return 2
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
