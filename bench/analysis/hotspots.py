"""Covalent's time down to the function: stack samples placed in a run's phases.

`attribute` puts each sample (bench.run.stacks.Sample) in the part of the run it fell in,
by time and role; `hotspots` turns attributed samples into seconds per function and part;
`differential` compares the hotspots of two environments over several profiled rounds.
Pure functions: no I/O.

Parts (`part`), by the role of the process sampled:
* client: the client-side phase around the sample: submit, until_running, server (the
  client waiting while the server runs the dispatch), completion_detect,
  queued_for_retrieve, retrieve; in_task when a task ran in the client's own process (a
  plain run).
* server and worker: in_task inside a probed task's span in that same process;
  alongside_task in the span of that task's node but in another process (the server's own
  work while the task runs elsewhere: heartbeats, polls, its Dask cluster); node inside a
  node's server-side span otherwise (staging, (de)serialization, hand-off; overlapping
  nodes: the one that started last); scheduling_gaps in the server span but in no node (what
  bench.analysis.decompose calls scheduling gaps); otherwise the client phase of the
  moment (the server receiving the upload during submit, serving the download during
  retrieve).
* unphased: within the run (0 .. its end) but in no span (a plain run's lattice body);
  outside: before the run's start or after its end (the sampler starts before the run).

Seconds are thread-seconds: samples / rate. With idle threads sampled (py-spy --idle), a
process with ten waiting threads contributes ten seconds of waiting per second; `hotspots`
therefore reports each part's sampled time (`part_s`) beside the functions' seconds.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from bench import records as R
from bench.analysis.decompose import environments_of

NODE, IN_TASK = R.NODE, R.IN_TASK
SCHEDULING_GAPS = "scheduling_gaps"  # server time in no node span
UNPHASED = "unphased"  # inside the run, in no span
ALONGSIDE = "alongside_task"  # in a node's span, while its task runs in another process
OUTSIDE = "outside"  # before the run started or after it ended
CLIENT_PHASES = (R.SUBMIT, R.UNTIL_RUNNING, R.SERVER, R.COMPLETION_DETECT,
                 R.QUEUED_FOR_RETRIEVE, R.RETRIEVE)
PARTS = (R.SUBMIT, R.UNTIL_RUNNING, R.SERVER, NODE, IN_TASK, ALONGSIDE, SCHEDULING_GAPS,
         R.COMPLETION_DETECT, R.QUEUED_FOR_RETRIEVE, R.RETRIEVE, UNPHASED, OUTSIDE)
CLIENT = "client"

# Categories by top-level module (the longest matching prefix wins). "user task" is every
# frame of a probed task (in_task) and any code outside the standard library and
# site-packages; "harness" is this benchmark's own code (the probes), "dask" the Dask
# executor's machinery.
CATEGORY_MODULES: Mapping[str, tuple[str, ...]] = {
    "covalent": ("covalent", "covalent_dispatcher", "covalent_ui"),
    "serialization": ("cloudpickle", "pickle", "_pickle", "copyreg", "pickletools", "dill",
                      "json", "base64", "orjson", "msgpack", "pydantic", "pydantic_core",
                      "distributed.protocol"),
    "HTTP": ("requests", "urllib3", "http", "urllib", "uvicorn", "starlette", "fastapi",
             "h11", "httptools", "anyio", "aiohttp", "httpx", "httpcore", "socket", "ssl",
             "socketio", "engineio", "websockets", "wsproto", "email", "idna",
             "charset_normalizer", "certifi"),
    "database": ("sqlalchemy", "sqlite3", "alembic", "aiosqlite"),
    # selectors: the wait of asyncio's event loop (and of uvicorn's, which is asyncio's).
    "asyncio": ("asyncio", "selectors", "uvloop"),
    "dask": ("dask", "distributed", "tornado", "zict", "toolz", "tblib"),
}
HARNESS = "harness"
USER_TASK = "user task"
OTHER = "other"
CATEGORIES = (*CATEGORY_MODULES, USER_TASK, HARNESS, OTHER)
# Our own modules that are the user's code, not the harness: the built-in workloads.
USER_PREFIXES = ("bench.workloads", "mnist_core")
DEFAULT_ROOTS = (str(Path(__file__).parents[2]),)  # this repository: bench.*, mnist_core.*

# Where a thread blocks, as py-spy shows it (the C call itself has no frame): py-spy's own
# idle flag is in none of its files, so `hotspots` marks these leaves `waiting`. Seen on a
# Covalent 0.240 server's tree: Condition.wait, Popen.poll, the thread pools' _worker,
# EpollSelector.select, Connection._recv, SemLock.__enter__.
WAIT_MODULES = ("threading", "selectors", "multiprocessing", "queue", "socket", "ssl",
                "subprocess", "concurrent.futures", "asyncio", "time")
WAIT_NAMES = frozenset({"wait", "_wait", "wait_for", "join", "_wait_for_tstate_lock", "acquire",
                        "__enter__", "select", "poll", "_poll", "_recv", "recv", "recv_bytes",
                        "recv_into", "readinto", "read", "accept", "get", "sleep", "_worker",
                        "result", "communicate"})
# Leaves that block where the name alone would be too broad: an event loop in its selector
# (a C call under these frames), multiprocessing's resource tracker reading its pipe.
WAIT_FUNCTIONS = frozenset({
    ("asyncio.runners", "Runner.run"), ("asyncio.base_events", "BaseEventLoop.run_forever"),
    ("asyncio.base_events", "BaseEventLoop.run_until_complete"),
    ("asyncio.base_events", "BaseEventLoop._run_once"),
    ("multiprocessing.resource_tracker", "main")})
SAMPLE_COLUMNS = ("role", "pid", "tid", "time_s", "frames", "idle", "thread")
KEYS = ("part", "role", "module", "function")

# The parts of a Covalent run in the order they happen, and the roles whose samples are the
# part's work: the client's main thread in its own parts (waiting on HTTP included: that
# wait is the part), the server while it takes the upload in submit and serves the
# download in retrieve, the server and the task's worker process while nodes run, the
# worker in the task itself. ("server", the client waiting while the server runs the
# dispatch, is the nodes and the gaps.)
PART_ROLES: Mapping[str, tuple[str, ...]] = {
    R.SUBMIT: (CLIENT, "server"),
    R.UNTIL_RUNNING: ("server",),
    NODE: ("server", "worker"),
    SCHEDULING_GAPS: ("server",),
    IN_TASK: ("worker",),
    ALONGSIDE: ("server", "worker"),
    R.COMPLETION_DETECT: (CLIENT,),
    R.RETRIEVE: (CLIENT, "server"),
}
# The summary's orchestration parts as the profiles' parts (executor staging is a node's
# span outside its task: attribution gives in_task the samples inside the task).
SUMMARY_PARTS: Mapping[str, str] = {
    "submit_median_s": R.SUBMIT, "until_running_median_s": R.UNTIL_RUNNING,
    "executor_cost_median_s": NODE, "scheduling_gaps_median_s": SCHEDULING_GAPS,
    "completion_detect_median_s": R.COMPLETION_DETECT, "retrieve_median_s": R.RETRIEVE}
# What grew (`differential`): the level of its tests, the least mean seconds per run (over
# both sides) of a function tested (2 samples per run at 50 Hz: below it a function is a
# sample here and there), and the permutations drawn (the exact distribution when fewer
# splits exist: 12,870 for 8 runs against 8).
ALPHA = 0.05
MIN_TESTED_S = 0.04
# The client's calls whose inclusive time is tested too: what can be named as the call a
# wait sat under (not the standard library's frames, the harness's, or pytest's, which
# hold the whole part).
INCLUSIVE = ("covalent", "serialization", "HTTP", "database", "dask", USER_TASK)
PERMUTATIONS = 20_000


def samples_frame(samples: Iterable[Any] | pd.DataFrame) -> pd.DataFrame:
    """Samples (bench.run.stacks.Sample, dicts, or a frame already) as a DataFrame."""
    if isinstance(samples, pd.DataFrame):
        return samples.copy()
    items = list(samples)
    if items and isinstance(items[0], Mapping):
        df = pd.DataFrame(items).reindex(columns=list(SAMPLE_COLUMNS))
    else:  # Sample objects: column by column (a DataFrame of 10^5 objects, fast)
        df = pd.DataFrame({c: [getattr(s, c) for s in items] for c in SAMPLE_COLUMNS},
                          columns=list(SAMPLE_COLUMNS))
    # Hashable stacks (read back from JSON they are lists of lists).
    df["frames"] = [f if isinstance(f, tuple) else tuple(map(tuple, f or ()))
                    for f in df["frames"]]
    return df


def attribute(samples: Iterable[Any] | pd.DataFrame,
              phases: pd.DataFrame | Sequence[Mapping[str, Any]],
              run_end_s: float | None = None, run_id: str | None = None) -> pd.DataFrame:
    """Each sample with the part of the run it fell in (`part`) and the task or node named
    there (`task`). `phases`: one run's phases.csv rows (phase, task, start_s, duration_s,
    pid); `run_end_s`: the run's wall_s (default: the last phase's end)."""
    df = samples_frame(samples)
    ph = pd.DataFrame(list(phases) if not isinstance(phases, pd.DataFrame) else phases)
    for col, default in (("phase", ""), ("task", ""), ("pid", np.nan), ("start_s", np.nan),
                         ("duration_s", 0.0)):
        if col not in ph:
            ph[col] = default
    ph = ph.dropna(subset=["start_s"]) if len(ph) else ph
    ph = ph.assign(end_s=ph["start_s"] + ph["duration_s"].fillna(0.0))
    t = df["time_s"].to_numpy(float)
    client = (df["role"] == CLIENT).to_numpy()
    pid = df["pid"].to_numpy()
    end = run_end_s if run_end_s is not None else (
        float(ph["end_s"].max()) if len(ph) else np.inf)
    part = np.where((t >= 0) & (t <= end), UNPHASED, OUTSIDE).astype(object)
    task = np.full(len(df), "", dtype=object)

    # Lowest priority first: each later rule overwrites the earlier ones where it holds.
    for row in ph[ph["phase"].isin(CLIENT_PHASES)].itertuples():
        inside = (t >= row.start_s) & (t < row.end_s)
        part[inside & client] = row.phase
        part[inside & ~client] = SCHEDULING_GAPS if row.phase == R.SERVER else row.phase
    for row in ph[ph["phase"] == NODE].sort_values("start_s").itertuples():
        inside = (t >= row.start_s) & (t < row.end_s) & ~client
        part[inside], task[inside] = NODE, _text(row.task)
    for row in ph[ph["phase"] == IN_TASK].itertuples():
        inside = (t >= row.start_s) & (t < row.end_s)
        if not pd.isna(row.pid):
            # The other processes, in this node's span while its task runs elsewhere: not
            # staging the node, but what they do alongside it (heartbeats, polls).
            beside = inside & (pid != int(row.pid)) & (part == NODE) & (task == _text(row.task))
            part[beside] = ALONGSIDE
            inside &= pid == int(row.pid)
        part[inside], task[inside] = IN_TASK, _text(row.task)
    df["part"], df["task"] = part, task
    if run_id is not None:
        df["run_id"] = run_id
    return df


def hotspots(attributed: pd.DataFrame, rate: float, top: int | None = 15,
             per_run: bool = False, include_waiting: bool = True,
             roots: Sequence[str] = DEFAULT_ROOTS) -> pd.DataFrame:
    """Seconds per function and part, per run (the mean over `run_id`s when there are
    several, a run without the function counting 0; `per_run=True`: one row per run and no
    cut, for `differential`).

    Rows: part, role, module, function, line (its hottest line: where it ran, else where it
    called from), file, self_s (samples with
    it as the leaf), total_s (samples with it anywhere in the stack), category, waiting (a
    leaf where threads block: WAIT_NAMES in WAIT_MODULES, a heuristic), part_s (the
    part's sampled thread-seconds), share (self_s / part_s) and coverage (the share of the
    part's time that the listed functions' self time covers: with `top`, the top ones by
    self time per part and role). `include_waiting=False` leaves out the waiting leaves
    before the cut (with idle threads sampled they fill the top), not from part_s."""
    df = attributed
    if "run_id" not in df:
        df = df.assign(run_id="")
    n_runs = max(1, df["run_id"].nunique())
    group = ["run_id", "part", "role"]
    stacks = df.groupby([*group, "frames"], sort=False, dropna=False).size()

    self_n: dict[tuple, int] = defaultdict(int)
    total_n: dict[tuple, int] = defaultdict(int)
    line_n: dict[tuple, dict[int, int]] = defaultdict(lambda: defaultdict(int))  # as leaf
    call_n: dict[tuple, dict[int, int]] = defaultdict(lambda: defaultdict(int))  # calling
    files: dict[tuple, str] = {}
    part_n: dict[tuple, int] = defaultdict(int)
    for (run, part, role, frames), n in stacks.items():
        part_n[(run, part, role)] += n
        if not frames:
            continue
        seen = set()
        for i, (file, function, line) in enumerate(frames):
            fn = (module_of(file, tuple(roots)), function)
            key = (run, part, role, *fn)
            if i == len(frames) - 1:
                self_n[key] += n
                line_n[key][line] += n
            else:
                call_n[key][line] += n
            if key not in seen:
                seen.add(key)
                total_n[key] += n
            files.setdefault(fn, file)
    rows = []
    for key, n_total in total_n.items():
        run, part, role, module, function = key
        lines = line_n.get(key) or call_n.get(key)
        rows.append({
            "run_id": run, "part": part, "role": role, "module": module,
            "function": function,
            "line": max(lines, key=lines.get) if lines else None,
            "file": files[(module, function)],
            "self_n": self_n.get(key, 0), "total_n": n_total,
            "category": category(module, files[(module, function)], part),
            "part_n": part_n[(run, part, role)],
        })
    cols = ["part", "role", "module", "function", "line", "file", "self_s", "total_s",
            "category", "waiting", "part_s", "share", "coverage"]
    if not rows:
        return pd.DataFrame(columns=(["run_id"] if per_run else []) + cols)
    out = pd.DataFrame(rows)
    out["waiting"] = [waiting(m, f) for m, f in zip(out["module"], out["function"],
                                                    strict=True)]
    if per_run:
        out = out.assign(self_s=out["self_n"] / rate, total_s=out["total_n"] / rate,
                         part_s=out["part_n"] / rate)
        keys = ["run_id", "part", "role"]
    else:
        agg = out.groupby(list(KEYS), sort=False).agg(
            line=("line", lambda s: s.dropna().mode().iloc[0] if s.notna().any() else None),
            file=("file", "first"), self_n=("self_n", "sum"), total_n=("total_n", "sum"),
            category=("category", "first"), waiting=("waiting", "first")).reset_index()
        parts = pd.Series(part_n).groupby(level=[1, 2]).sum()
        agg["part_n"] = [parts[(p, r)] for p, r in zip(agg["part"], agg["role"], strict=True)]
        out = agg.assign(self_s=agg["self_n"] / rate / n_runs,
                         total_s=agg["total_n"] / rate / n_runs,
                         part_s=agg["part_n"] / rate / n_runs)
        keys = ["part", "role"]
    out["share"] = out["self_s"] / out["part_s"]
    out = out.sort_values([*keys, "self_s", "total_s"], ascending=[True] * len(keys)
                          + [False, False], key=_part_order)
    if not include_waiting:
        out = out[~out["waiting"]]
    if top is not None and not per_run:
        out = out.groupby(keys, sort=False).head(top)
    out["coverage"] = out.groupby(keys, sort=False)["share"].transform("sum")
    return out[(["run_id"] if per_run else []) + cols].reset_index(drop=True)


def counted(part: str, role: str, waiting: bool) -> bool:
    """Whether a function's samples in this part and role are the part's work (PART_ROLES):
    on the client, all of its main thread's (its waits are the part); on the server and the
    workers, only where a thread was busy (their idle pool threads wait all along)."""
    return role in PART_ROLES.get(part, ()) and (role == CLIENT or not waiting)


def differential(hot_env: pd.DataFrame, hot_ref: pd.DataFrame, alpha: float = ALPHA,
                 min_s: float = MIN_TESTED_S, n_boot: int = 4000, seed: int = 0
                 ) -> pd.DataFrame:
    """Per part, role and function: seconds per run in `hot_env` minus `hot_ref`, of self
    time (metric "self_s") and, for the client's main thread, of inclusive time ("total_s":
    the function and what it calls; which call made the client wait longer).

    Both are `hotspots(..., per_run=True)` of several profiled rounds (a run in which a
    function never showed counts 0 s). Rows: metric, ref_s and env_s (medians over runs),
    delta_s (their difference), ci_low/ci_high (95 % percentile bootstrap of the difference
    of medians, each side resampled), waiting, n_env, n_ref, and for the rows tested:

    * tested: self time of a function counted in its part (`counted`), or inclusive time of
      one of the client's functions outside the standard library and the harness (INCLUSIVE),
      whose mean over both sides' runs is at least `min_s`. The filter does not look at
      which side a run is on, so under no difference it leaves the tests' null
      distributions as they are (independent filtering), and it keeps the family small: the
      single-sample noise of hundreds of functions never enters it.
    * p: Mann-Whitney U, two-sided, its p from the permutation distribution (exact when
      the runs' splits are few: ties of zeros, common here, are handled right);
    * p_adj: Benjamini-Hochberg over every tested row of the comparison, both metrics;
      significant: p_adj < alpha. Under no difference at all it bounds the chance of any
      significant row by alpha, whatever the number of functions.

    top_grower (self time): per part, the tested row with the largest positive delta_s, a
    working function (not waiting) before a waiting one: when the server works longer in a
    part, the client's wait on it grows as much, and the work is what to name."""
    rng = np.random.default_rng(seed)
    cols = ["metric", *KEYS, "category", "waiting", "ref_s", "env_s", "delta_s", "ci_low",
            "ci_high", "p", "p_adj", "significant", "tested", "n_env", "n_ref", "top_grower"]
    facts = pd.concat([hot_env, hot_ref]).drop_duplicates(list(KEYS)).set_index(list(KEYS))
    frames = []
    for metric in ("self_s", "total_s"):
        env, ref = _by_run(hot_env, metric), _by_run(hot_ref, metric)
        keys = env.index.union(ref.index)
        if not len(keys) or not env.shape[1] or not ref.shape[1]:
            continue
        a = env.reindex(keys, fill_value=0.0).to_numpy(float)
        b = ref.reindex(keys, fill_value=0.0).to_numpy(float)
        out = pd.DataFrame(list(keys), columns=list(KEYS))
        out.insert(0, "metric", metric)
        out["category"] = facts["category"].reindex(keys).fillna(OTHER).to_numpy()
        out["waiting"] = facts["waiting"].reindex(keys).fillna(False).astype(bool).to_numpy()
        if metric == "total_s":  # inclusive: only the client's calls that can be named
            keep = ((out["role"] == CLIENT) & out["category"].isin(INCLUSIVE)
                    & ~out["waiting"]).to_numpy()
            out, a, b = out[keep].reset_index(drop=True), a[keep], b[keep]
            eligible = np.ones(len(out), bool)
        else:
            eligible = np.array([counted(p, r, w) for p, r, w in
                                 zip(out["part"], out["role"], out["waiting"], strict=True)],
                                bool)
        if not len(out):
            continue
        out["ref_s"], out["env_s"] = np.median(b, axis=1), np.median(a, axis=1)
        out["delta_s"] = out["env_s"] - out["ref_s"]
        pooled = np.concatenate([a, b], axis=1)
        big = pooled.mean(axis=1) >= min_s  # the CI's bootstrap only where it can matter
        boot = (np.median(a[big][:, rng.integers(0, a.shape[1], (n_boot, a.shape[1]))], axis=2)
                - np.median(b[big][:, rng.integers(0, b.shape[1], (n_boot, b.shape[1]))],
                            axis=2))
        out["ci_low"] = out["ci_high"] = np.nan
        out.loc[big, "ci_low"] = np.percentile(boot, 2.5, axis=1)
        out.loc[big, "ci_high"] = np.percentile(boot, 97.5, axis=1)
        out["tested"] = eligible & big & (pooled.std(axis=1) > 0)
        out["p"] = np.nan
        tested = out["tested"].to_numpy()
        if tested.any():
            out.loc[tested, "p"] = stats.mannwhitneyu(
                a[tested], b[tested], axis=1, alternative="two-sided",
                method=stats.PermutationMethod(n_resamples=PERMUTATIONS, rng=rng)).pvalue
        out["n_env"], out["n_ref"] = a.shape[1], b.shape[1]
        frames.append(out)
    if not frames:
        return pd.DataFrame(columns=cols)
    out = pd.concat(frames, ignore_index=True)
    out["p_adj"] = np.nan
    tested = out["tested"].to_numpy(bool)
    if tested.any():
        out.loc[tested, "p_adj"] = stats.false_discovery_control(
            out.loc[tested, "p"].to_numpy(float), method="bh")
    out["significant"] = out["p_adj"] < alpha
    growing = out[(out["metric"] == "self_s") & out["tested"] & (out["delta_s"] > 0)]
    growing = growing.sort_values(["waiting", "delta_s"], ascending=[True, False])
    out["top_grower"] = out.index.isin(growing.groupby("part", sort=False).head(1).index)
    out = out.sort_values(["metric", "part", "delta_s"], ascending=[False, True, False],
                          key=_part_order)
    return out[cols].reset_index(drop=True)


def label(frame: pd.DataFrame) -> pd.Series:
    """Each row's executor as the report names it: `environment:executor`, or `plain`."""
    env = frame["environment"].fillna("").astype(str)
    ex = frame["executor"].fillna("").astype(str).replace("", "plain")
    return env.where(env == "", env + ":") + ex


def environment_differentials(hot: pd.DataFrame, order: Sequence[str] | None = None,
                              alpha: float = ALPHA) -> pd.DataFrame:
    """With environments (hotspots.csv rows of several): every environment against the
    reference, per configuration and base executor, as `differential` rows with config_id,
    executor, environment and reference in front. `order`: the environments, the reference
    first (decompose.environments_of of the runs; profiled runs need not come in that
    order); by default as they first appear. Empty without two."""
    envs = [e for e in (order or environments_of(hot)) if e in set(hot["environment"])]
    parts = []
    for (config_id, executor), group in hot.groupby(["config_id", "executor"], sort=False):
        base = group[group["environment"] == envs[0]] if len(envs) > 1 else group.iloc[:0]
        for env in envs[1:]:
            mine = group[group["environment"] == env]
            if base.empty or mine.empty:
                continue
            diff = differential(mine, base, alpha=alpha)
            parts.append(diff.assign(config_id=config_id, executor=executor,
                                     environment=env, reference=envs[0]))
    if not parts:
        return pd.DataFrame()
    out = pd.concat(parts, ignore_index=True)
    front = ["config_id", "executor", "environment", "reference"]
    return out[front + [c for c in out.columns if c not in front]]


def growers(diffs: pd.DataFrame) -> pd.DataFrame:
    """Of `environment_differentials`: per comparison and part, the function whose self time
    grew most (its top_grower), the significant ones first, with runs ("n_env/n_ref") and,
    when it is a wait, the call it waited under: via_module, via_function, via_delta_s, the
    client's significant inclusive-time grower of that part (Covalent's own code first,
    then the largest growth)."""
    if diffs is None or diffs.empty:
        return pd.DataFrame()
    comparison = ["config_id", "executor", "environment", "part"]
    inclusive = diffs[(diffs["metric"] == "total_s") & diffs["significant"].astype(bool)
                      & (diffs["delta_s"] > 0)]
    inclusive = (inclusive.assign(other=inclusive["category"] != "covalent")
                 .sort_values(["other", "delta_s"], ascending=[True, False])
                 .drop_duplicates(comparison)
                 .rename(columns={"module": "via_module", "function": "via_function",
                                  "delta_s": "via_delta_s"}))
    out = diffs[(diffs["metric"] == "self_s") & diffs["top_grower"].astype(bool)]
    out = out.merge(inclusive[[*comparison, "via_module", "via_function", "via_delta_s"]],
                    on=comparison, how="left")
    working = ~out["waiting"].astype(bool)
    out.loc[working, ["via_module", "via_function", "via_delta_s"]] = np.nan
    out["significant"] = out["significant"].astype(bool)
    out["runs"] = out["n_env"].astype(int).astype(str) + "/" + out["n_ref"].astype(int).astype(str)
    return out.sort_values(["significant", "p_adj", "delta_s"],
                           ascending=[False, True, False]).reset_index(drop=True)


# -- modules and categories ----------------------------------------------------------------

_SITE = re.compile(r"/(?:site|dist)-packages/(.+?)\.py[cw]?$")
_STDLIB = re.compile(r"/lib/python\d\.\d+/(.+?)\.py[cw]?$")
_FROZEN = re.compile(r"^<frozen (.+)>$")


@functools.lru_cache(maxsize=65536)
def _locate(file: str, roots: tuple[str, ...] = DEFAULT_ROOTS) -> tuple[str, str]:
    """(dotted module, kind) of a source path; kind: site | stdlib | user."""
    def dotted(rel: str) -> str:
        rel = rel.removesuffix("/__init__")
        return rel.replace("/", ".")

    if m := _SITE.search(file):
        return dotted(m.group(1)), "site"
    if m := _FROZEN.match(file):
        return m.group(1), "stdlib"
    if m := _STDLIB.search(file):
        return dotted(m.group(1)), "stdlib"
    for root in sorted(roots, key=len, reverse=True):
        prefix = root.rstrip("/") + "/"
        if file.startswith(prefix) and file.endswith(".py"):
            return dotted(file[len(prefix):-3]), "user"
    return (Path(file).stem or file), "user"


def module_of(file: str, roots: tuple[str, ...] = DEFAULT_ROOTS) -> str:
    """The dotted module of a source path (site-packages, the standard library, or relative
    to one of `roots`; else the file's stem)."""
    return _locate(file, roots)[0]


def waiting(module: str, function: str) -> bool:
    """Whether a leaf frame is one where a thread blocks (a lock, a queue, a select, a
    socket, a child process): its self time is waiting, not work."""
    if (module, function) in WAIT_FUNCTIONS:
        return True
    return (module.startswith(tuple(m + "." for m in WAIT_MODULES)) or module in WAIT_MODULES
            ) and function.rsplit(".", 1)[-1] in WAIT_NAMES


def category(module: str, file: str = "", part: str = "") -> str:
    """What kind of work a function is (CATEGORIES), from its module and the part it ran in."""
    if module.startswith("bench.") and not module.startswith(USER_PREFIXES):
        return HARNESS
    if part == IN_TASK or module.startswith(USER_PREFIXES):
        return USER_TASK
    best, best_len = None, -1
    for name, prefixes in CATEGORY_MODULES.items():
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = name, len(p)
    if best is not None:
        return best
    if file and _locate(file)[1] == "user":
        return USER_TASK
    return OTHER


# -- helpers -------------------------------------------------------------------------------

def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def _part_order(col: pd.Series) -> pd.Series:
    if col.name == "part":
        order = {p: i for i, p in enumerate(PARTS)}
        return col.map(lambda p: order.get(p, len(order)))
    return col


def _by_run(hot: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Key (part, role, module, function) x run_id -> metric seconds (0 where absent)."""
    if not len(hot):
        return pd.DataFrame(index=pd.MultiIndex.from_tuples([], names=list(KEYS)))
    runs = hot["run_id"].unique()
    table = hot.pivot_table(index=list(KEYS), columns="run_id", values=metric,
                            aggfunc="sum", fill_value=0.0)
    return table.reindex(columns=runs, fill_value=0.0)
