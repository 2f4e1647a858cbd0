"""The report's findings: a few plain sentences, each with its figure and confidence
interval, picked by rules from summary.csv's rows (bench.analysis.decompose.summarize) and
fits.csv's (overhead_fits). Pure: frames in, sentences out; no I/O, no plotting.

The thresholds the rules use are the named constants below. A sentence is Markdown inline
text (`code`, **bold**); its `topic` lets the page point at the plot that shows it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pandas as pd

from bench.analysis.decompose import environments_of
from bench.analysis.hotspots import SUMMARY_PARTS

# A part of the overhead at least this share of the total dominates it; below
# MINOR_SHARE it is minor (between the two: a notable part).
DOMINANT_SHARE = 0.5
MINOR_SHARE = 0.2
# In-task CPU time, Covalent / plain, below which CPU counts as flat: the tasks waited
# (CPU shared with the server and workers, fewer threads) rather than did more work.
CPU_FLAT_RATIO = 1.15
# Page faults, Covalent / plain, from which the memory allocator is the suspect.
ALLOCATOR_FAULT_RATIO = 3.0
# Relative overhead (%) above which "N× plain's time" reads better than a percentage.
PCT_AS_FACTOR = 300.0
# Standard errors a fitted slope must clear to count as rising or falling.
SLOPE_Z = 2.0
# A 95 % CI half-width (s) wider than this gets the "more rounds" hint (README: about 15
# rounds bring the orchestration CI to ±0.5 s on a 2-core machine).
WIDE_CI_S = 0.5
SUGGESTED_ROUNDS = 15
# A fitted line's crossing beyond this many times the largest value swept is an
# extrapolation; at most this many swept parameters are named in the payoff sentence.
EXTRAPOLATION = 2.0
MAX_PAYOFF_PARAMETERS = 2
# At most this many sentences; the optional ones (the "more rounds" hint, then the cheapest
# configuration) go first.
MAX_FINDINGS = 6

# Columns a precision target (`--bench-precision`) may add to summary.csv: the target CI
# half-width, which estimator it bounds, and whether it was reached. All optional.
PRECISION_TARGET_COLUMNS = ("precision_target_s", "precision_s", "target_halfwidth_s")
PRECISION_METRIC_COLUMN = "precision_metric"
PRECISION_MET_COLUMN = "precision_met"
PRECISION_DEFAULT_METRICS = ("orchestration_s", "total_overhead_s")  # the first with a CI

# The orchestration parts (summary.csv medians) and compute inflation, in words.
PART_NAMES = {
    "submit_median_s": "client submit (build, serialize, upload)",
    "until_running_median_s": "waiting until the server runs the dispatch",
    "executor_cost_median_s": "executor staging and (de)serialization",
    "scheduling_gaps_median_s": "server gaps between tasks",
    "completion_detect_median_s": "completion detection",
    "retrieve_median_s": "result download",
    "compute_inflation_s": "compute inflation (the tasks themselves running slower)",
}
REMEDY_FILE = "bench/dask/keep-malloc-defaults.yaml"
MALLOC_VAR = "MALLOC_TRIM_THRESHOLD_"

# Topics, in the order the sentences come.
(ENVIRONMENTS, OVERHEAD, LARGEST_PART, INFLATION, CHEAPEST, PAYOFF, SAME_WORK, PRECISION,
 PROBE_COST, PREDICTION) = ("environments", "overhead", "largest_part", "compute_inflation",
                            "cheapest", "payoff", "same_work", "precision", "probe_cost",
                            "prediction")
MAX_NAMED_CHANGES = 4  # significant environment differences named in one sentence


@dataclass(frozen=True)
class Finding:
    topic: str  # one of the topics above
    text: str  # one sentence, Markdown inline
    optional: bool = False  # dropped first when there are more than MAX_FINDINGS


def findings(summary: pd.DataFrame, fits: pd.DataFrame | None = None,
             probes: pd.DataFrame | None = None, diffs: pd.DataFrame | None = None,
             grown: pd.DataFrame | None = None,
             predicted: pd.DataFrame | None = None) -> list[Finding]:
    """The page's opening sentences, derived from the summary (and fits, the probes' cost,
    the environments' paired differences and, from profiled rounds, the functions that grew
    most: hotspots.growers) frames. With several Covalent environments, what Covalent costs
    is told for the reference, and how the others differ from it first."""
    if summary is None or summary.empty:
        return []
    fits = fits if fits is not None else pd.DataFrame()
    base = reference_rows(summary)
    out = [f for f in (environments(diffs, grown), overhead(base), largest_part(base),
                       compute_inflation(base), cheapest(base), payoff(fits, summary),
                       same_work(summary), precision(summary), prediction(predicted),
                       probe_cost(probes))
           if f is not None]
    while len(out) > MAX_FINDINGS and any(f.optional for f in out):
        out.remove(next(f for f in reversed(out) if f.optional))
    return out[:MAX_FINDINGS]


# --- formatting -------------------------------------------------------------------------

def _ok(value: object) -> bool:
    try:
        return value is not None and not pd.isna(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return False


def _num(value: float, sign: bool = True) -> str:
    """Seconds with the digits their size needs: 12.3, 3.19, 0.069, 0.0004."""
    value = round(value, 6)  # no float noise (2e-16) in a sentence
    size = abs(value)
    spec = ".1f" if size >= 10 else ".2f" if size >= 0.1 else ".3f" if size >= 0.01 or \
        size == 0 else ".1g"
    text = format(value, ("+" if sign else "") + spec)
    return text.replace("-", "−")


def _share(value: float) -> str:
    return "< 1 %" if 0 < value < 0.005 else f"{100 * value:.0f} %"


def _ci(row: pd.Series, column: str) -> str:
    """` [low, high]`: the 95 % bootstrap CI summary.csv holds for `column`, if any."""
    low, high = row.get(f"{column}_ci_low"), row.get(f"{column}_ci_high")
    if not (_ok(low) and _ok(high)):
        return ""
    return f" [{_num(low)}, {_num(high)}]"


def _spans_zero(row: pd.Series, column: str) -> bool:
    low, high = row.get(f"{column}_ci_low"), row.get(f"{column}_ci_high")
    return _ok(low) and _ok(high) and low <= 0 <= high


def _relative(row: pd.Series) -> str:
    """The overhead relative to plain: a percentage, or a factor when it is huge."""
    pct = row.get("total_overhead_pct", row.get("overhead_pct"))
    plain, cov = row.get("plain_median_s"), row.get("covalent_median_s")
    if not _ok(pct):
        return ""
    if pct > PCT_AS_FACTOR and _ok(plain) and plain > 0 and _ok(cov):
        return f"{cov / plain:,.0f}× the plain run's {_num(plain, False)} s"
    return f"{pct:+,.0f} % of the plain run's {_num(plain, False)} s".replace("-", "−")


def _x(executor: object) -> str:
    return f"`{executor}`"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _executors(summary: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(summary["executor"].astype(str)))


def _of(summary: pd.DataFrame, executor: str) -> pd.DataFrame:
    return summary[summary["executor"].astype(str) == executor]


def _col(frame: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(frame[column], errors="coerce") if column in frame \
        else pd.Series(float("nan"), index=frame.index)


def _sum(frame: pd.DataFrame, column: str) -> float:
    values = _col(frame, column)
    return float(values.sum()) if values.notna().any() else float("nan")


def _single(summary: pd.DataFrame) -> pd.DataFrame:
    """Single dispatches: batches (concurrency > 1) are judged by their makespan, which is
    no per-run overhead; they count only where nothing else is there."""
    single = summary[_col(summary, "concurrency").fillna(1) <= 1]
    return single if len(single) else summary


def _where(row: pd.Series, many: bool) -> str:
    return f"`{row['config_id']}` on {_x(row['executor'])}" if many else _x(row["executor"])


def reference_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """The reference environment's rows where the session compared several, else all."""
    envs = environments_of(summary)
    return summary[summary["environment"] == envs[0]] if len(envs) >= 2 else summary


# --- the rules --------------------------------------------------------------------------

def environments(diffs: pd.DataFrame | None, grown: pd.DataFrame | None = None
                 ) -> Finding | None:
    """Which environments' orchestration differs from the reference's (paired by round,
    significant: p < 0.05 and a CI that excludes 0), by how much, the part that moved most
    and, with profiled rounds, the function in it that grew most where that growth is
    significant; the rest is said to be indistinguishable, not equal."""
    if diffs is None or diffs.empty:
        return None
    ref = diffs["reference"].iloc[0]
    significant = diffs["significant"].astype(str).str.lower().isin(("true", "1", "1.0"))
    orch = diffs[diffs["metric"] == "orchestration_s"]
    changed = orch[significant.loc[orch.index]]
    changed = changed.loc[changed["diff_s"].abs().sort_values(ascending=False).index]
    many = diffs["config_id"].nunique() > 1
    named = []
    for _, row in changed.head(MAX_NAMED_CHANGES).iterrows():
        same = ((diffs["config_id"] == row["config_id"]) & (diffs["executor"] == row["executor"])
                & (diffs["environment"] == row["environment"]) & significant
                & ~diffs["metric"].isin(("orchestration_s", "total_overhead_s")))
        parts = diffs[same]
        text = (f"`{row['environment']}` on `{row['executor']}`"
                + (f" (`{row['config_id']}`)" if many else "")
                + f" {_num(row['diff_s'])} s [{_num(row['diff_ci_low'])}, "
                f"{_num(row['diff_ci_high'])}], p = {row['p_value']:.3f}")
        if len(parts):
            top = parts.loc[parts["diff_s"].abs().idxmax()]
            name = PART_NAMES.get(f"{str(top['metric'])[:-2]}_median_s", top["metric"])
            text += f", most in {name} ({_num(top['diff_s'])} s"
            text += _grew_in(grown, row, SUMMARY_PARTS.get(f"{str(top['metric'])[:-2]}_median_s"))
            text += ")"
        named.append(text)
    if not named:
        return Finding(ENVIRONMENTS, (
            f"No environment's orchestration differs significantly from the reference "
            f"`{ref}`'s ({len(orch)} comparison{'s' * (len(orch) != 1)}, paired by round): "
            f"none is shown to be "
            f"faster or slower at this precision."))
    rest = len(orch) - len(changed)
    more = len(changed) - len(named)
    return Finding(ENVIRONMENTS, (
        f"Against the reference `{ref}`, orchestration differs significantly in "
        f"{len(changed)} of {len(orch)} comparisons: " + "; ".join(named)
        + (f"; and {more} more (environments table)" if more else "")
        + (". The other one is not distinguishable from the reference." if rest == 1 else
           f". The other {rest} are not distinguishable from the reference." if rest else ".")))


def _grew_in(grown: pd.DataFrame | None, row: pd.Series, part: str | None) -> str:
    """", of which +0.98 s in `module:function`": the significant top grower of this
    environment's part in the profiled rounds, if any."""
    if grown is None or grown.empty or part is None:
        return ""
    mine = grown[(grown["config_id"] == row["config_id"])
                 & (grown["environment"] == row["environment"]) & (grown["part"] == part)
                 & grown["executor"].isin([row["executor"],
                                           f"{row['environment']}:{row['executor']}"])
                 & grown["significant"].astype(bool)]
    if mine.empty:
        return ""
    g = mine.iloc[0]
    if bool(g.get("waiting")) and isinstance(g.get("via_function"), str):
        return (f", of which {_num(g['delta_s'])} s waiting in `{g['module']}:"
                f"{g['function']}` under `{g['via_module']}:{g['via_function']}` "
                f"({_num(g['via_delta_s'])} s)")
    return f", of which {_num(g['delta_s'])} s in `{g['module']}:{g['function']}`"


def overhead(summary: pd.DataFrame) -> Finding | None:
    """(a) What each executor adds per run: total overhead in s with its CI, and in %."""
    summary = _single(summary)
    clauses = []
    for executor in _executors(summary):
        rows = _of(summary, executor)
        rows = rows[_col(rows, "total_overhead_s").notna()]
        if rows.empty:
            continue
        if len(rows) == 1:
            row = rows.iloc[0]
            high = row.get("total_overhead_s_ci_high")
            verb = "saves" if _ok(high) and high < 0 else "adds"
            vague = " (not distinguishable from 0)" if _spans_zero(row, "total_overhead_s") \
                else ""
            clauses.append(f"{_x(executor)} {verb} **{_num(row['total_overhead_s'])} s**"
                           f"{_ci(row, 'total_overhead_s')}{vague}, {_relative(row)}")
        else:
            ranked = rows.sort_values("total_overhead_s")
            lo, hi = ranked.iloc[0], ranked.iloc[-1]
            clauses.append(
                f"{_x(executor)} adds from **{_num(lo['total_overhead_s'])} s**"
                f"{_ci(lo, 'total_overhead_s')} (`{lo['config_id']}`) to "
                f"**{_num(hi['total_overhead_s'])} s**{_ci(hi, 'total_overhead_s')} "
                f"(`{hi['config_id']}`) over {len(rows)} configurations")
    if not clauses:
        return None
    rounds = sorted(set(_col(summary, "covalent_rounds").dropna().astype(int)))
    rounds_text = "/".join(map(str, rounds)) if rounds else "the"
    return Finding(OVERHEAD, "Per run, Covalent " + _join(clauses)
                   + f" (medians of {rounds_text} paired rounds, [95 % CI] in seconds).")


def largest_part(summary: pd.DataFrame) -> Finding | None:
    """(b) The overhead's largest part per executor, named in words, with its share."""
    summary = _single(summary)
    picks = []  # (executor, part, its figure, the total)
    for executor in _executors(summary):
        rows = _of(summary, executor)
        parts = {c: _sum(rows, c) for c in PART_NAMES if _ok(_sum(rows, c))}
        total = _sum(rows, "total_overhead_s")
        if not parts or not (_ok(total) and total > 0):
            continue
        name, value = max(parts.items(), key=lambda kv: kv[1])
        ci = _ci(rows.iloc[0], name) if name == "compute_inflation_s" and len(rows) == 1 \
            else ""
        share = value / total
        notes = [_share(share)] + (["dominant"] if share >= DOMINANT_SHARE else []) + (
            [f"summed over {len(rows)} configurations"] if len(rows) > 1 else [])
        picks.append((executor, name, f"{_num(value, False)} s{ci} of", f"{_num(total, False)} s "
                                      f"({', '.join(notes)})"))
    if not picks:
        return None
    if len({name for _, name, _, _ in picks}) == 1 and len(picks) > 1:
        text = (f"The overhead's largest part on every executor is {PART_NAMES[picks[0][1]]}: "
                + ", ".join(f"{part} {_x(executor)}'s {total}"
                            for executor, _, part, total in picks))
    else:
        text = "The overhead's largest part " + "; ".join(
            f"on {_x(executor)} is {PART_NAMES[name]}, {part} {total}" if i == 0 else
            f"on {_x(executor)}, {PART_NAMES[name]}, {part} {total}"
            for i, (executor, name, part, total) in enumerate(picks))
    return Finding(LARGEST_PART, text + ".")


def _ratio(cov: float, plain: float) -> float:
    return cov / plain if _ok(cov) and _ok(plain) and plain > 0 else float("nan")


def _malloc(env: object) -> str | None:
    match = re.search(rf"{MALLOC_VAR}=([^;|\s]+)", str(env or ""))
    return match.group(1) if match else None


def _evidence(rows: pd.DataFrame) -> dict[str, object]:
    """What the tasks did, plain -> Covalent, summed over the rows."""
    envs = rows["covalent_task_env"] if "covalent_task_env" in rows else pd.Series(dtype=str)
    threads = {(str(r.get("plain_threads", "")), str(r.get("covalent_threads", "")))
               for _, r in rows.iterrows()}
    return {
        "cpu": _ratio(_sum(rows, "covalent_in_task_cpu_s"), _sum(rows, "plain_in_task_cpu_s")),
        "faults": _ratio(_sum(rows, "covalent_in_task_page_faults"),
                         _sum(rows, "plain_in_task_page_faults")),
        "plain_sys": _ratio(_sum(rows, "plain_in_task_sys_cpu_s"),
                            _sum(rows, "plain_in_task_cpu_s")),
        "cov_sys": _ratio(_sum(rows, "covalent_in_task_sys_cpu_s"),
                          _sum(rows, "covalent_in_task_cpu_s")),
        "malloc": next((v for v in map(_malloc, envs) if v), None),
        "threads": {t for t in threads if t[0] != t[1] and t[0] and t[1] and "nan" not in t},
    }


def _allocator(ev: dict) -> bool:
    return _ok(ev["faults"]) and ev["faults"] >= ALLOCATOR_FAULT_RATIO


def _measured(ev: dict) -> str:
    """The evidence in figures: CPU, kernel share and page faults, Covalent vs plain."""
    out = [f"CPU time {ev['cpu']:.2f}×"] if _ok(ev["cpu"]) else []
    if _ok(ev["cov_sys"]) and _ok(ev["plain_sys"]):
        out.append(f"kernel share {_share(ev['plain_sys'])} → {_share(ev['cov_sys'])}")
    if _ok(ev["faults"]):
        out.append(f"{ev['faults']:,.0f}× the page faults")
    return ", ".join(out)


def _cause(ev: dict) -> str:
    """What the task-work evidence points to, in words (with the known remedy)."""
    cpu = ev["cpu"]
    if _allocator(ev) and not (_ok(cpu) and cpu < CPU_FLAT_RATIO):
        text = "the memory allocator"
        if ev["malloc"]:
            text += (f", under `{MALLOC_VAR}={ev['malloc']}` set by Dask's nanny (remedy: "
                     f"start the server with `DASK_CONFIG=$PWD/{REMEDY_FILE}`)")
        return text
    if _ok(cpu) and cpu < CPU_FLAT_RATIO:
        if ev["threads"]:
            plain = _join(sorted({t[0] for t in ev["threads"]}))
            cov = _join(sorted({t[1] for t in ev["threads"]}))
            return f"fewer threads (torch threads: plain {plain}, Covalent {cov})"
        return "waiting for CPU shared with the server and its workers (contention)"
    if _ok(cpu):
        return "the same code doing more work"
    return "no task-level CPU data says why"


def compute_inflation(summary: pd.DataFrame) -> Finding | None:
    """(c) Whether compute inflation dominates the overhead, and what the evidence says."""
    summary = _single(summary)
    heavy, minor, unsure = [], [], []
    for executor in _executors(summary):
        rows = _of(summary, executor)
        rows = rows[_col(rows, "compute_inflation_s").notna()]
        if rows.empty:
            continue
        value, total = _sum(rows, "compute_inflation_s"), _sum(rows, "total_overhead_s")
        share = value / total if _ok(total) and total > 0 else float("nan")
        one = rows.iloc[0]
        vague = len(rows) == 1 and _spans_zero(one, "compute_inflation_s")
        figure = f"{_num(value)} s" + (_ci(one, "compute_inflation_s") if len(rows) == 1
                                       else f" over {len(rows)} configurations")
        figure += " (not distinguishable from 0)" if vague else ""
        per = _col(rows, "compute_inflation_s") / _col(rows, "total_overhead_s")
        n_dominant = int((per >= DOMINANT_SHARE).sum())
        entry = {"executor": executor, "figure": figure, "share": share,
                 "ev": _evidence(rows), "dominant_in": n_dominant if len(rows) > 1 else None}
        large = _ok(share) and share >= MINOR_SHARE
        (unsure if vague and large else heavy if large else minor).append(entry)
    if not heavy and not minor and not unsure:
        return None
    if unsure and not heavy:
        # A large share whose CI spans 0: neither "dominant" nor "minor" can be said.
        return Finding(INFLATION, (
            "Compute inflation (the tasks' own time, Covalent − plain) cannot be told from "
            "zero yet (" + "; ".join(f"{_x(u['executor'])} {u['figure']}" for u in unsure)
            + f"), though its median is {_share(max(u['share'] for u in unsure))} of the "
            "overhead: whether the tasks ran slower under Covalent is open; more rounds "
            f"(`--bench-set rounds={SUGGESTED_ROUNDS}`) would tell."))
    if heavy:
        by_cause: dict[str, list[str]] = {}
        for e in heavy:
            what = "dominates" if e["share"] >= DOMINANT_SHARE else "is a large part"
            notes = [f"{_share(e['share'])} of the overhead"]
            if e["dominant_in"]:
                notes.append(f"dominant in {e['dominant_in']} configurations")
            if _measured(e["ev"]):
                notes.append(_measured(e["ev"]))
            by_cause.setdefault(_cause(e["ev"]), []).append(
                f"{what} on {_x(e['executor'])}: {e['figure']} ({'; '.join(notes)})")
        text = "Compute inflation " + "; ".join(
            f"{' and '.join(clauses)}: {cause}" if i == 0 else
            f"it {' and '.join(clauses)}: {cause}"
            for i, (cause, clauses) in enumerate(by_cause.items())) + "."
        if minor:
            text += " Elsewhere it is minor (" + "; ".join(
                f"{_x(m['executor'])} {m['figure']}" for m in minor) + ")."
        return Finding(INFLATION, text)
    shares = [m["share"] for m in minor if _ok(m["share"])]
    top = max(shares, default=float("nan"))
    most = "" if not _ok(top) else "; under 1 % of the overhead" if top < 0.005 else (
        f"; at most {_share(top)} of the overhead")
    text = ("Compute inflation (the tasks' own time, Covalent − plain) is minor ("
            + "; ".join(f"{_x(m['executor'])} {m['figure']}" for m in minor) + most
            + "): the cost is orchestration, not slower tasks")
    suspects = [m for m in minor if _allocator(m["ev"]) and m["ev"]["malloc"]]
    if suspects:
        ev, executor = suspects[0]["ev"], suspects[0]["executor"]
        text += (f", though {_x(executor)}'s tasks ran under Dask's `{MALLOC_VAR}="
                 f"{ev['malloc']}` with {ev['faults']:,.0f}× the page faults, which slows "
                 f"allocation-heavy tasks (remedy: `{REMEDY_FILE}`)")
    return Finding(INFLATION, text + ".")


def cheapest(summary: pd.DataFrame) -> Finding | None:
    """(d) For a matrix or sweep: the cheapest configuration, in seconds and relative to
    the plain run's time."""
    if summary["config_id"].nunique() < 2:
        return None
    rows = _single(summary)
    rows = rows[_col(rows, "total_overhead_s").notna()]
    if rows.empty:
        return None
    lo = rows.sort_values("total_overhead_s").iloc[0]
    text = (f"Cheapest configuration: `{lo['config_id']}` on {_x(lo['executor'])}, "
            f"**{_num(lo['total_overhead_s'])} s**{_ci(lo, 'total_overhead_s')} "
            f"({_relative(lo)})")
    rel = rows[_col(rows, "total_overhead_pct").notna()]
    if len(rel):
        best = rel.sort_values("total_overhead_pct").iloc[0]
        if best["config_id"] != lo["config_id"] or best["executor"] != lo["executor"]:
            text += (f"; least relative to the work: `{best['config_id']}` on "
                     f"{_x(best['executor'])}, {_relative(best)} "
                     f"({_num(best['total_overhead_s'])} s{_ci(best, 'total_overhead_s')})")
    return Finding(CHEAPEST, text + ".", optional=True)


def _scale(unit: object) -> float:
    """fits.csv's unit says what one x unit is: `s per 1000 train_samples` -> 1000."""
    match = re.search(r"per (\d+)", str(unit))
    return float(match.group(1)) if match else 1.0


def _round3(value: float) -> str:
    """Three significant digits, without exponents: 28,700; 19.4; 0.0123."""
    if not value:
        return "0"
    digits = max(0, 2 - int(math.floor(math.log10(abs(value)))))
    text = f"{float(f'{value:.3g}'):,.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _slope(value: float) -> str:
    return f"{value:+.2g}".replace("-", "−")


def _span(values: list[float], fmt) -> str:
    """`a to b`, or `a` when both ends read the same."""
    low, high = fmt(min(values)), fmt(max(values))
    return low if low == high else f"{low} to {high}"


def _swept_max(summary: pd.DataFrame | None, workload: object, x: str) -> float:
    """The largest value of `x` the workload's configurations ran with."""
    if summary is None or x not in summary:
        return float("nan")
    rows = summary[summary["workload"].astype(str) == str(workload)] \
        if "workload" in summary else summary
    return float(pd.to_numeric(rows[x], errors="coerce").max())


def payoff(fits: pd.DataFrame, summary: pd.DataFrame | None = None) -> Finding | None:
    """(d) From the fitted lines of total overhead against a swept parameter: where
    Covalent pays off (the line crosses zero), or that it never does. A crossing beyond
    EXTRAPOLATION × the largest value swept is reported as an extrapolation."""
    needed = {"workload", "executor", "x", "y", "intercept_s", "slope_s_per_unit", "unit"}
    if fits is None or fits.empty or not needed <= set(fits):
        return None
    lines = fits[(fits["y"] == "total_overhead_s") & (fits["x"] != "bytes_moved")]
    if lines.empty:
        return None
    several = lines["workload"].nunique() > 1
    clauses = []  # (has a payoff, clause)
    for x, group in lines.groupby("x", sort=False):
        scale = _scale(group["unit"].iloc[0])
        per = f"per {scale:g} `{x}`" if scale != 1 else f"per `{x}`"
        pays, always, never = [], [], []
        for fit in group.itertuples():
            slope, icpt = fit.slope_s_per_unit, fit.intercept_s
            err = fit.slope_stderr if _ok(getattr(fit, "slope_stderr", None)) else 0.0
            where = (f"`{fit.workload}` on " if several else "") + _x(fit.executor)
            line = f"{_num(icpt)} s {'−' if slope < 0 else '+'} {abs(slope):.2g} s {per}"
            if slope + SLOPE_Z * err < 0 and icpt > 0:
                cross = -icpt / slope * _scale(fit.unit)
                top = _swept_max(summary, fit.workload, x)
                beyond = _ok(top) and cross > EXTRAPOLATION * top
                pays.append((cross, beyond, top, where, line))
            elif icpt <= 0 and slope <= 0:
                always.append(where)
            else:
                never.append((icpt, slope))
        parts = []
        if pays:
            cross, beyond, top, where, line = min(pays)
            text = f"along `{x}` Covalent pays off from {x} ≈ {_round3(cross)} on {where} ({line}"
            text += f"; an extrapolation: swept up to {top:,.3g})" if beyond else ")"
            if len(pays) > 1:
                text += f" and in {len(pays) - 1} more fit{'s' * (len(pays) > 2)}"
            parts.append(text)
        if always:
            parts.append(f"Covalent is cheaper than plain at every `{x}` on {_join(always)}")
        if never:
            icpts, slopes = [n[0] for n in never], [n[1] for n in never]
            text = (f"{len(never)} fit{'s' * (len(never) > 1)} along `{x}` never "
                    f"pay{'s' * (len(never) == 1)} off" if pays or always else
                    f"along `{x}` Covalent never pays off ({len(never)} "
                    f"fit{'s' * (len(never) > 1)})")
            text += (f": the overhead is {_span(icpts, _num)} s plus "
                     f"{_span(slopes, _slope)} s {per}")
            parts.append(text)
        rank = 2 if not pays else 1 if min(pays)[1] else 0
        clauses.append((rank, "; ".join(parts)))
    clauses.sort(key=lambda c: c[0])  # where it pays off within the sweep first
    shown = [c for _, c in clauses[:MAX_PAYOFF_PARAMETERS]]
    more = len(clauses) - len(shown)
    text = "From the fitted lines (fits.csv): " + "; ".join(shown)
    if more:
        text += f"; {more} more swept parameter{'s' * (more > 1)} in fits.csv"
    return Finding(PAYOFF, text[0].upper() + text[1:] + ".")


def same_work(summary: pd.DataFrame) -> Finding | None:
    """(e) Whether both modes did the same work (output digests) on like terms."""
    if "same_output" not in summary:
        return None
    same = summary["same_output"].astype(bool)
    det = summary["deterministic"].astype(bool) if "deterministic" in summary \
        else pd.Series(True, index=summary.index)
    n = len(summary)
    if not det.all():
        odd = ", ".join(f"`{c}`" for c in summary.loc[~det, "config_id"].unique())
        text = (f"Same work could not be checked for {odd}: its runs returned other values "
                "from one round to the next within a mode (the workflow is not deterministic: "
                "unseeded randomness, say), so plain and Covalent cannot be compared value for "
                "value")
        if det.any() and same[det].all():
            text += "; every other configuration returned the same value in both modes"
    elif same.all():
        text = (f"Both modes did the same work: every run returned the same output digest "
                f"({n} configuration × executor pair{'s' if n != 1 else ''})")
    else:
        bad = "; ".join(f"`{r.config_id}` on {_x(r.executor)}"
                        for r in summary[~same].itertuples())
        text = f"**Covalent returned other values than plain** for {bad}"
    if "comparable" in summary and not summary["comparable"].astype(bool).all():
        odd = "; ".join(f"`{r.config_id}` on {_x(r.executor)}"
                        for r in summary[~summary["comparable"].astype(bool)].itertuples())
        text += (f"; {odd} ran with other torch thread counts or devices than plain, so "
                 "its overhead includes that difference")
    return Finding(SAME_WORK, text + ".")


def _halfwidth(row: pd.Series, metric: str) -> float:
    low, high = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
    return (high - low) / 2 if _ok(low) and _ok(high) else float("nan")


def precision(summary: pd.DataFrame) -> Finding | None:
    """(f) Whether the precision target was met (where summary.csv has one); without a
    target, a hint when the CIs are wide."""
    target_col = next((c for c in PRECISION_TARGET_COLUMNS
                       if c in summary and _col(summary, c).notna().any()), None)
    if target_col is None and PRECISION_MET_COLUMN not in summary:
        return _wide_ci_hint(summary)
    many = summary["config_id"].nunique() > 1
    met, missed, metrics = [], [], set()
    for _, row in summary.iterrows():
        named = row.get(PRECISION_METRIC_COLUMN)
        metric = next((m for m in (named, *PRECISION_DEFAULT_METRICS)
                       if _ok(m) and _ok(_halfwidth(row, str(m)))), PRECISION_DEFAULT_METRICS[0])
        half = _halfwidth(row, metric)
        target = row.get(target_col) if target_col else None
        reached = row.get(PRECISION_MET_COLUMN)
        if not _ok(reached):
            if not (_ok(half) and _ok(target)):
                continue
            reached = half <= target
        notes = [f"target ±{_num(target, False)} s"] if _ok(target) else []
        rounds = row.get("covalent_rounds")
        notes += [f"{int(rounds)} rounds"] if _ok(rounds) else []
        figure = _where(row, many) + (f" ±{_num(half, False)} s" if _ok(half) else "") + (
            f" ({', '.join(notes)})" if notes else "")
        metrics.add(metric)
        (met if str(reached).lower() in ("true", "1", "1.0") else missed).append(figure)
    if not met and not missed:
        return None
    parts = (["met for " + "; ".join(met)] if met else []) + (
        ["**not met** for " + "; ".join(missed)] if missed else [])
    names = ", ".join(f"`{m}`" for m in sorted(metrics))
    return Finding(PRECISION, f"Precision target (95 % CI half-width of {names}): "
                   + "; ".join(parts) + ".")


def _wide_ci_hint(summary: pd.DataFrame) -> Finding | None:
    halves = pd.Series([_halfwidth(r, "total_overhead_s") for _, r in summary.iterrows()],
                       index=summary.index)
    wide = halves[halves > WIDE_CI_S]
    if wide.empty:
        return None
    worst = summary.loc[wide.idxmax()]
    rounds = worst.get("covalent_rounds")
    after = f" after {int(rounds)} rounds" if _ok(rounds) else ""
    where = _where(worst, summary["config_id"].nunique() > 1)
    return Finding(PRECISION, (
        f"The CIs are wide (up to ±{_num(wide.max(), False)} s on {where}{after}): more "
        f"rounds narrow them (`--bench-set rounds={SUGGESTED_ROUNDS}`; "
        f"`--bench-precision 0.5` adds rounds until orchestration's CI is ±0.5 s)."),
        optional=True)


def probe_cost(cost: pd.DataFrame | None) -> Finding | None:
    """The harness's own measuring cost, only where it is significant (its CI excludes 0):
    probed run - bare run of the same round (bench.analysis.decompose.probe_cost)."""
    if cost is None or cost.empty:
        return None
    hits = cost[cost["significant"].astype(bool)]
    if hits.empty:
        return None
    parts = [f"{_x(r.executor)} {r.metric.removesuffix('_s')} {_num(r.cost_s)} s "
             f"[{_num(r.cost_ci_low)}, {_num(r.cost_ci_high)}] ({r.cost_pct:+.1f} %)"
             for r in hits.itertuples()]
    return Finding(PROBE_COST, "The in-task probes themselves cost: " + _join(parts)
                   + " (probed − bare run of the same round; the figures above include it).",
                   optional=True)


def prediction(predicted: pd.DataFrame | None) -> Finding | None:
    """What the envelope predicted for the session's graphs against what was measured
    (bench.analysis.envelope.measured_against_predicted)."""
    if predicted is None or predicted.empty or "predicted_orchestration_s" not in predicted:
        return None
    rows = predicted.dropna(subset=["predicted_orchestration_s"])
    if rows.empty:
        return None
    inside = int(rows["inside_interval"].astype(bool).sum())
    low, high = rows["error_pct"].min(), rows["error_pct"].max()
    spread = (f"{low:+.0f} %" if round(low) == round(high)
              else f"{low:+.0f} to {high:+.0f} %").replace("-", "−")
    return Finding(PREDICTION, (
        f"The envelope predicted {_range(rows['predicted_orchestration_s'])} s of "
        f"orchestration for this graph, {spread} off the "
        f"{_range(rows['measured_orchestration_s'])} s measured ({len(rows)} release × "
        f"executor pairs); {inside} of {len(rows)} measurements fall inside its 95 % "
        f"interval (*Predicted from the envelope*)."), optional=True)


def _range(values: pd.Series) -> str:
    low, high = _num(values.min(), False), _num(values.max(), False)
    return low if low == high else f"{low}–{high}"

