"""Covalent's envelope: orchestration as a model of what a graph holds, fitted per
environment and executor on the `envelope` profile's sweep (bench/config/envelope.toml), and
used to predict a user's graph (`python -m bench predict`).

The features of a graph come from its census (bench.adapters.covalent_api.graph_census: one
plain run and the client's graph builds), the same for the sweep's graphs and a user's:
  * dispatches: 1 + the sublattices it runs (each is a dispatch of its own). One term for
    the run's and each sublattice's dispatch: fitted apart (a constant and a cost per
    sublattice), the sublattice's cost rests on the sweep's 3 nested graphs alone, and on
    2026-12-03 it swung from -0.06 to -0.76 s between two envelopes (0.240.0 local), taking
    examples.sublattice's prediction from -14 % to -44 %; one term is pinned by every graph;
  * nodes: every node of every graph built (tasks, parameters, the list and postprocess
    nodes Covalent generates), each a row in the server's database and a unit of its
    scheduling;
  * edges: every edge of those graphs;
  * mb: the serialized bytes of the tasks' outputs and of the parameters' values, in MB:
    what is uploaded, stored and moved;
  * depth: the most nodes that must run one after another (the longest path): what the
    dispatcher's round trips from one finished node to the next start add up along. Without
    it (2026-12-02, 0.240.0) every fan-out of the sweep lay 12-25 % below the fit and every
    chain 9-19 % above it: nodes, edges and MB do not say how many levels run in sequence.
Orchestration per run = Covalent wall - the tasks' own time (bench.analysis.decompose).

The fit is weighted least squares through the origin (`dispatches` is >= 1, so it carries
the per-dispatch constant), with weights 1 / fitted^2: on this server the noise of a run
grows with its size, so a 300 s run's residual must not outweigh a 3 s run's. Coefficient
CIs are heteroscedasticity-robust (HC3); the fit's quality is R^2 and the median of
|residual| / fitted. A prediction's interval is the model's 95 % interval for one new run.

The host drifts: the same 10-task fan-out took 6.1-7.5 s in one session and 4.8-5.3 s an
hour later (2026-12-03), so an envelope carries its session's speed into every prediction.
A session run with `--bench-reference` also measures the sweep's reference graph
(GraphWorkload.reference); its rounds against the fit's prediction for that graph give a
scale (geometric mean, t CI) that multiplies the prediction, and the scale's CI widens the
interval (measured_against_predicted, reference_scale).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bench.workloads.base import CENSUS_KEYS
from bench.workloads.tasks import GraphWorkload

FEATURES = ("dispatches", "nodes", "edges", "mb", "depth")
SWEEP_WORKLOAD = GraphWorkload.name  # the envelope's own graphs
ENVELOPE_RUNS_CSV = "envelope_runs.csv"  # what the report writes of a sweep: enough to predict
UNITS = {"dispatches": "s per dispatch", "nodes": "s per node", "edges": "s per edge",
         "mb": "s per MB", "depth": "s per level of depth"}


def features(census: Mapping[str, float]) -> dict[str, float]:
    """The model's features of one graph, from its census."""
    return {"dispatches": 1.0 + float(census["sublattices"]),
            "nodes": float(census["nodes"]), "edges": float(census["edges"]),
            "mb": stored_bytes(census) / 1e6,
            "depth": float(census["depth"])}


def stored_bytes(census: Mapping[str, float]) -> float:
    """The serialized bytes Covalent stores for a graph: every node's output and value."""
    return (float(census["output_bytes"]) + float(census["input_bytes"])
            + float(census["generated_bytes"]))


def censuses(runs: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Each configuration's census, from the runs that carry it (runs.csv `outputs`: a
    workload that takes a census records it with its plain runs)."""
    found: dict[str, dict[str, int]] = {}
    if "outputs" not in runs:
        return found
    for config_id, text in runs[["config_id", "outputs"]].dropna().itertuples(index=False):
        outputs = json.loads(text)
        if all(k in outputs for k in CENSUS_KEYS):
            found[config_id] = {k: outputs[k] for k in (*CENSUS_KEYS, "estimated",
                                                         "estimate_reason") if k in outputs}
    return found


def _split_executor(rounds: pd.DataFrame) -> pd.DataFrame:
    """round_estimates' `executor` ("ENV:EXECUTOR" side by side) as environment, executor."""
    env_exec = rounds["executor"].str.rsplit(":", n=1)
    return rounds.assign(environment=env_exec.str[0].where(env_exec.str.len() > 1, ""),
                         executor=env_exec.str[-1])


def envelope_runs(rounds: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per measured Covalent round of the sweep: environment, executor,
    config_id, orchestration_s, the census and the features.

    `rounds`: bench.analysis.decompose.round_estimates; `runs`: runs.csv, whose `outputs`
    carry each configuration's census (the `graph` workload records it)."""
    census = censuses(runs[runs["workload"] == SWEEP_WORKLOAD] if "workload" in runs else runs)
    done = rounds[rounds["config_id"].isin(census) & rounds["orchestration_s"].notna()]
    if done.empty:
        return pd.DataFrame()
    out = _split_executor(done).reset_index(drop=True)
    versions = covalent_versions(runs)
    out["covalent"] = [versions.get(env, "") for env in out["environment"]]
    rows = [{**census[c], **features(census[c])} for c in out["config_id"]]
    return pd.concat([out[["environment", "covalent", "executor", "config_id", "round",
                           "orchestration_s"]], pd.DataFrame(rows)], axis=1)


def covalent_versions(runs: pd.DataFrame) -> dict[str, str]:
    """Each environment's Covalent release, as its Covalent runs recorded it (runs.csv
    `environment`, `covalent`; "" is this interpreter's)."""
    cov = runs[runs["mode"] == "covalent"] if "mode" in runs else runs.iloc[0:0]
    if cov.empty or "covalent" not in cov:
        return {}
    env = cov["environment"].fillna("").astype(str) if "environment" in cov else ""
    return dict(zip(env, cov["covalent"].astype(str), strict=False))


@dataclass(frozen=True)
class StoredEnvelope:
    """An envelope session's sweep, read from its records, to predict other graphs with."""

    source: str  # where it was read from
    sweep: pd.DataFrame  # envelope_runs
    versions: dict[str, str]  # environment -> its Covalent release


def stored_envelope(directory: str | Path) -> StoredEnvelope:
    """The envelope recorded in `directory`: an `envelope` session's --bench-out (its
    runs.csv and phases.csv), or a report's folder with only its envelope_runs.csv (such as
    reports/sample-envelope). Raises NoRecordsError when it holds no measured run of the
    `graph` workload."""
    from bench.analysis.decompose import round_estimates
    from bench.records import RUNS_CSV, NoRecordsError, load_phases, load_runs

    table = Path(directory) / ENVELOPE_RUNS_CSV
    if not (Path(directory) / RUNS_CSV).is_file() and table.is_file():
        sweep = pd.read_csv(table, dtype={"environment": str, "covalent": str},
                            keep_default_na=False)
        if sweep.empty or not {"covalent", *CENSUS_KEYS} <= set(sweep):
            raise NoRecordsError(f"{table}: no rows, or not every column of a census "
                                 f"({', '.join(CENSUS_KEYS)}) and `covalent` (one written "
                                 f"before `generated_bytes` was counted lacks it); measure "
                                 f"the envelope again (`--bench-profile envelope`)")
        # The features from the census, as this model defines them (not as when written).
        sweep = sweep.assign(**pd.DataFrame([features(c) for c in
                                             sweep[list(CENSUS_KEYS)].to_dict("records")]))
        return StoredEnvelope(str(directory), sweep,
                              dict(zip(sweep["environment"], sweep["covalent"], strict=False)))
    runs = load_runs(directory)
    sweep = envelope_runs(round_estimates(runs, load_phases(directory)), runs)
    if sweep.empty:
        raise NoRecordsError(f"{directory}: no measured run of the `graph` workload with a "
                             f"census that has every key ({', '.join(CENSUS_KEYS)}; one "
                             f"recorded before `generated_bytes` was counted lacks it); run "
                             f"`pytest bench --benchmark-only --bench-profile envelope "
                             f"--bench-out {directory}` first")
    return StoredEnvelope(str(directory), sweep, covalent_versions(runs))


def _reference_id() -> str:
    graph = GraphWorkload()
    return graph.config_id(graph.check(graph.reference))


@dataclass(frozen=True)
class Scale:
    """How fast Covalent ran the reference graph in a session against the envelope's fit."""

    point: float  # geometric mean of measured / predicted over the reference's rounds
    low: float  # its 95 % CI (t on the logs; the point itself with one round)
    high: float
    rounds: int


def reference_scale(ratios: np.ndarray) -> Scale:
    """The scale from the reference's rounds, each as measured / predicted orchestration."""
    logs = np.log(np.asarray(ratios, float))
    mean = float(logs.mean())
    if len(logs) < 2:
        return Scale(float(np.exp(mean)), float(np.exp(mean)), float(np.exp(mean)), len(logs))
    half = float(stats.t.ppf(0.975, len(logs) - 1) * logs.std(ddof=1) / np.sqrt(len(logs)))
    return Scale(float(np.exp(mean)), float(np.exp(mean - half)), float(np.exp(mean + half)),
                 len(logs))


def measured_against_predicted(rounds: pd.DataFrame, runs: pd.DataFrame,
                               envelope: StoredEnvelope) -> pd.DataFrame:
    """One row per configuration, environment and executor of a session whose runs carry a
    census (not the envelope's own graphs): the median measured orchestration, the
    envelope's prediction for the same Covalent release and executor with its 95 % interval,
    and how far the point was off.

    The fit used is the envelope environment of the same name if it runs the same release,
    else the first one that runs it; without one, the row says so (no prediction). Where the
    session ran the reference graph (--bench-reference), the prediction is scaled by the
    session's speed: point x scale, interval [low x scale low, high x scale high];
    `unscaled_predicted_s` keeps the envelope's own. The scale pools every reference round
    of the session, each against the fit of its own release and executor: the host's speed
    moves them alike (2026-12-03, two sessions: 0.75-0.77 and 0.70-0.76 on all four of
    0.240.0 / 0.238.0 x local / dask), and 3 rounds of one would leave a CI of x0.5-x1.2."""
    own = runs[runs["workload"] != SWEEP_WORKLOAD] if "workload" in runs else runs
    found = {k: v for k, v in censuses(own).items()
             if k not in set(envelope.sweep["config_id"])}
    if not found or "orchestration_s" not in rounds:  # no census, or no phases.csv
        return pd.DataFrame()
    done = _split_executor(rounds[rounds["orchestration_s"].notna()])
    here = covalent_versions(runs)
    by_fit = {(f.environment, f.executor): f for f in fits(envelope.sweep)}

    def fit_for(environment: str, executor: str) -> EnvelopeFit | None:
        release = here.get(environment, "")
        names = [e for e, v in envelope.versions.items() if v == release]
        names.sort(key=lambda e: e != environment)
        return next((by_fit[(e, executor)] for e in names if (e, executor) in by_fit), None)

    scale = _session_scale(done, runs, fit_for)
    done = done[done["config_id"].isin(found)]
    if done.empty:
        return pd.DataFrame()
    measured = done.groupby(["config_id", "environment", "executor"], sort=False)[
        "orchestration_s"].agg(["median", "size"]).reset_index()
    rows = []
    for row in measured.itertuples(index=False):
        release = here.get(row.environment, "")
        chosen = fit_for(row.environment, row.executor)
        out = {"config_id": row.config_id, "environment": row.environment,
               "executor": row.executor, "covalent": release, "rounds": int(row.size),
               "measured_orchestration_s": float(row.median)}
        if chosen is None:
            out["note"] = (f"the envelope has no fit for covalent {release or '?'} "
                           f"[{row.executor}]")
        else:
            point, low, high = chosen.predict(features(found[row.config_id]))
            out.update({"envelope_environment": chosen.environment,
                        "unscaled_predicted_s": point, "note": ""})
            if scale is not None:
                point, low, high = point * scale.point, low * scale.low, high * scale.high
                out.update({"reference_scale": scale.point, "reference_scale_low": scale.low,
                            "reference_scale_high": scale.high,
                            "reference_rounds": scale.rounds})
            else:
                out["note"] = ("not scaled to this session's speed: run it with "
                               "--bench-reference")
            out.update({"predicted_orchestration_s": point, "interval_low_s": low,
                        "interval_high_s": high,
                        "error_pct": 100 * (point - row.median) / row.median,
                        "inside_interval": bool(low <= row.median <= high)})
        if found[row.config_id].get("estimated"):  # from the graph alone: say so
            out["note"] = (f"{out['note']}; " if out["note"] else "") + (
                f"census estimated from the graph ({found[row.config_id]['estimate_reason']})")
        rows.append({**out, **features(found[row.config_id])})
    return pd.DataFrame(rows)


def _session_scale(done: pd.DataFrame, runs: pd.DataFrame,
                   fit_for: Callable[[str, str], EnvelopeFit | None]) -> Scale | None:
    """The session's speed against the envelope's (see measured_against_predicted), from its
    reference graph's rounds (`done`: round estimates with environment and executor), or
    None when it ran no reference the envelope has a fit for."""
    ref_id = _reference_id()
    ref_runs = runs[(runs["workload"] == SWEEP_WORKLOAD) & (runs["config_id"] == ref_id)] \
        if "workload" in runs else runs.iloc[0:0]
    census = censuses(ref_runs).get(ref_id)
    if census is None:
        return None
    ratios: list[float] = []
    for (environment, executor), rows in done[done["config_id"] == ref_id].groupby(
            ["environment", "executor"], sort=False):
        chosen = fit_for(environment, executor)
        if chosen is not None:
            ratios += list(rows["orchestration_s"] / chosen.predict(features(census))[0])
    return reference_scale(np.array(ratios)) if ratios else None


@dataclass(frozen=True)
class EnvelopeFit:
    """The fitted model of one environment and executor."""

    environment: str
    executor: str
    coefficients: dict[str, tuple[float, float, float]]  # feature -> (estimate, CI low, high)
    r2: float
    median_rel_error: float  # median |residual| / fitted over the sweep's runs
    runs: int
    model: object  # the statsmodels results (predictions)

    def predict(self, feats: Mapping[str, float]) -> tuple[float, float, float]:
        """(point, 95 % interval low, high) of one new run's orchestration, in seconds."""
        x = np.array([[feats[f] for f in FEATURES]])
        point = float(self.model.predict(x)[0])
        weight = 1 / max(point, 1e-3) ** 2
        frame = self.model.get_prediction(x, weights=np.array([weight])).summary_frame(0.05)
        return point, float(frame["obs_ci_lower"].iloc[0]), float(frame["obs_ci_upper"].iloc[0])


def fit(sweep: pd.DataFrame, environment: str, executor: str) -> EnvelopeFit:
    """The weighted least-squares fit of one environment's and executor's runs (see above)."""
    import statsmodels.api as sm

    rows = sweep[(sweep["environment"] == environment) & (sweep["executor"] == executor)]
    x, y = rows[list(FEATURES)].to_numpy(float), rows["orchestration_s"].to_numpy(float)
    if len(rows) <= len(FEATURES):
        raise ValueError(f"{environment or 'this'} [{executor}]: {len(rows)} runs, too few to "
                         f"fit {len(FEATURES)} coefficients; run the whole envelope profile")
    if not _determined(x):
        raise ValueError(f"{environment or 'this'} [{executor}]: the sweep's graphs do not vary "
                         f"{', '.join(FEATURES)} independently of one another, so their costs "
                         f"cannot be told apart; run the whole envelope profile")
    first = sm.OLS(y, x).fit()
    weights = 1 / np.clip(np.abs(first.fittedvalues), 0.1, None) ** 2
    model = sm.WLS(y, x, weights=weights).fit(cov_type="HC3")
    ci = model.conf_int(0.05)
    coefficients = {f: (float(model.params[i]), float(ci[i][0]), float(ci[i][1]))
                    for i, f in enumerate(FEATURES)}
    fitted = model.fittedvalues
    rel = np.abs(y - fitted) / np.clip(np.abs(fitted), 1e-3, None)
    return EnvelopeFit(environment, executor, coefficients, float(model.rsquared),
                       float(np.median(rel)), len(rows), model)


def _determined(x: np.ndarray) -> bool:
    """Whether the features' columns are independent (each coefficient is identified)."""
    return int(np.linalg.matrix_rank(x / np.clip(np.abs(x).max(axis=0), 1e-12, None))) \
        == x.shape[1]


def fits(sweep: pd.DataFrame) -> list[EnvelopeFit]:
    """One fit per environment and executor of the sweep that has enough runs, and graphs
    that vary enough to tell each feature's cost apart."""
    out = []
    for (env, executor), rows in sweep.groupby(["environment", "executor"], sort=False):
        if len(rows) > len(FEATURES) and _determined(rows[list(FEATURES)].to_numpy(float)):
            out.append(fit(sweep, env, executor))
    return out


def coefficient_table(found: list[EnvelopeFit]) -> pd.DataFrame:
    """envelope.csv: one row per environment, executor and coefficient."""
    return pd.DataFrame([
        {"environment": f.environment, "executor": f.executor, "feature": name,
         "unit": UNITS[name], "estimate": est, "ci_low": low, "ci_high": high,
         "r2": f.r2, "median_rel_error": f.median_rel_error, "runs": f.runs}
        for f in found for name, (est, low, high) in f.coefficients.items()])


# Growth worse than linear: along the sweep's task-count series (graphs that differ only in
# their number of tasks), the exponent k of orchestration - its smallest graph's against
# the nodes added (log-log least squares, with its 95 % CI). k > 1 with the CI above 1 is
# superlinear, and the sentence says how the cost of one more node moved.
@dataclass(frozen=True)
class Growth:
    environment: str
    executor: str
    series: str
    exponent: float
    ci: tuple[float, float]
    first: tuple[int, float]  # (nodes, seconds per added node) at the smallest n > base
    last: tuple[int, float]

    @property
    def superlinear(self) -> bool:
        return self.ci[0] > 1

    def sentence(self) -> str:
        verdict = ("grows worse than linearly" if self.superlinear else
                   "grows no worse than linearly" if self.ci[1] <= 1 or self.exponent <= 1
                   else "may grow worse than linearly (not significant)")
        return (f"{self.environment + ' ' if self.environment else ''}[{self.executor}] "
                f"{self.series}: orchestration {verdict} in the number of nodes (exponent "
                f"{self.exponent:.2f}, 95 % CI {self.ci[0]:.2f}..{self.ci[1]:.2f}); the cost "
                f"of one more node goes from {self.first[1]:.3f} s at {self.first[0]} nodes to "
                f"{self.last[1]:.3f} s at {self.last[0]}")


def growth(sweep: pd.DataFrame, series: Mapping[str, list[str]]) -> list[Growth]:
    """Per environment, executor and named series (config_ids in order of size)."""
    out = []
    for (env, executor), rows in sweep.groupby(["environment", "executor"], sort=False):
        med = rows.groupby("config_id").agg(nodes=("nodes", "first"),
                                            orch=("orchestration_s", "median"))
        for name, ids in series.items():
            points = med.loc[[c for c in ids if c in med.index]].sort_values("nodes")
            if len(points) < 3:
                continue
            base = points.iloc[0]
            rest = points.iloc[1:]
            added = rest["nodes"] - base["nodes"]
            extra = rest["orch"] - base["orch"]
            keep = (added > 0) & (extra > 0)
            if keep.sum() < 3:  # a slope and its CI need 3 points past the smallest graph
                continue
            fit_ = stats.linregress(np.log(added[keep]), np.log(extra[keep]))
            t = stats.t.ppf(0.975, keep.sum() - 2)
            ci = (fit_.slope - t * fit_.stderr, fit_.slope + t * fit_.stderr)
            per = extra / added
            out.append(Growth(env, executor, name, float(fit_.slope),
                              (float(ci[0]), float(ci[1])),
                              (int(rest["nodes"].iloc[0]), float(per.iloc[0])),
                              (int(rest["nodes"].iloc[-1]), float(per.iloc[-1]))))
    return out


def task_count_series(runs: pd.DataFrame) -> dict[str, list[str]]:
    """The sweep's graphs that differ only in their task count, by shape: `fan-out` (one
    layer) and `chain` (width 1), each in order of size (runs.csv `params`)."""
    shapes: dict[str, dict[str, int]] = {"fan-out": {}, "chain": {}}
    rows = runs[runs.get("workload", pd.Series(dtype=str)) == SWEEP_WORKLOAD]
    for config_id, text in rows[["config_id", "params"]].dropna().drop_duplicates() \
            .itertuples(index=False):
        p = json.loads(text)
        if ("width" not in p or "tasks" not in p or p.get("fan_in", 1) != 1
                or p.get("payload_bytes", 0) or p.get("nesting", 0)):
            continue
        if p["width"] == p["tasks"]:
            shapes["fan-out"][config_id] = p["tasks"]
        if p["width"] == 1:
            shapes["chain"][config_id] = p["tasks"]
    return {name: sorted(ids, key=ids.get) for name, ids in shapes.items()}
