"""The gate's judgment, pure: is a metric's new sample significantly and materially worse
than the baseline's? (The command around it, with files and history: bench.gate.)"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from bench.analysis.stats import median_ci

METRICS = ("orchestration_s", "total_overhead_pct")

# The fewest measured rounds the gate judges on either side (session and baseline). When every
# new round is worse than every baseline round, the one-sided Mann-Whitney U test gives its
# smallest p: 1 / C(n + m, n) for n new and m baseline rounds (scipy's exact method, which it
# uses below 8 rounds without ties). At alpha 0.05 one round never gets there against fewer than 20
# baseline rounds (1/6 against 5), two only against 5 or more (1/21 = 0.048, barely), three
# against 4 or more (1/35). So 3 is the smallest n that can reach p < alpha against the
# baselines the profiles take (4-5 measured rounds). Below it the gate's other criterion,
# CIs that do not overlap, is no safeguard either: one round's CI is a point (a session of
# one round was once called a REGRESSION at p = 0.17), two rounds' is just their range.
# Pairs of at least MIN_ROUNDS that still cannot reach alpha (3 against 3: p >= 0.05) are
# refused too, by rounds_problem().
MIN_ROUNDS = 3


class TooFewRoundsError(ValueError):
    """A sample too small for the test to ever call a difference significant."""


def best_p_value(n_new: int, n_base: int) -> float:
    """The smallest one-sided Mann-Whitney U p that n_new rounds can reach against n_base."""
    return 1 / math.comb(n_new + n_base, n_new)


def rounds_needed(n_base: int, alpha: float) -> int:
    """The fewest new rounds (at least MIN_ROUNDS) that can reach p < alpha against n_base."""
    n = MIN_ROUNDS
    while best_p_value(n, n_base) >= alpha and n < 10_000:
        n += 1
    return n


def rounds_problem(n_new: int, n_base: int, alpha: float, against: str = "baseline"
                   ) -> str | None:
    """Why n_new measured rounds cannot be judged against the baseline's (or, in one
    session, the reference environment's) n_base, or None."""
    if n_base < MIN_ROUNDS:
        fix = ("take a new baseline with more rounds" if against == "baseline" else
               f"run at least {MIN_ROUNDS} rounds (--bench-set rounds={MIN_ROUNDS})")
        return (f"the {against} has {n_base} round{'s' * (n_base != 1)}, fewer than the "
                f"{MIN_ROUNDS} the gate needs; {fix}")
    need = rounds_needed(n_base, alpha)
    if n_new >= need:
        return None
    best = best_p_value(n_new, n_base)
    why = (f"with {n_new}, Mann-Whitney U cannot reach p < {alpha:g} (at best "
           f"p = {best:.3f})" if best >= alpha else
           f"the gate needs at least {MIN_ROUNDS}: with fewer, a median's confidence interval "
           f"is a point or a range")
    return (f"{n_new} measured round{'s' * (n_new != 1)} against the {against}'s {n_base}, too "
            f"few to judge: {why}; run at least {need} (--bench-set rounds={need})")


@dataclass(frozen=True)
class Verdict:
    config_id: str
    executor: str
    metric: str
    new: tuple[float, float, float]  # median, CI low, CI high
    baseline: tuple[float, float, float]
    change_pct: float
    threshold_pct: float
    p_value: float
    verdict: str  # ok | regression | improved
    plain_s: float = float("nan")  # median walls of the new session, for the table
    covalent_s: float = float("nan")
    speed_scale: float = 1.0  # what the new values were multiplied by (see speed_scale())
    scale_note: str = ""  # why orchestration was not scaled (SpeedScale.reason), if it wasn't
    against: str = "baseline"  # what `baseline` holds: the stored baseline or the reference

    def message(self) -> str:
        return (
            f"{self.config_id} [{self.executor}] {self.metric}: new median "
            + (f"(x{self.speed_scale:.2f} for machine speed) " if self.speed_scale != 1 else "")
            + f"{self.new[0]:.3f} (95% CI {self.new[1]:.3f}..{self.new[2]:.3f}) vs "
            f"{self.against} {self.baseline[0]:.3f} "
            f"(CI {self.baseline[1]:.3f}..{self.baseline[2]:.3f}): "
            f"{self.change_pct:+.1f}% (threshold {self.threshold_pct:.0f}%), "
            f"Mann-Whitney U p={self.p_value:.4f} -> {self.verdict.upper()}"
        )


def judge(
    new: pd.Series, base: pd.Series, metric: str, threshold_pct: float, alpha: float,
    config_id: str = "", executor: str = "",
) -> Verdict:
    """Regression = significantly worse AND worse by more than the threshold.

    Raises TooFewRoundsError if the samples (without NaN) are too small to ever be
    significant (see MIN_ROUNDS)."""
    new, base = new.dropna(), base.dropna()
    problem = rounds_problem(len(new), len(base), alpha)
    if problem:
        raise TooFewRoundsError(f"{config_id} [{executor}] {metric}: {problem}")
    new_ci, base_ci = median_ci(new), median_ci(base)
    p = float(stats.mannwhitneyu(new, base, alternative="greater").pvalue)
    significant = p < alpha or new_ci[1] > base_ci[2]
    change = 100 * (new_ci[0] - base_ci[0]) / abs(base_ci[0]) if base_ci[0] else float("inf")
    if significant and change > threshold_pct:
        verdict = "regression"
    elif new_ci[2] < base_ci[1] and change < -threshold_pct:
        verdict = "improved"
    else:
        verdict = "ok"
    return Verdict(config_id, executor, metric, new_ci, base_ci, change, threshold_pct, p,
                   verdict)


# The speed scale (baseline plain median / new plain median) corrects orchestration for the
# machine's speed, and only where the plain runs can carry that estimate:
#  * they run at least MIN_SCALE_PLAIN_S on both sides. A plain run of milliseconds times the
#    harness's fixed per-call costs, the timer and scheduler jitter (a shared machine's are
#    ms to tens of ms), not the machine's compute speed, and orchestration (seconds of the
#    server's CPU work) does not follow it: such a "scale" of x3.00, from one torn line that
#    moved a 1 ms median, once turned a session judged against its own baseline into a
#    +189 % REGRESSION. From 1 s on, that jitter is a few percent of a run;
#  * its 95 % CI (percentile bootstrap of the ratio of the two medians, each side resampled
#    on its own) is narrower than MAX_SCALE_CI_REL of the scale: within +-5 %, well inside
#    the gate's 25 % threshold, so an uncertain scale cannot make (or hide) a regression.
# Otherwise the new orchestration is compared unscaled, and the gate says why.
MIN_SCALE_PLAIN_S = 1.0
MAX_SCALE_CI_REL = 0.10
SCALE_RESAMPLES = 4000


@dataclass(frozen=True)
class SpeedScale:
    """The machine-speed correction of one configuration and executor, and whether it holds."""

    estimate: float  # baseline plain median / new plain median (nan: no plain runs)
    ci: tuple[float, float]  # its 95 % bootstrap CI
    applied: bool
    reason: str = ""  # why not applied, in a few words ("" when applied)

    @property
    def value(self) -> float:
        """What the new orchestration is multiplied by: the estimate, or 1 when not applied."""
        return self.estimate if self.applied else 1.0

    def note(self) -> str:
        """One line for the gate's notes ("" when the scale is applied)."""
        return "" if self.applied else f"speed scale not applied: {self.reason}"


def speed_scale(new_plain: pd.Series, base_plain: pd.Series,
                min_plain_s: float = MIN_SCALE_PLAIN_S,
                max_ci_rel: float = MAX_SCALE_CI_REL) -> SpeedScale:
    """Baseline plain median / new plain median (< 1 when this session's machine ran slower),
    applied only when the plain runs are long and steady enough to carry it (see above)."""
    new = np.asarray(pd.to_numeric(new_plain, errors="coerce"), dtype=float)
    base = np.asarray(pd.to_numeric(base_plain, errors="coerce"), dtype=float)
    new, base = new[np.isfinite(new)], base[np.isfinite(base)]
    if not len(new) or not len(base):
        return SpeedScale(math.nan, (math.nan, math.nan), False,
                          "no plain runs to estimate the machine's speed from")
    new_median, base_median = float(np.median(new)), float(np.median(base))
    if new_median <= 0 or base_median <= 0:
        return SpeedScale(math.nan, (math.nan, math.nan), False,
                          "a plain median of 0 s carries no speed")
    estimate = base_median / new_median
    rng = np.random.default_rng(0)  # the same records give the same verdict
    ratios = (np.median(rng.choice(base, (SCALE_RESAMPLES, len(base))), axis=1)
              / np.median(rng.choice(new, (SCALE_RESAMPLES, len(new))), axis=1))
    low, high = (float(q) for q in np.quantile(ratios, [0.025, 0.975]))
    shortest = min(new_median, base_median)
    if shortest < min_plain_s:
        return SpeedScale(estimate, (low, high), False,
                          f"plain runs too short (median {shortest:.3g} s; the scale needs "
                          f">= {min_plain_s:g} s to stand for the machine's speed)")
    width = (high - low) / estimate
    if width > max_ci_rel:
        return SpeedScale(estimate, (low, high), False,
                          f"plain runs too noisy (x{estimate:.2f}, 95 % CI "
                          f"{low:.2f}..{high:.2f}: {100 * width:.0f} % wide, more than "
                          f"{100 * max_ci_rel:.0f} %)")
    return SpeedScale(estimate, (low, high), True)


# Calibration (bench.calibrate): the gate's error rates from A/A sessions, each judged as is
# and with planted delays. One row of `verdicts` per session, threshold_pct, planted_s,
# config_id, executor and metric, with the verdict.
DETECTION_GOAL = 0.8


def _rate(k: int, n: int) -> dict[str, float]:
    """k of n, with its Clopper-Pearson 95 % CI."""
    ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact") if n else None
    return {"rate": k / n if n else math.nan, "ci_low": ci.low if ci else math.nan,
            "ci_high": ci.high if ci else math.nan}


def _flagged(verdicts: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per `by` + session: whether any verdict there is a regression."""
    hit = verdicts.assign(regression=verdicts["verdict"] == "regression")
    return hit.groupby([*by, "session"], sort=True)["regression"].any().reset_index()


def false_positive_table(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per threshold: how many A/A sessions (planted_s 0) the gate failed, with a CI, and
    how many of their single verdicts were regressions."""
    aa = verdicts[verdicts["planted_s"] == 0]
    rows = []
    for threshold, group in aa.groupby("threshold_pct"):
        sessions = _flagged(group, [])
        k, n = int(sessions["regression"].sum()), len(sessions)
        rows.append({"threshold_pct": threshold, "sessions": n, "false_positives": k,
                     **_rate(k, n), "verdicts": len(group),
                     "regression_verdicts": int((group["verdict"] == "regression").sum())})
    return pd.DataFrame(rows)


def detection_table(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per threshold, executor and planted delay: the share of sessions in which the gate
    called that executor a regression, with a CI, and the delay as a share of the
    reference's median orchestration."""
    rows = []
    planted = verdicts[verdicts["planted_s"] > 0]
    orch = verdicts[(verdicts["planted_s"] == 0) & (verdicts["metric"] == "orchestration_s")]
    for (threshold, executor, delay), group in planted.groupby(
            ["threshold_pct", "executor", "planted_s"]):
        sessions = _flagged(group, [])
        k, n = int(sessions["regression"].sum()), len(sessions)
        ref = orch.loc[orch["executor"] == executor, "reference_median"].median()
        rows.append({"threshold_pct": threshold, "executor": executor, "planted_s": delay,
                     "planted_pct": 100 * delay / ref if ref else math.nan,
                     "sessions": n, "detected": k, **_rate(k, n)})
    return pd.DataFrame(rows)


def smallest_detected(detection: pd.DataFrame, goal: float = DETECTION_GOAL) -> pd.DataFrame:
    """Per threshold and executor: the smallest planted delay from which every larger one
    is caught in at least `goal` of the sessions (NaN: none up to the largest planted)."""
    rows = []
    for (threshold, executor), group in detection.groupby(["threshold_pct", "executor"]):
        group = group.sort_values("planted_s")
        ok = (group["rate"] >= goal).to_numpy()
        # the first delay after which no smaller-than-goal rate follows
        tail = [i for i in range(len(ok)) if ok[i:].all()]
        first = group.iloc[tail[0]] if tail else None
        rows.append({"threshold_pct": threshold, "executor": executor,
                     "smallest_caught_s": first["planted_s"] if first is not None else math.nan,
                     "as_pct_of_orchestration": first["planted_pct"] if first is not None
                     else math.nan,
                     "caught": f"{int(first['detected'])}/{int(first['sessions'])}"
                     if first is not None else ""})
    return pd.DataFrame(rows)


# The gate with a confirmation (CI: a regression is confirmed by a second session, and the
# job fails only when the same configuration, executor and metric regressed in both). From
# the same A/A sessions: every ordered pair of distinct sessions is a first run and its
# confirmation. Pairs share sessions, so their rate is a point estimate; its bound assumes
# the sessions independent: P(both) = p^2 <= (single-stage CI high)^2 for false positives,
# >= (single-stage CI low)^2 for detection.
def _regressed_cells(verdicts: pd.DataFrame) -> dict[str, set[tuple[str, str, str]]]:
    hit = verdicts[verdicts["verdict"] == "regression"]
    cells: dict[str, set[tuple[str, str, str]]] = {s: set() for s in verdicts["session"]}
    for row in hit.itertuples(index=False):
        cells[row.session].add((row.config_id, row.executor, row.metric))
    return cells


def _confirmed_pairs(verdicts: pd.DataFrame) -> tuple[int, int]:
    """(pairs whose first and confirming session share a regressed cell, pairs)."""
    cells = _regressed_cells(verdicts)
    names = sorted(cells)
    both = sum(bool(cells[a] & cells[b]) for a in names for b in names if a != b)
    return both, len(names) * (len(names) - 1)


def confirmed_table(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per threshold, executor (`any` for the A/A rows) and planted delay: the share of
    ordered session pairs in which a regression is found and confirmed, and its bound."""
    rows = []
    single_fp = false_positive_table(verdicts).set_index("threshold_pct")
    single_det = detection_table(verdicts).set_index(["threshold_pct", "executor",
                                                      "planted_s"])
    orch = verdicts[(verdicts["planted_s"] == 0) & (verdicts["metric"] == "orchestration_s")]
    for (threshold, delay), group in verdicts.groupby(["threshold_pct", "planted_s"]):
        executors = ["any"] if delay == 0 else sorted(group["executor"].unique())
        for executor in executors:
            mine = group if executor == "any" else group[group["executor"] == executor]
            both, pairs = _confirmed_pairs(mine)
            if delay == 0:
                bound = single_fp.loc[threshold, "ci_high"] ** 2
                planted_pct = math.nan
            else:
                bound = single_det.loc[(threshold, executor, delay), "ci_low"] ** 2
                ref = orch.loc[orch["executor"] == executor, "reference_median"].median()
                planted_pct = 100 * delay / ref if ref else math.nan
            rows.append({"threshold_pct": threshold, "executor": executor, "planted_s": delay,
                         "planted_pct": planted_pct, "sessions": pairs, "detected": both,
                         "rate": both / pairs if pairs else math.nan,
                         "bound_if_independent": bound})
    return pd.DataFrame(rows)
