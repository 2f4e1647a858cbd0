"""`python -m bench.gate`: did Covalent's overhead get significantly worse than the baseline?

Compares, per configuration and executor, two overhead families of the latest benchmark
session in --in with the baseline kept in the repo (reports/baseline/):
  * orchestration_s: Covalent wall - the tasks' own time under Covalent (compute-corrected,
    the precise one; only compared when the environment matches the baseline's, and only
    with phases.csv, which holds the tasks' own time). Scaled by the machine's speed in the
    session (baseline plain median / new plain median) first, where the plain runs can carry
    that estimate: a median of at least 1 s on both sides and a 95 % bootstrap CI of the
    ratio narrower than 10 % of it; otherwise compared unscaled, and the table and the notes
    say why ("speed scale not applied: plain runs too short / too noisy");
  * total_overhead_pct: 100 * (Covalent wall / plain wall - 1), machine-independent.
A metric regresses only when it is significantly worse (one-sided Mann-Whitney U p < alpha,
or the 95 % CIs do not overlap) AND its median is worse than the baseline's by more than a
threshold (default 25 %). Every run appends its verdicts to <in>/history.csv.

`python -m bench.gate --refresh-baseline` deliberately replaces the baseline with the
latest session's rounds and environment. It refuses a session with failed measured runs
(FAILED, TIMEOUT, ERROR ...) unless --allow-failed-runs, which records how many failed.

The gate judges only what can be judged: at least MIN_ROUNDS (3) measured rounds on each
side per configuration and executor, and enough that the Mann-Whitney U test can reach
p < alpha against the baseline's count (3 against 3 cannot: p >= 0.05). Damaged lines of
the session's runs.csv / phases.csv (a crash mid-write) are dropped with a note; a damaged
baseline is refused, never half-read.

Exit codes:
  0  no regression
  1  regression: significantly AND materially worse than the baseline
  2  usage error, or nothing to judge: no run records, no baseline, nothing comparable
  3  cannot judge, bad input: a damaged or too small baseline (rounds.csv cut off or
     missing columns, environment.json not JSON or missing keys), records missing columns
     or too damaged to judge, too few measured rounds for the test; with --refresh-baseline,
     a session with failed runs or without phases.csv
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

import pandas as pd

from bench.analysis.decompose import environments_of, round_estimates
from bench.analysis.gate import (
    METRICS,
    MIN_ROUNDS,
    TooFewRoundsError,
    Verdict,
    judge,
    rounds_needed,
    rounds_problem,
    speed_scale,
)
from bench.records import (
    ENV_COLUMNS,
    CsvAppender,
    NoRecordsError,
    RecordsSchemaError,
    SchemaMismatchError,
    damage,
    dropped_note,
    load_phases,
    load_runs,
    missing_note,
    read_checked,
    utc_now,
)

# A different one of these makes absolute seconds incomparable (relative overhead stays).
ENV_KEYS = ("covalent", "torch", "python", "cpu_count")
BASELINE_DIR = Path("reports/baseline")
ROUNDS_CSV, ENV_JSON, HISTORY_CSV = "rounds.csv", "environment.json", "history.csv"
HISTORY_COLUMNS = (
    "date", "session_id", "config_id", "executor", "metric", "new_median", "new_ci_low",
    "new_ci_high", "baseline_median", "change_pct", "threshold_pct", "p_value", "verdict",
    "speed_scale", *ENV_COLUMNS,
)
EXIT_OK, EXIT_REGRESSION, EXIT_NO_INPUT, EXIT_CANNOT_JUDGE = 0, 1, 2, 3
# Columns of the baseline's rounds.csv: what the gate needs, and what must hold numbers.
BASELINE_NEEDED = ("config_id", "executor", *METRICS)
BASELINE_NUMBERS = ("round", "plain_wall_s", "covalent_wall_s", "total_overhead_s",
                    "orchestration_pct", "compute_inflation_s", "unexplained_s", *METRICS)


class CannotJudgeError(Exception):
    """Input the gate will not judge from (exit 3): a damaged or too small baseline, records
    missing columns, too few measured rounds."""


@dataclasses.dataclass
class Session:
    """The latest session of --in, and what reading it had to say."""

    runs: pd.DataFrame
    phases: pd.DataFrame | None
    notes: list[str]
    damaged: int = 0  # damaged lines dropped from its runs.csv and phases.csv


def latest_session(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["session_id"] == runs["session_id"].max()]


def read_session(in_dir: Path) -> Session:
    """The latest session; damaged lines dropped become notes (the gate's own output, so
    the records reader's log line is held back), a file missing columns CannotJudgeError."""
    records_log = logging.getLogger("bench.records")
    level = records_log.level
    records_log.setLevel(logging.ERROR)
    try:
        runs, phases = load_runs(in_dir), load_phases(in_dir)
    except RecordsSchemaError as exc:
        raise CannotJudgeError(str(exc)) from exc
    finally:
        records_log.setLevel(level)
    notes = [note for frame in (runs, phases) if frame is not None
             for note in (dropped_note(frame), missing_note(frame)) if note]
    damaged = sum(len(frame.attrs.get("dropped", [])) for frame in (runs, phases)
                  if frame is not None)
    if runs.empty:
        raise NoRecordsError(f"{in_dir}: runs.csv holds no readable run"
                             + "".join(f"; {note}" for note in notes))
    return Session(latest_session(runs), phases, notes, damaged)


def _damage_said(session: Session) -> str:
    """' (after dropping N damaged lines of its records)', when the session had some."""
    n = session.damaged
    return f" (after dropping {n} damaged line{'s' * (n > 1)} of its records)" if n else ""


def judgeable_metrics(rounds: pd.DataFrame, session: Session) -> tuple[list[str], list[str]]:
    """The METRICS the session's rounds hold, and a note for each one they cannot: without
    phases.csv (or its in-task rows) there is no orchestration_s, only total_overhead_pct."""
    metrics = [m for m in METRICS if m in rounds and rounds[m].notna().any()]
    notes = []
    if "orchestration_s" not in metrics:
        why = ("phases.csv is missing" if session.phases is None else
               "phases.csv holds no in-task times of these runs")
        notes.append(f"orchestration_s not judged: {why} (the tasks' own time comes from "
                     f"it); judging {', '.join(metrics) or 'nothing'} only")
    return metrics, notes


def machine_of(runs: pd.DataFrame) -> dict[str, str]:
    """What the session ran on (its last row's ENV_COLUMNS: Python, Covalent, torch, CPUs);
    "environment" means a Covalent environment ([[environments]]), never this."""
    last = runs.sort_values("timestamp").iloc[-1]
    return {k: str(last[k]) if k in last else "" for k in ENV_COLUMNS}


def _thresholds(default: float, overrides: list[str]) -> dict[str, float]:
    out = dict.fromkeys(METRICS, default)
    for item in overrides:
        metric, sep, value = item.partition("=")
        try:
            if not sep or metric not in METRICS:
                raise ValueError
            out[metric] = float(value)
        except ValueError:
            raise ValueError(f"--threshold-for expects METRIC=PERCENT with METRIC in "
                             f"{', '.join(METRICS)}; got {item!r}") from None
    return out


def _groups(rounds: pd.DataFrame):
    return rounds.groupby(["config_id", "executor"], sort=False)


def _small_groups(rounds: pd.DataFrame) -> list[str]:
    """'config [executor] has n rounds, ...' for each group with fewer than MIN_ROUNDS."""
    return [f"{config_id} [{executor}] has {len(group)} round{'s' * (len(group) != 1)}, fewer "
            f"than the {MIN_ROUNDS} the gate needs" for (config_id, executor), group
            in _groups(rounds) if len(group) < MIN_ROUNDS]


def _unjudgeable(new: pd.DataFrame, base: pd.DataFrame, metrics: list[str],
                 alpha: float, against: str = "baseline") -> list[str]:
    """'config [executor]: why' for each group of the session whose rounds (with a value of
    every metric judged) are too few to judge against the baseline's (rounds_problem)."""
    out = []
    for (config_id, executor), group in _groups(new):
        ref = base[(base["config_id"] == config_id) & (base["executor"] == executor)]
        if ref.empty:
            continue
        problem = rounds_problem(int(group[metrics].notna().all(axis=1).sum()),
                                 int(ref[metrics].notna().all(axis=1).sum()), alpha, against)
        if problem:
            out.append(f"{config_id} [{executor}]: {problem}")
    return out


def failed_runs(runs: pd.DataFrame) -> tuple[int, int, str]:
    """(failed, measured, 'what failed') over the measured (non-warm-up) runs of a session."""
    done = runs[~runs["warmup"].astype(bool)]
    bad = done[done["status"].fillna("") != "COMPLETED"]
    what = "; ".join(
        f"{len(group)} of {int(((done['mode'] == mode) & (done['executor'] == executor)).sum())}"
        f" {mode}{f' [{executor}]' if executor else ''} runs failed ("
        + ", ".join(f"{status or 'no status'} x{n}" for status, n in
                    group["status"].fillna("").value_counts().items()) + ")"
        for (mode, executor), group in bad.groupby(["mode", "executor"], sort=False))
    return len(bad), len(done), what


def refresh_baseline(in_dir: Path, baseline: Path, alpha: float = 0.05,
                     allow_failed: bool = False) -> tuple[Path, list[str]]:
    """Replace the baseline with the latest session's rounds. Refuses (CannotJudgeError) a
    session with failed measured runs unless `allow_failed`, which records how many."""
    session = read_session(in_dir)
    runs, notes = session.runs, list(session.notes)
    failed, measured_runs, what = failed_runs(runs)
    if failed and not allow_failed:
        raise CannotJudgeError(
            f"will not take a baseline from a session with failed runs: {what}, of "
            f"{measured_runs} measured runs; rerun the benchmark, or take it anyway with "
            f"--allow-failed-runs (the baseline records how many failed)")
    if failed:
        notes.append(f"WARNING: baseline taken from a session with failed runs: {what}, of "
                     f"{measured_runs} measured runs, as --allow-failed-runs asked; recorded "
                     f"in {ENV_JSON}")
    rounds = round_estimates(runs, session.phases)
    if rounds.empty:
        raise NoRecordsError(f"{in_dir}: no measured plain + Covalent rounds to take as baseline")
    metrics, _ = judgeable_metrics(rounds, session)
    if "orchestration_s" not in metrics:
        why = ("phases.csv is missing" if session.phases is None else
               "phases.csv holds no in-task times of these runs")
        raise CannotJudgeError(f"will not take a baseline without orchestration_s: {in_dir}: "
                               f"{why}; rerun the benchmark with its phases.csv kept")
    short = _small_groups(rounds)
    if short:
        raise CannotJudgeError(f"will not take a baseline the gate cannot judge against: "
                               f"{'; '.join(short)}; run at least {MIN_ROUNDS} measured "
                               f"rounds (--bench-set rounds=N; the smoke profile runs 5)")
    for (config_id, executor), group in _groups(rounds):
        if (need := rounds_needed(len(group), alpha)) > len(group):
            notes.append(f"{config_id} [{executor}]: against {len(group)} baseline rounds "
                         f"a session needs {need} to be judged at alpha {alpha:g}")
    baseline.mkdir(parents=True, exist_ok=True)
    rounds.to_csv(baseline / ROUNDS_CSV, index=False, float_format="%.5f")
    env = {**machine_of(runs), "session_id": str(runs["session_id"].iloc[0]),
           "profile": str(runs["profile"].iloc[0]), "taken": utc_now(),
           "measured_runs": measured_runs, "failed_runs": failed}
    (baseline / ENV_JSON).write_text(json.dumps(env, indent=2) + "\n")
    return baseline, notes


def load_baseline(baseline: Path, in_dir: Path) -> tuple[pd.DataFrame, dict]:
    """The baseline's rounds and environment, whole, or CannotJudgeError saying what is wrong."""
    rounds_path, env_path = baseline / ROUNDS_CSV, baseline / ENV_JSON
    if not rounds_path.is_file():
        raise NoRecordsError(
            f"no baseline at {baseline}. Take one deliberately with\n"
            f"  python -m bench.gate --refresh-baseline --in {in_dir} --baseline {baseline}"
        )
    fix = (f"restore it (git checkout -- {baseline}) or take a new one (python -m bench.gate "
           f"--refresh-baseline --in {in_dir} --baseline {baseline})")
    try:
        rounds = read_checked(rounds_path, BASELINE_NEEDED, numbers=BASELINE_NUMBERS,
                              dtype={"config_id": str, "executor": str}, advice=fix,
                              warn=False)
    except RecordsSchemaError as exc:
        raise CannotJudgeError(f"damaged baseline: {exc}") from exc
    dropped = rounds.attrs["dropped"]
    if dropped:
        raise CannotJudgeError(f"damaged baseline: {rounds_path} has {len(dropped)} bad "
                               f"line{'s' * (len(dropped) > 1)} ({damage(dropped)}); {fix}")
    if rounds.empty:
        raise CannotJudgeError(f"damaged baseline: {rounds_path} holds no rounds; {fix}")
    rounds["executor"] = rounds["executor"].fillna("")
    short = _small_groups(rounds)
    if short:
        raise CannotJudgeError(f"baseline too small: {rounds_path}: {'; '.join(short)} per "
                               f"configuration and executor (cut off?); {fix}")
    if not env_path.is_file():
        raise CannotJudgeError(f"damaged baseline: {baseline} has {ROUNDS_CSV} but no "
                               f"{ENV_JSON}; {fix}")
    try:
        env = json.loads(env_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CannotJudgeError(f"damaged baseline: {env_path} is not valid JSON ({exc}); "
                               f"{fix}") from exc
    if not isinstance(env, dict):
        raise CannotJudgeError(f"damaged baseline: {env_path} is not a JSON object; {fix}")
    missing = [k for k in ENV_KEYS if k not in env]
    if missing:
        raise CannotJudgeError(f"damaged baseline: {env_path} lacks keys: "
                               f"{', '.join(missing)}; {fix}")
    return rounds, env


def check(
    session: Session, base: pd.DataFrame, base_env: dict, thresholds: dict[str, float],
    alpha: float,
) -> tuple[list[Verdict], list[str]]:
    """Verdicts for every comparable metric, and notes (environment, missing configs).
    CannotJudgeError if a configuration has too few rounds to judge."""
    runs = session.runs
    new = round_estimates(runs, session.phases)
    env = machine_of(runs)
    notes = list(session.notes)
    if base_env.get("failed_runs"):
        notes.append(f"the baseline was taken with {base_env['failed_runs']} of "
                     f"{base_env.get('measured_runs', '?')} measured runs failed "
                     f"(--allow-failed-runs)")
    if new.empty:
        if session.damaged:
            raise CannotJudgeError(f"the session's records are too damaged to judge: no "
                                   f"measured plain + Covalent round left{_damage_said(session)}")
        return [], notes
    metrics, missing = judgeable_metrics(new, session)
    notes += missing
    differs = {k: (base_env.get(k), env[k]) for k in ENV_KEYS if str(base_env.get(k)) != env[k]}
    if differs and "orchestration_s" in metrics:
        metrics.remove("orchestration_s")
        notes.append("environment differs from the baseline's ("
                     + ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in differs.items())
                     + "): comparing relative overhead only")
    if not metrics:
        raise CannotJudgeError(f"no overhead metric to judge{_damage_said(session)}")
    short = _unjudgeable(new, base, metrics, alpha)
    if short:
        raise CannotJudgeError(f"too few rounds: {'; '.join(short)}{_damage_said(session)}")
    verdicts = []
    for (config_id, executor), group in new.groupby(["config_id", "executor"], sort=False):
        ref = base[(base["config_id"] == config_id) & (base["executor"] == executor)]
        if ref.empty:
            notes.append(f"{config_id} [{executor}] is not in the baseline: not judged")
            continue
        walls = {"plain_s": group["plain_wall_s"].median(),
                 "covalent_s": group["covalent_wall_s"].median()}
        scale = speed_scale(group["plain_wall_s"], ref["plain_wall_s"]
                            if "plain_wall_s" in ref else pd.Series(dtype=float))
        if "orchestration_s" in metrics and not scale.applied:
            notes.append(f"{config_id} [{executor}]: {scale.note()}; orchestration compared "
                         f"unscaled")
        for metric in metrics:
            factor = scale.value if metric == "orchestration_s" else 1.0
            try:
                v = judge(group[metric] * factor, ref[metric], metric, thresholds[metric],
                          alpha, config_id, executor)
            except TooFewRoundsError as exc:  # _unjudgeable() caught these: a safety net
                raise CannotJudgeError(f"too few rounds: {exc}") from exc
            verdicts.append(dataclasses.replace(
                v, **walls, speed_scale=factor,
                scale_note="" if metric != "orchestration_s" or scale.applied else scale.reason))
    if not verdicts and session.damaged:
        raise CannotJudgeError(f"the session's records are too damaged to judge: nothing "
                               f"comparable with the baseline{_damage_said(session)}")
    return verdicts, notes


def same_session(session: Session, thresholds: dict[str, float], alpha: float
                 ) -> tuple[list[Verdict], list[str]]:
    """Like with like: every environment against the reference environment of the same
    session, round by round on the same machine in the same hour (no baseline, no speed
    scale). Each metric is judged as against a baseline (judge): significantly worse
    (one-sided Mann-Whitney U) and worse by more than the threshold."""
    runs, notes = session.runs, list(session.notes)
    envs = environments_of(runs)
    rounds = round_estimates(runs, session.phases)
    if rounds.empty:
        if session.damaged:
            raise CannotJudgeError(f"the session's records are too damaged to judge: no "
                                   f"measured plain + Covalent round left{_damage_said(session)}")
        return [], notes
    metrics, missing = judgeable_metrics(rounds, session)
    notes += missing
    if not metrics:
        raise CannotJudgeError(f"no overhead metric to judge{_damage_said(session)}")
    notes.append(f"same-session comparison: {', '.join(envs[1:])} against the reference "
                 f"environment {envs[0]}, interleaved in session "
                 f"{runs['session_id'].iloc[0]}")
    rounds = rounds.assign(environment=rounds["executor"].str.split(":", n=1).str[0],
                           base=rounds["executor"].str.split(":", n=1).str[-1])
    by_base = rounds.assign(executor=rounds["base"])  # each environment meets the reference
    ref_rounds = by_base[by_base["environment"] == envs[0]]  # on the same executor
    short = [f"{env}: {line}" for env in envs[1:] for line in _unjudgeable(
        by_base[by_base["environment"] == env], ref_rounds, metrics, alpha, "reference")]
    if short:
        raise CannotJudgeError(f"too few rounds: {'; '.join(short)}{_damage_said(session)}")
    verdicts = []
    for (config_id, base), group in rounds.groupby(["config_id", "base"], sort=False):
        ref = group[group["environment"] == envs[0]]
        for env in envs[1:]:
            mine = group[group["environment"] == env]
            if mine.empty or ref.empty:
                notes.append(f"{config_id} [{base}]: no rounds of {env if mine.empty else envs[0]}")
                continue
            walls = {"plain_s": mine["plain_wall_s"].median(),
                     "covalent_s": mine["covalent_wall_s"].median()}
            for metric in metrics:
                v = judge(mine[metric], ref[metric], metric, thresholds[metric], alpha,
                          config_id, f"{env}:{base} vs {envs[0]}")
                verdicts.append(dataclasses.replace(v, **walls, against="reference"))
    return verdicts, notes


# History: change points in each series of history.csv (ruptures' PELT over the medians of
# successive gate runs). A fresh step up (in the last FRESH_RUNS runs, by more than the
# metric's threshold) fails the gate: a regression that crept in over several commits, each
# too small to fail on its own, shows there.
MIN_HISTORY = 6
FRESH_RUNS = 3


def history_shifts(history: pd.DataFrame, thresholds: dict[str, float]
                   ) -> tuple[list[str], list[str]]:
    """(notes on every change point, messages for the fresh upward ones)."""
    import numpy as np
    import ruptures

    notes, fresh = [], []
    if history.empty:
        return notes, fresh
    for (config_id, executor, metric), series in history.groupby(
            ["config_id", "executor", "metric"], sort=False):
        values = pd.to_numeric(series["new_median"], errors="coerce").dropna().to_numpy()
        if len(values) < MIN_HISTORY or metric not in thresholds:
            continue
        # The noise, from successive differences (robust to the shifts themselves: a shift
        # is one large difference among many small ones), then a BIC-like penalty.
        steps = np.abs(np.diff(values))
        sigma = max(1.4826 * float(np.median(steps)) / np.sqrt(2), 1e-3 * float(
            np.median(np.abs(values))), 1e-9)
        breaks = ruptures.Pelt(model="l2", min_size=2, jump=1).fit(values.reshape(-1, 1)).predict(
            pen=2 * sigma**2 * np.log(len(values)))
        starts = [0, *breaks[:-1]]
        for before, at, after in zip(starts, breaks[:-1], breaks[1:], strict=False):
            old, new = values[before:at].mean(), values[at:after].mean()
            change = 100 * (new - old) / abs(old) if old else float("inf")
            when = series["date"].iloc[at] if "date" in series else str(at)
            notes.append(f"history: {config_id} [{executor}] {metric} shifted {change:+.0f} % "
                         f"({old:.3g} -> {new:.3g}) at run {at + 1} of {len(values)} ({when})")
            if change > thresholds[metric] and at >= len(values) - FRESH_RUNS:
                fresh.append(notes[-1])
    return notes, fresh


def regressed_cells(in_dir: Path) -> set[tuple[str, str, str]]:
    """(configuration, executor, metric) the latest gate run on `in_dir` called a regression
    (its history.csv)."""
    history = read_history(in_dir)
    if history.empty or "session_id" not in history:
        raise CannotJudgeError(f"--confirms {in_dir}: no gate verdicts there (history.csv); "
                               f"run `python -m bench.gate --in {in_dir}` first")
    last = history[history["session_id"] == history["session_id"].iloc[-1]]
    hit = last[last["verdict"] == "regression"]
    return {(str(r.config_id), str(r.executor), str(r.metric))
            for r in hit.itertuples(index=False)}


def read_history(in_dir: Path) -> pd.DataFrame:
    path = in_dir / HISTORY_CSV
    if not path.is_file():
        return pd.DataFrame()
    return read_checked(path, ("config_id", "executor", "metric", "new_median"),
                        numbers=("new_median",), warn=False)


def history_writer(in_dir: Path) -> CsvAppender:
    try:
        return CsvAppender(in_dir / HISTORY_CSV, HISTORY_COLUMNS)
    except SchemaMismatchError as exc:
        raise CannotJudgeError(f"{exc} (history.csv of an older version?)") from exc


def record_history(history: CsvAppender, verdicts: list[Verdict], runs: pd.DataFrame) -> None:
    env, session = machine_of(runs), str(runs["session_id"].iloc[0])
    history.append(*(
        {"date": utc_now(), "session_id": session, "config_id": v.config_id,
         "executor": v.executor, "metric": v.metric, "new_median": v.new[0],
         "new_ci_low": v.new[1], "new_ci_high": v.new[2], "baseline_median": v.baseline[0],
         "change_pct": round(v.change_pct, 2), "threshold_pct": v.threshold_pct,
         "p_value": round(v.p_value, 5), "verdict": v.verdict,
         "speed_scale": round(v.speed_scale, 4), **env}
        for v in verdicts
    ))


def _scale_cell(v: Verdict) -> str:
    if v.metric != "orchestration_s":
        return "n/a"  # relative overhead needs no correction for the machine's speed
    if v.scale_note:
        return "not applied: " + v.scale_note.split(" (")[0].removeprefix("plain runs ")
    return f"x{v.speed_scale:.2f}"


def table(verdicts: list[Verdict]) -> str:
    """The verdicts as a Markdown table; the stored-baseline columns only where they apply."""
    same_session = all(v.against == "reference" for v in verdicts)
    rows = [{
        "config": v.config_id, "executor": v.executor, "plain s": f"{v.plain_s:.2f}",
        "Covalent s": f"{v.covalent_s:.2f}", "metric": v.metric,
        "speed scale": _scale_cell(v),
        "new [95% CI]": f"{v.new[0]:.2f} [{v.new[1]:.2f}, {v.new[2]:.2f}]",
        "baseline": f"{v.baseline[0]:.2f}", "change": f"{v.change_pct:+.0f}%",
        "threshold": f"{v.threshold_pct:.0f}%", "p": f"{v.p_value:.3f}", "verdict": v.verdict,
    } for v in verdicts]
    frame = pd.DataFrame(rows)
    if same_session:  # no speed scale between environments of one session
        frame = frame.drop(columns="speed scale").rename(columns={"baseline": "reference"})
    return frame.to_markdown(index=False)


def _write_page(in_dir: Path, body: str, notes: list[str], against: str = "baseline") -> None:
    """<in>/gate.md, for CI's job summary; whatever the outcome, an old one must not linger."""
    if in_dir.is_dir():
        (in_dir / "gate.md").write_text(f"## Covalent overhead vs {against}\n\n"
                                        + "".join(f"- {n}\n" for n in notes) + "\n" + body + "\n")


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
    parser.add_argument("--confirms", type=Path, default=None, metavar="DIR",
                        help="this session reruns the one in DIR, whose gate found a "
                        "regression: fail only on a configuration, executor and metric that "
                        "regressed in both (CI's confirmation; its error rates: python -m "
                        "bench calibrate)")
    parser.add_argument("--allow-failed-runs", action="store_true",
                        help="with --refresh-baseline: take the baseline even if some measured "
                        "runs failed (refused by default); it records how many")
    args = parser.parse_args(argv)
    if not 0 < args.alpha < 1:
        parser.error(f"--alpha must be between 0 and 1, got {args.alpha}")
    try:
        thresholds = _thresholds(args.threshold, args.threshold_for)
    except ValueError as exc:
        parser.error(str(exc))
    notes: list[str] = []
    against = "the baseline"
    try:
        if args.refresh_baseline:
            path, notes = refresh_baseline(args.in_dir, args.baseline, args.alpha,
                                           args.allow_failed_runs)
            for note in notes:
                if note.startswith("WARNING: "):
                    print(note, file=sys.stderr)  # loud: a baseline with failures in it
                else:
                    print(f"note: {note}")
            print(f"baseline written: {path}")
            return EXIT_OK
        try:
            session = read_session(args.in_dir)
        except NoRecordsError:
            load_baseline(args.baseline, args.in_dir)  # no baseline either: say how to take one
            raise
        notes = session.notes
        history = history_writer(args.in_dir)
        envs = environments_of(session.runs)
        if len(envs) >= 2:  # like with like, in one session
            against = f"the reference environment `{envs[0]}` (same session)"
            verdicts, notes = same_session(session, thresholds, args.alpha)
        else:
            base, base_env = load_baseline(args.baseline, args.in_dir)
            verdicts, notes = check(session, base, base_env, thresholds, args.alpha)
            against = "the stored baseline"
    except NoRecordsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NO_INPUT
    except CannotJudgeError as exc:
        for note in notes:
            print(f"note: {note}")
        print(f"error: cannot judge: {exc}", file=sys.stderr)
        if not args.refresh_baseline:
            _write_page(args.in_dir, f"**Cannot judge**: {exc}", notes, against)
        return EXIT_CANNOT_JUDGE
    for note in notes:
        print(f"note: {note}")
    if verdicts:
        text = table(verdicts)
        print(text)
        _write_page(args.in_dir, text, notes, against)
        record_history(history, verdicts, session.runs)
    regressions = [v for v in verdicts if v.verdict == "regression"]
    if args.confirms is not None:
        try:
            first = regressed_cells(args.confirms)
        except CannotJudgeError as exc:
            print(f"error: cannot judge: {exc}", file=sys.stderr)
            return EXIT_CANNOT_JUDGE
        for v in regressions:
            if (v.config_id, v.executor, v.metric) not in first:
                print(f"note: not confirmed (regressed here, not in {args.confirms}): "
                      f"{v.message()}")
        for cell in sorted(first - {(v.config_id, v.executor, v.metric) for v in regressions}):
            print(f"note: not confirmed (regressed in {args.confirms}, not here): "
                  f"{' '.join(cell)}")
        regressions = [v for v in regressions if (v.config_id, v.executor, v.metric) in first]
    for v in regressions:
        print(f"REGRESSION: {v.message()}", file=sys.stderr)
    shifts, fresh = history_shifts(read_history(args.in_dir), thresholds)
    for line in shifts:
        print(f"note: {line}")
    for line in fresh:
        print(f"REGRESSION (history): {line}", file=sys.stderr)
    if fresh and verdicts:
        return EXIT_REGRESSION
    if not verdicts:
        print("error: nothing comparable with the baseline", file=sys.stderr)
        return EXIT_NO_INPUT
    return EXIT_REGRESSION if regressions else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
