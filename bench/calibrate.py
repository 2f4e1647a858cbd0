"""`python -m bench calibrate`: the gate's error rates, measured on this machine.

Runs K A/A sessions, each the CI job's side-by-side session (profile smoke, `--bench-env`
twice with the same Covalent), and judges each with the gate's own same-session test:
  * false positives: sessions where the gate calls an identical environment a REGRESSION,
    with a Clopper-Pearson 95 % CI;
  * power: the same sessions with a delay of d seconds planted in every Covalent run of
    the second environment (added to its wall time, as a server step d s slower adds it:
    the planted-delay test measures +1.11 s for a planted +1.0 s), judged again for each d;
    the smallest d caught in at least 80 % of the sessions, per executor;
  * both for thresholds other than the gate's 25 %, so the default is chosen from evidence.

Each session is written as it ends (DIR/sessions/aa-NN, a `done` file when complete), so
an interrupted calibration resumes where it stopped; `--analyze-only` judges what is there.
Outputs: DIR/verdicts.csv (every verdict of every session, threshold and shift),
DIR/error_rates.csv and DIR/README.md (the figures in words).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd

from bench.analysis.gate import (
    confirmed_table,
    detection_table,
    false_positive_table,
    smallest_detected,
)
from bench.gate import CannotJudgeError, Session, read_session, same_session

DEFAULT_SHIFTS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 6.0)
DEFAULT_THRESHOLDS = (10.0, 15.0, 25.0, 35.0)
DONE = "done"


def run_sessions(out: Path, sessions: int, profile: str, requirement: str,
                 extra: list[str], judged: frozenset[str] = frozenset()) -> list[Path]:
    """Run the A/A sessions that are not done yet; the directories of all done ones.
    `judged`: sessions whose verdicts are kept from an earlier calibration (their records
    are gone): they count towards `sessions` and are not run again."""
    done = []
    for i in range(sessions):
        where = out / "sessions" / f"aa-{i:02d}"
        if where.name in judged and not (where / DONE).exists():
            continue
        if not (where / DONE).exists():
            print(f"calibrate: A/A session {i + 1} of {sessions} -> {where}", flush=True)
            command = [sys.executable, "-m", "bench", "run", "-q", "-p", "no:cacheprovider",
                       "--bench-profile", profile, "--bench-env", f"a={requirement}",
                       "--bench-env", f"b={requirement}", "--bench-out", str(where), *extra]
            code = subprocess.call(command)
            if code != 0:  # a failed session is kept for reading, not counted
                print(f"calibrate: session {i + 1} exited {code}; not counted (its records "
                      f"stay in {where})", file=sys.stderr)
                continue
            (where / DONE).write_text("ok\n")
        done.append(where)
    return done


def earlier_verdicts(out: Path) -> pd.DataFrame:
    """The verdicts.csv of an earlier calibration in `out`, or an empty frame."""
    path = out / "verdicts.csv"
    if not path.is_file() or not path.stat().st_size:
        return pd.DataFrame()
    return pd.read_csv(path, dtype={"session": str, "config_id": str, "executor": str})


def planted(session: Session, env: str, delay_s: float) -> Session:
    """The session as if every Covalent run of `env` had taken delay_s longer."""
    runs = session.runs.copy()
    hit = (runs["mode"] == "covalent") & runs["executor"].str.startswith(f"{env}:")
    runs.loc[hit, "wall_s"] = runs.loc[hit, "wall_s"] + delay_s
    return Session(runs, session.phases, list(session.notes), session.damaged)


def judge_all(dirs: list[Path], shifts: tuple[float, ...], thresholds: tuple[float, ...],
              alpha: float) -> pd.DataFrame:
    """One row per session, threshold, planted delay (0 = the A/A comparison itself),
    configuration, executor and metric."""
    rows = []
    for where in dirs:
        try:
            session = read_session(where)
        except CannotJudgeError as exc:
            print(f"calibrate: {where}: not judged: {exc}", file=sys.stderr)
            continue
        second = session.runs.loc[session.runs["mode"] == "covalent", "executor"] \
            .str.split(":").str[0].unique()[-1]
        for delay in (0.0, *shifts):
            shifted = planted(session, second, delay) if delay else session
            for threshold in thresholds:
                verdicts, _ = same_session(
                    shifted, {"orchestration_s": threshold, "total_overhead_pct": threshold},
                    alpha)
                rows += [{"session": where.name, "threshold_pct": threshold,
                          "planted_s": delay, "config_id": v.config_id,
                          "executor": v.executor.split(" vs ")[0].split(":", 1)[-1],
                          "metric": v.metric, "change_pct": v.change_pct,
                          "p_value": v.p_value, "verdict": v.verdict,
                          "new_median": v.new[0], "reference_median": v.baseline[0]}
                         for v in verdicts]
    return pd.DataFrame(rows)


def describe(verdicts: pd.DataFrame, alpha: float) -> str:
    """The calibration's figures in words (DIR/README.md)."""
    fp = false_positive_table(verdicts)
    det = detection_table(verdicts)
    n = verdicts["session"].nunique()
    lines = [f"# The gate's error rates on this machine ({n} A/A sessions)", "",
             f"Each session: the CI job's side-by-side session with both environments the "
             f"same Covalent; alpha {alpha:g}. A session is a false positive when the gate "
             f"calls any of its verdicts a REGRESSION.", "",
             "## False positives (A/A)", "",
             fp.to_markdown(index=False, floatfmt=".3g"), "",
             "## Smallest planted delay caught in at least 80 % of sessions", ""]
    small = smallest_detected(det)
    lines += [small.to_markdown(index=False, floatfmt=".3g"), ""]
    two = confirmed_table(verdicts)
    lines += ["## With a confirming session (CI's gate step)", "",
              "CI runs a second session when the gate finds a regression and fails only when "
              "the same configuration, executor and metric regressed in both "
              "(`python -m bench.gate --confirms`). Every ordered pair of distinct sessions "
              "here is a first session and its confirmation; the bound assumes the sessions "
              "independent (false positives: at most the single-stage CI's high end squared; "
              "detection: at least its low end squared).", "",
              two[two["planted_s"] == 0].drop(columns=["executor", "planted_s", "planted_pct"])
              .rename(columns={"sessions": "pairs", "detected": "false_positive_pairs"})
              .to_markdown(index=False, floatfmt=".3g"), "",
              "Smallest planted delay caught and confirmed in at least 80 % of the pairs:", "",
              smallest_detected(two[two["planted_s"] > 0]).to_markdown(index=False,
                                                                      floatfmt=".3g"), "",
              "## Detection by planted delay", "", det.to_markdown(index=False, floatfmt=".3g")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench calibrate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("reports/gate-calibration"))
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--profile", default="smoke", help="the CI job's profile (smoke)")
    parser.add_argument("--requirement", default="covalent==0.240.0",
                        help="the Covalent both environments install")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--analyze-only", action="store_true",
                        help="judge the sessions already done; run none")
    args, extra = parser.parse_known_args(argv)
    if args.sessions < 1:
        parser.error(f"--sessions must be at least 1, got {args.sessions}")
    args.out.mkdir(parents=True, exist_ok=True)
    kept = earlier_verdicts(args.out)
    if args.analyze_only:
        dirs = sorted(p.parent for p in (args.out / "sessions").glob(f"*/{DONE}"))
    else:
        dirs = run_sessions(args.out, args.sessions, args.profile, args.requirement, extra,
                            frozenset(kept["session"]) if not kept.empty else frozenset())
    if not dirs and kept.empty:
        print(f"error: no finished A/A session in {args.out / 'sessions'}; run "
              f"`python -m bench calibrate --out {args.out}` first", file=sys.stderr)
        return 2
    fresh = judge_all(dirs, DEFAULT_SHIFTS, DEFAULT_THRESHOLDS, args.alpha)
    if not kept.empty:  # sessions judged before whose records are gone stay counted
        kept = kept[~kept["session"].isin({d.name for d in dirs})]
        print(f"calibrate: {kept['session'].nunique()} earlier session(s) kept from "
              f"{args.out / 'verdicts.csv'} (their records are no longer here)")
    verdicts = pd.concat([kept, fresh], ignore_index=True) if not kept.empty else fresh
    verdicts.to_csv(args.out / "verdicts.csv", index=False)
    rates = false_positive_table(verdicts)
    rates.to_csv(args.out / "error_rates.csv", index=False)
    text = describe(verdicts, args.alpha)
    (args.out / "README.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
