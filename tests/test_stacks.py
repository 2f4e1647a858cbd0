"""Stack sampling (bench.run.stacks), attribution and hotspots (bench.analysis.hotspots), and
the trace / speedscope files (bench.run.trace). No Covalent server: a real Python
subprocess with known functions is sampled from outside; the analysis gets synthetic samples.

Sampled at 100 Hz (tighter bounds than the 50 Hz default, same code). Measured on this
machine (2 shared cores, load 4-11): the sampled seconds of 0.3 s functions came out within
+-0.05 s (once -0.08 s in CI); a change of function was first seen 0-52 ms after it
happened (median 6 ms), never more than 0.1 ms before it (the origin from py-spy's log);
hence the bounds below.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest

from bench import records as R
from bench.analysis import hotspots as H
from bench.run import stacks as S
from bench.run import trace as T
from bench.run.stacks import Frame, Sample, StackSampler

RATE = 100
ALIGN_S = 0.01  # a sample is never placed earlier than this before its state began
LATE_S = 0.1  # ... and at most this late (py-spy's lateness on a loaded 2-core machine)
# Sampled seconds of a 0.3 s function: its start and its end are each seen 0 to LATE_S late,
# so its length is off by at most LATE_S either way (0.22 s was seen once, in CI, with
# three test processes on two cores: the start seen 0.08 s later than the end).
SECONDS_TOL = LATE_S

TARGET = textwrap.dedent('''
    import json, multiprocessing as mp, os, sys, time
    from concurrent.futures import ProcessPoolExecutor

    def waiting_fn():
        time.sleep(0.3)

    def busy_fn(seconds=0.3):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    def child_fn():
        start = time.time()
        busy_fn()
        return os.getpid(), start, time.time()

    def timed(fn):
        start = time.time()
        fn()
        return start, time.time()

    if __name__ == "__main__":
        print(os.getpid(), flush=True)
        sys.stdin.readline()  # the sampler has attached
        t0 = time.time()
        spans = {"waiting_fn": timed(waiting_fn), "busy_fn": timed(busy_fn)}
        # A child started mid-run, like the local executor's pool (forked: its main
        # thread has the parent's pthread id, which py-spy's chrome trace keys on).
        pool = ProcessPoolExecutor(1, mp_context=mp.get_context("fork"))
        born = pool.submit(time.time).result()
        # py-spy looks for new children every 100 ms, then attaches: a child's first
        # ~0.1-0.2 s go unsampled. A pool's worker lives on; give it the time to be found.
        time.sleep(0.4)
        child, start, end = pool.submit(child_fn).result()
        spans["child_fn"] = (start, end)
        pool.shutdown(wait=True)
        closed = time.time()
        time.sleep(0.3)
        print(json.dumps({"t0": t0, "spans": spans, "child": child, "born": born,
                          "closed": closed}), flush=True)
''')


@pytest.fixture(scope="module")
def sampled(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The target run once under a StackSampler (its root given the role `server`)."""
    tmp = tmp_path_factory.mktemp("stacks")
    script = tmp / "target.py"
    script.write_text(TARGET)
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        pid = int(proc.stdout.readline())
        time.sleep(0.2)  # past start-up: py-spy needs an interpreter to attach to
        sampler = StackSampler({"server": pid}, tmp / "out", rate=RATE)
        with sampler:
            proc.stdin.write("go\n")
            proc.stdin.flush()
            report = json.loads(proc.stdout.readline())
            proc.wait(timeout=30)
    finally:
        proc.kill()
    samples = sampler.samples(report["t0"])
    spans = {k: (a - report["t0"], b - report["t0"]) for k, (a, b) in report["spans"].items()}
    return {"sampler": sampler, "samples": samples, "spans": spans, "pid": pid,
            "child": report["child"], "closed": report["closed"] - report["t0"],
            "born": report["born"] - report["t0"], "t0": report["t0"],
            "out": tmp / "out"}


def _of(samples: list[Sample], function: str) -> list[Sample]:
    """Samples with `function` in the stack (child_fn calls busy_fn: in the child only)."""
    return [s for s in samples if any(f.function == function for f in s.frames)
            and (function == "child_fn" or not any(f.function == "child_fn" for f in s.frames))]


@pytest.mark.parametrize("function", ["waiting_fn", "busy_fn", "child_fn"])
def test_known_functions_found_with_their_seconds_and_times(sampled: dict,
                                                            function: str) -> None:
    assert sampled["sampler"].unavailable == ""
    found = _of(sampled["samples"], function)
    seconds = len(found) / RATE
    assert abs(seconds - 0.3) < SECONDS_TOL, (function, seconds)
    start, end = sampled["spans"][function]
    times = [s.time_s for s in found]
    assert min(times) >= start - ALIGN_S and max(times) <= end + LATE_S, (start, end, times)
    assert min(times) <= start + LATE_S and max(times) >= end - LATE_S, (start, end, times)


def test_the_child_is_sampled_under_its_own_pid_as_a_worker(sampled: dict) -> None:
    child = sampled["child"]
    assert child != sampled["pid"]
    found = _of(sampled["samples"], "child_fn")
    assert {s.pid for s in found} == {child}
    assert {s.role for s in found} == {S.WORKER}  # its stacks show _process_worker
    assert {s.tid for s in found} == {child}  # the native id: a main thread's tid is its pid
    procs = sampled["sampler"].processes
    assert procs[child].parent == sampled["pid"] and procs[child].role == S.WORKER
    assert procs[sampled["pid"]].role == S.SERVER
    assert {s.role for s in sampled["samples"] if s.pid == sampled["pid"]} == {S.SERVER}
    # Found within py-spy's 100 ms child scan and its attach (tens of ms; more under load).
    first = min(s.time_s for s in sampled["samples"] if s.pid == child)
    assert sampled["born"] - ALIGN_S <= first <= sampled["born"] + 0.4, (first, sampled["born"])


def test_a_process_that_exited_leaves_no_samples_after_its_exit(sampled: dict) -> None:
    # py-spy's file keeps a dead process's last stack open until the recording ends (0.3 s
    # later here); its exit, from py-spy's log or the watcher, ends it.
    last = max(s.time_s for s in sampled["samples"] if s.pid == sampled["child"])
    assert last <= sampled["closed"] + LATE_S, (last, sampled["closed"])


def test_task_pids_make_a_child_a_worker() -> None:
    # A child whose stacks show no task runner is its root's role, unless a task ran there.
    chain = ((10, "covalent server"), (11, "python -c spawn_main"))
    seg = S._Segment(11, 11, "", 0.0, 1.0, (Frame("/x/worker.py", "loop", 1),), chain, 10)
    root = S._Segment(10, 10, "", 0.0, 1.0, (Frame("/x/app.py", "main", 1),), chain[:1], 10)
    plain = S._classify([root, seg], {10: S.SERVER}, set())
    assert plain[11].role == S.SERVER and plain[11].parent == 10
    assert plain[11].cmdline == "python -c spawn_main"
    assert S._classify([root, seg], {10: S.SERVER}, {11})[11].role == S.WORKER
    assert S._classify([root, seg], {10: S.SERVER}, {10})[10].role == S.SERVER  # a root


def test_raw_files_are_kept_and_each_run_costs_little_cpu(sampled: dict) -> None:
    sampler = sampled["sampler"]
    (path,) = sampler.files.values()
    events = json.loads(path.read_text())
    assert events and {"ph", "ts", "pid", "tid", "name"} <= set(events[0])
    assert 0 < sampler.pyspy_cpu_s < 5


def test_a_non_python_pid_is_unavailable_with_a_reason_not_an_exception(
        tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        sampler = StackSampler({"server": proc.pid, "client": 2**22 + 1}, tmp_path, rate=RATE)
        with sampler:
            pass
    finally:
        proc.kill()
    assert "python" in sampler.problems[proc.pid].lower()
    assert sampler.problems[2**22 + 1] == "no such process"
    assert "\n" not in sampler.unavailable and str(proc.pid) in sampler.unavailable
    assert sampler.samples(0.0) == []


def test_missing_pyspy_is_unavailable(tmp_path: Path) -> None:
    sampler = StackSampler({"client": os.getpid()}, tmp_path, pyspy="")
    sampler.start()
    sampler.stop()
    assert "py-spy not found" in sampler.unavailable
    assert sampler.samples(0.0) == []


def test_failure_reason_is_py_spys_error_line() -> None:
    log = (b"[2026-12-02T01:10:22.506916979Z INFO  py_spy::config] config Config {\n"
           b"        blocking: NonBlocking,\n    }\n"
           b"Error: Failed to find python version from target process\n\n"
           b"Stack backtrace:\n   0: anyhow::error\n")
    assert S._failure_reason(log, 1) == "Failed to find python version from target process"
    denied = S._failure_reason(b"Permission Denied\n", 1)
    assert "ptrace" in denied
    assert S._log_origin(log.decode()) == pytest.approx(1796173822.506917, abs=1e-6)


# -- py-spy's chrome trace, replayed ------------------------------------------------------

def _b(pid: int, tid: int, ts: int, name: str, file: str = "", line: int = 0) -> dict:
    return {"ph": "B", "pid": pid, "tid": tid, "ts": ts, "name": name,
            "args": {"filename": file, "line": line}}


def _e(pid: int, tid: int, ts: int, name: str, file: str = "", line: int = 0) -> dict:
    return {**_b(pid, tid, ts, name, file, line), "ph": "E"}


def test_chrometrace_replay_separates_processes_that_share_a_pthread_id() -> None:
    # Parent 10 and forked child 11 alternate on one py-spy key (tid 7): each sample
    # re-emits the stack below the shared root process frame.
    P, C, key = '"python a.py"', '"python a.py"', 7
    parent = [f"process 10:{P}", "thread (10): MainThread"]
    child = [f"process 11:{C}", "thread (11): MainThread"]
    ev = [_b(10, key, 0, parent[0]), _b(10, key, 0, parent[1]),
          _b(10, key, 0, "wait", "/a.py", 3)]
    ts = 0
    for _ in range(5):
        ts += 5_000
        ev += [_e(11, key, ts, "wait", "/a.py", 3), _e(11, key, ts, parent[1]),
               _b(11, key, ts, child[0]), _b(11, key, ts, child[1]),
               _b(11, key, ts, "work", "/a.py", 9)]
        ts += 5_000
        ev += [_e(10, key, ts, "work", "/a.py", 9), _e(10, key, ts, child[1]),
               _e(10, key, ts, child[0]), _b(10, key, ts, parent[1]),
               _b(10, key, ts, "wait", "/a.py", 3)]
    ev += [_e(10, key, ts + 10_000, "wait", "/a.py", 3), _e(10, key, ts + 10_000, parent[1]),
           _e(10, key, ts + 10_000, parent[0])]
    segs = S.segments_from_chrometrace(ev, origin_wall=100.0)
    by = {(s.pid, s.tid): [] for s in segs}
    for s in segs:
        by[(s.pid, s.tid)].append(s)
    assert set(by) == {(10, 10), (11, 11)}
    assert {s.frames[-1].function for s in by[(10, 10)]} == {"wait"}
    assert {s.frames[-1].function for s in by[(11, 11)]} == {"work"}
    assert [p for p, _ in by[(11, 11)][0].chain] == [10, 11]
    # Each process's time is its own, from its sample to its next one (10 ms apart).
    starts = sorted(s.start for s in by[(11, 11)])
    assert starts[0] == pytest.approx(100.005) and np.diff(starts) == pytest.approx(0.01)


def test_a_dead_threads_last_stack_ends_where_it_was_seen_gone() -> None:
    seg = S._Segment(5, 6, "t", 10.0, 20.0, (Frame("/a.py", "f", 1),), ((5, "x"),))
    watch = S._Watch(thread_seen={(5, 6): (9.0, 11.0)}, thread_gone={(5, 6): 11.05},
                     proc_seen={5: (9.0, 20.0)})
    S._cap([seg], watch, {})
    assert seg.end == pytest.approx(11.025)
    alive = S._Segment(5, 7, "t", 10.0, 20.0, (Frame("/a.py", "f", 1),), ((5, "x"),))
    S._cap([alive], S._Watch(thread_seen={(5, 7): (9.0, 20.0)}, proc_seen={5: (9.0, 20.0)}),
           {5: 15.0})
    assert alive.end == 15.0  # py-spy logged the process's exit


def test_a_process_under_two_roots_is_kept_from_the_nearest() -> None:
    f = (Frame("/a.py", "f", 1),)
    via_client = S._Segment(11, 11, "", 0.0, 1.0, f, ((1, "client"), (10, "srv"), (11, "w")), 1)
    via_server = S._Segment(11, 11, "", 0.0, 1.0, f, ((10, "srv"), (11, "w")), 10)
    server_itself = S._Segment(10, 10, "", 0.0, 1.0, f, ((1, "client"), (10, "srv")), 1)
    client_child = S._Segment(12, 12, "", 0.0, 1.0, f, ((1, "client"), (12, "dog")), 1)
    kept = S._nearest_root_only([via_client, via_server, server_itself, client_child], {1, 10})
    assert kept == [via_server, client_child]


# -- attribution ---------------------------------------------------------------------------

def _phase(phase: str, start: float, end: float, task: str = "", pid: float = np.nan) -> dict:
    return {"phase": phase, "task": task, "start_s": start, "duration_s": end - start,
            "pid": pid}


PHASES = [
    _phase(R.SUBMIT, 0.0, 0.5), _phase(R.UNTIL_RUNNING, 0.5, 0.7),
    _phase(R.SERVER, 0.7, 2.0), _phase(R.NODE, 0.8, 1.5, "a"), _phase(R.NODE, 1.0, 1.2, "c"),
    _phase(R.NODE, 1.6, 1.9, "b"), _phase(R.IN_TASK, 0.9, 1.4, "a", 200),
    _phase(R.COMPLETION_DETECT, 2.0, 2.3), _phase(R.RETRIEVE, 2.3, 2.5),
]
F = (Frame("/x/lib/python3.11/site-packages/covalent/_x.py", "f", 1),)


def _s(role: str, pid: int, t: float) -> Sample:
    return Sample(role, pid, pid, t, F)


@pytest.mark.parametrize("sample,part,task", [
    (_s("client", 1, 0.2), R.SUBMIT, ""),
    (_s("client", 1, 1.0), R.SERVER, ""),  # the client waits while the server runs
    (_s("client", 1, 2.1), R.COMPLETION_DETECT, ""),
    (_s("client", 1, 2.4), R.RETRIEVE, ""),
    (_s("client", 1, -0.1), H.OUTSIDE, ""),
    (_s("client", 1, 3.0), H.OUTSIDE, ""),
    (_s("server", 100, 0.2), R.SUBMIT, ""),  # the server receiving the upload
    (_s("server", 100, 0.75), H.SCHEDULING_GAPS, ""),
    (_s("server", 100, 0.85), R.NODE, "a"),  # staging node a
    (_s("server", 100, 0.9), H.ALONGSIDE, "a"),  # while a's task runs in process 200
    (_s("server", 100, 1.1), R.NODE, "c"),  # overlapping nodes: the one that started last
    (_s("server", 100, 1.55), H.SCHEDULING_GAPS, ""),
    (_s("server", 100, 2.4), R.RETRIEVE, ""),
    (_s("worker", 200, 1.0), R.IN_TASK, "a"),
    (_s("worker", 200, 0.85), R.NODE, "a"),  # staging before the task's own code
    (_s("worker", 300, 1.0), R.NODE, "c"),  # not the process the task ran in
    (_s("worker", 300, 1.3), H.ALONGSIDE, "a"),  # c is over; a's task runs elsewhere
])
def test_attribute_places_samples_by_time_and_role(sample: Sample, part: str,
                                                   task: str) -> None:
    out = H.attribute([sample], PHASES)
    assert (out["part"].iloc[0], out["task"].iloc[0]) == (part, task)


def test_attribute_without_phases_is_unphased_or_outside() -> None:
    out = H.attribute([_s("server", 100, 0.5), _s("server", 100, -0.5)], [], run_end_s=1.0)
    assert list(out["part"]) == [H.UNPHASED, H.OUTSIDE]


def test_attribute_plain_run_in_task_and_unphased() -> None:
    phases = [_phase(R.IN_TASK, 0.1, 0.4, "train", 1)]
    out = H.attribute([_s("client", 1, 0.2), _s("client", 1, 0.6), _s("client", 1, 0.9)],
                      phases, run_end_s=0.8, run_id="r1")
    assert list(out["part"]) == [R.IN_TASK, H.UNPHASED, H.OUTSIDE]
    assert set(out["run_id"]) == {"r1"}


def test_samples_read_back_from_json_attribute_and_rank_the_same() -> None:
    samples = [_s("server", 100, 0.9), _s("server", 100, 1.0), _s("client", 1, 0.2)]
    rows = json.loads(json.dumps([{"role": s.role, "pid": s.pid, "tid": s.tid,
                                   "time_s": s.time_s, "frames": s.frames} for s in samples]))
    a, b = H.attribute(samples, PHASES), H.attribute(rows, PHASES)
    assert list(a["part"]) == list(b["part"]) == [H.ALONGSIDE, R.NODE, R.SUBMIT]
    pd.testing.assert_frame_equal(H.hotspots(a, RATE), H.hotspots(b, RATE))


# -- hotspots and the differential --------------------------------------------------------

SITE = "/venv/lib/python3.11/site-packages"
MAIN = Frame(f"{SITE}/covalent_dispatcher/_core/dispatcher.py", "run_workflow", 10)
DUMPS = Frame(f"{SITE}/cloudpickle/cloudpickle.py", "dumps", 1500)
WAIT = Frame("/usr/lib/python3.11/selectors.py", "EpollSelector.select", 468)


def _attributed(counts: dict[tuple, int], run_id: str = "r") -> pd.DataFrame:
    samples = []
    for (part, role, frames), n in counts.items():
        samples += [{"role": role, "pid": 1, "tid": 1, "time_s": 0.0, "frames": frames,
                     "idle": None, "thread": "", "part": part, "task": "", "run_id": run_id}
                    for _ in range(n)]
    return pd.DataFrame(samples)


def test_hotspots_self_total_category_and_coverage() -> None:
    counts = {(R.NODE, "server", (MAIN, DUMPS)): 30, (R.NODE, "server", (MAIN,)): 10,
              (R.NODE, "server", (MAIN, WAIT)): 20}
    two_runs = pd.concat([_attributed(counts, "r1"), _attributed(counts, "r2")])
    hot = H.hotspots(two_runs, RATE, top=2)
    rows = hot.set_index("function")
    assert list(hot["function"]) == ["dumps", "EpollSelector.select"]  # by self time
    assert rows.loc["dumps", "self_s"] == pytest.approx(0.3)  # per run: 2 runs, 60 samples
    assert rows.loc["dumps", "total_s"] == pytest.approx(0.3)
    assert rows.loc["dumps", "category"] == "serialization"
    assert rows.loc["EpollSelector.select", "category"] == "asyncio"
    assert list(hot["waiting"]) == [False, True]  # select blocks; dumps works
    assert rows.loc["dumps", "module"] == "cloudpickle.cloudpickle"
    assert rows.loc["dumps", "line"] == 1500
    assert hot["part_s"].to_numpy() == pytest.approx([0.6, 0.6])
    assert hot["coverage"].to_numpy() == pytest.approx([0.5 / 0.6] * 2)
    busy = H.hotspots(two_runs, RATE, top=2, include_waiting=False)
    assert list(busy["function"]) == ["dumps", "run_workflow"]
    assert busy["coverage"].iloc[0] == pytest.approx(0.4 / 0.6)  # waiting not listed
    full = H.hotspots(two_runs, RATE, top=None).set_index("function")
    assert full.loc["run_workflow", "self_s"] == pytest.approx(0.1)
    assert full.loc["run_workflow", "total_s"] == pytest.approx(0.6)
    assert full.loc["run_workflow", "category"] == "covalent"
    assert full.loc["run_workflow", "line"] == 10
    assert full["coverage"].iloc[0] == pytest.approx(1.0)


@pytest.mark.parametrize("file,part,module,cat", [
    (f"{SITE}/covalent/executor/executor_plugins/local.py", R.NODE,
     "covalent.executor.executor_plugins.local", "covalent"),
    (f"{SITE}/sqlalchemy/orm/session.py", R.NODE, "sqlalchemy.orm.session", "database"),
    ("/usr/lib/python3.11/sqlite3/dbapi2.py", R.NODE, "sqlite3.dbapi2", "database"),
    (f"{SITE}/requests/sessions.py", R.SUBMIT, "requests.sessions", "HTTP"),
    (f"{SITE}/uvicorn/protocols/http/h11_impl.py", R.SUBMIT,
     "uvicorn.protocols.http.h11_impl", "HTTP"),
    ("/usr/lib/python3.11/http/client.py", R.RETRIEVE, "http.client", "HTTP"),
    ("/usr/lib/python3.11/pickle.py", R.NODE, "pickle", "serialization"),
    ("/usr/lib/python3.11/asyncio/base_events.py", R.NODE, "asyncio.base_events", "asyncio"),
    (f"{SITE}/distributed/protocol/serialize.py", R.NODE, "distributed.protocol.serialize",
     "serialization"),
    (f"{SITE}/distributed/client.py", R.NODE, "distributed.client", "dask"),
    (f"{SITE}/torch/nn/modules/module.py", R.IN_TASK, "torch.nn.modules.module", "user task"),
    ("/home/u/flow.py", R.IN_TASK, "flow", "user task"),
    ("/home/u/flow.py", H.UNPHASED, "flow", "user task"),
    (f"{H.DEFAULT_ROOTS[0]}/bench/run/probes.py", R.IN_TASK, "bench.run.probes", "harness"),
    (f"{H.DEFAULT_ROOTS[0]}/mnist_core/train.py", R.NODE, "mnist_core.train", "user task"),
    ("<frozen importlib._bootstrap>", R.SUBMIT, "importlib._bootstrap", "other"),
    ("/usr/lib/python3.11/threading.py", R.NODE, "threading", "other"),
])
def test_module_and_category(file: str, part: str, module: str, cat: str) -> None:
    assert H.module_of(file) == module
    assert H.category(module, file, part) == cat


@pytest.mark.parametrize("module,function,expected", [
    ("threading", "Condition.wait", True), ("multiprocessing.connection", "Connection._recv", True),
    ("concurrent.futures.thread", "_worker", True), ("selectors", "EpollSelector.select", True),
    ("socket", "SocketIO.readinto", True), ("multiprocessing.popen_fork", "Popen.poll", True),
    ("cloudpickle.cloudpickle", "dumps", False), ("threading", "Thread.run", False),
    ("covalent_dispatcher._core.dispatcher", "wait", False),  # only the standard library's
])
def test_waiting_leaves(module: str, function: str, expected: bool) -> None:
    assert H.waiting(module, function) is expected


def _rounds(seconds: dict[Frame, list[float]]) -> pd.DataFrame:
    """Per-run hotspots of rounds where each leaf frame took the given seconds."""
    runs = []
    for i in range(len(next(iter(seconds.values())))):
        counts = {(R.NODE, "server", (MAIN, f)): round(s[i] * RATE)
                  for f, s in seconds.items() if s[i] > 0}
        runs.append(_attributed(counts, f"run{i}"))
    return H.hotspots(pd.concat(runs), RATE, per_run=True)


def test_differential_finds_the_grower_with_ci_and_p() -> None:
    ref = _rounds({DUMPS: [0.50, 0.55, 0.45, 0.50, 0.52, 0.48],
                   WAIT: [1.0, 1.1, 0.9, 1.0, 1.05, 0.95]})
    env = _rounds({DUMPS: [1.00, 1.10, 0.90, 1.05, 0.95, 1.02],
                   WAIT: [1.0, 0.9, 1.1, 1.05, 0.95, 1.0],
                   MAIN: [0.2, 0.0, 0.3, 0.2, 0.0, 0.25]})  # new in env (0 in some runs)
    diff = H.differential(env, ref).set_index("function")
    d = diff.loc["dumps"]
    assert d["delta_s"] == pytest.approx(0.51, abs=0.02)
    assert d["ci_low"] > 0.3 and d["ci_high"] < 0.7
    # Complete separation of 6 runs against 6: the exact permutation p, 2 / C(12, 6).
    assert d["p"] == pytest.approx(2 / 924) and d["n_env"] == d["n_ref"] == 6
    assert bool(d["tested"]) and bool(d["significant"]) and d["p_adj"] < 0.05
    assert bool(d["top_grower"]) and diff["top_grower"].sum() == 1
    # A server thread waiting is not the part's work: shown, never tested nor named.
    w = diff.loc["EpollSelector.select"]
    assert abs(w["delta_s"]) < 0.05 and w["ci_low"] <= 0 <= w["ci_high"]
    assert bool(w["waiting"]) and not w["tested"] and pd.isna(w["p"])
    assert not w["significant"]
    new = diff.loc["run_workflow"]
    assert new["ref_s"] == 0 and new["env_s"] == pytest.approx(0.2)
    # Absent from 2 of its 6 runs: tested, not shown different at this level.
    assert bool(new["tested"]) and 0.05 < new["p"] < 0.1 and not new["significant"]
    assert set(diff["part"]) == {R.NODE}


def test_differential_of_identical_rounds_is_zero() -> None:
    same = _rounds({DUMPS: [0.5, 0.5, 0.5]})
    diff = H.differential(same, same)
    assert set(diff["function"]) == {"dumps", "run_workflow"}  # the leaf and its caller
    assert set(diff["delta_s"]) == {0.0} and not diff["significant"].any()
    assert not diff["top_grower"].any()


def _submit_rounds(planted: list[float], base: float = 0.3) -> pd.DataFrame:
    """Submit: the client waits on HTTP while the server imports the manifest, for
    `base` + the planted seconds; the server's spinning function holds the planted ones."""
    spin = Frame("/repo/tests/planted/sitecustomize.py", "planted_slow_step", 7)
    recv = Frame("/usr/lib/python3.11/socket.py", "SocketIO.readinto", 707)
    runs = []
    for i, s in enumerate(planted):
        counts = {(R.SUBMIT, "client", (MAIN, recv)): round((base + s) * RATE),
                  (R.SUBMIT, "server", (MAIN, DUMPS)): round(base * RATE)}
        if s:
            counts[(R.SUBMIT, "server", (MAIN, spin))] = round(s * RATE)
        runs.append(_attributed(counts, f"run{i}"))
    return H.hotspots(pd.concat(runs), RATE, per_run=True)


def test_the_grower_named_is_the_work_not_the_wait_on_it() -> None:
    diff = H.differential(_submit_rounds([0.5, 0.52, 0.48, 0.5, 0.51, 0.49]),
                          _submit_rounds([0.0] * 6))
    rows = diff.set_index("function")
    # The client's wait grew as much as the server's work: both significant, the work named.
    assert bool(rows.loc["SocketIO.readinto", "significant"])
    assert rows.loc["SocketIO.readinto", "delta_s"] >= rows.loc["planted_slow_step", "delta_s"]
    top = diff[diff["top_grower"]]
    assert list(top["function"]) == ["planted_slow_step"] and list(top["role"]) == ["server"]
    assert bool(top["significant"].iloc[0])
    # The growers table, from hotspots.csv rows of two environments, says the same.
    hot = pd.concat([
        _submit_rounds([0.0] * 6).assign(environment="ref", run_id=lambda d: "a" + d.run_id),
        _submit_rounds([0.5] * 6).assign(environment="slow", run_id=lambda d: "b" + d.run_id),
    ]).assign(config_id="c", executor="local")
    (grown,) = H.growers(H.environment_differentials(hot)).itertuples()
    assert (grown.environment, grown.reference, grown.part, grown.function,
            grown.runs) == ("slow", "ref", R.SUBMIT, "planted_slow_step", "6/6")
    assert grown.significant and grown.delta_s == pytest.approx(0.5)
    assert pd.isna(grown.via_function)  # work, not a wait: no call to name it under


def test_a_wait_that_grew_is_named_with_the_call_it_waited_under() -> None:
    """The server's work spread thin (no function of it grows much), the client waits
    longer in one call: the grower is the wait, named with the client's call that grew."""
    recv = Frame("/usr/lib/python3.11/socket.py", "SocketIO.readinto", 707)
    put = Frame(f"{SITE}/covalent/_api/apiclient.py", "CovalentAPIClient.put", 80)

    def rounds(extra: float, env: str) -> pd.DataFrame:
        runs = [_attributed({(R.SUBMIT, "client", (MAIN, put, recv)):
                             round((0.3 + extra + 0.01 * i) * RATE)}, f"{env}{i}")
                for i in range(6)]
        return H.hotspots(pd.concat(runs), RATE, per_run=True).assign(environment=env)

    hot = pd.concat([rounds(0.0, "ref"), rounds(0.4, "new")]).assign(config_id="c",
                                                                     executor="local")
    (grown,) = H.growers(H.environment_differentials(hot)).itertuples()
    assert (grown.function, grown.waiting, grown.significant) == ("SocketIO.readinto", True,
                                                                   True)
    assert (grown.via_module, grown.via_function) == ("covalent._api.apiclient",
                                                      "CovalentAPIClient.put")
    assert grown.via_delta_s == pytest.approx(0.4, abs=0.02)


def test_a_function_below_the_floor_is_not_tested() -> None:
    rare = Frame(f"{SITE}/covalent/_shared_files/util.py", "rare", 3)
    # One sample in every run of env, none in ref: separated, yet at 0.02 s per run a
    # single sample's noise; the floor keeps it out of the family.
    diff = H.differential(_rounds({rare: [1 / RATE] * 8}), _rounds({DUMPS: [0.5] * 8}))
    row = diff.set_index("function").loc["rare"]
    assert not row["tested"] and pd.isna(row["p"]) and not row["significant"]


def test_no_difference_is_found_significant_at_most_alpha_of_the_time() -> None:
    """Comparisons of 8 runs against 8 with no difference at all, 10 functions each, noise
    as profiles have it (skewed, often 0): the share of comparisons with any significant
    function stays within what the level allows (2 of 40 expected). Uncorrected, a family
    of 10 would be wrong in about 40 % of them."""
    rng = np.random.default_rng(7)
    frames = [Frame(f"{SITE}/covalent/m{i}.py", f"f{i}", 1) for i in range(10)]
    scale = rng.uniform(0.05, 0.5, len(frames))
    any_sig = 0
    for _ in range(40):
        draw = [{f: list(np.where(rng.random(8) < 0.7, rng.gamma(2, s / 2, 8), 0.0))
                 for f, s in zip(frames, scale, strict=True)} for _ in range(2)]
        diff = H.differential(_rounds(draw[0]), _rounds(draw[1]))
        assert diff["tested"].sum() >= 8
        any_sig += bool(diff["significant"].any())
    # P(binomial(40, 0.05) >= 7) = 0.014.
    assert any_sig < 7, any_sig


# -- trace.json and speedscope --------------------------------------------------------------

_NUM = {"type": "number"}
TRACE_SCHEMA = {
    "type": "object",
    "required": ["traceEvents", "displayTimeUnit"],
    "properties": {
        "displayTimeUnit": {"enum": ["ms", "ns"]},
        "otherData": {"type": "object"},
        "traceEvents": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["ph", "pid", "tid", "name"],
            "properties": {"ph": {"enum": ["X", "M", "i"]}, "pid": {"type": "integer"},
                           "tid": {"type": "integer"}, "name": {"type": "string"},
                           "cat": {"type": "string"}, "args": {"type": "object"}},
            "allOf": [
                {"if": {"properties": {"ph": {"const": "X"}}},
                 "then": {"required": ["ts", "dur"],
                          "properties": {"ts": _NUM, "dur": {"type": "number", "minimum": 0}}}},
                {"if": {"properties": {"ph": {"const": "i"}}},
                 "then": {"required": ["ts", "s"],
                          "properties": {"ts": _NUM, "s": {"enum": ["g", "p", "t"]}}}},
                {"if": {"properties": {"ph": {"const": "M"}}},
                 "then": {"required": ["args"], "properties": {
                     "name": {"enum": ["process_name", "thread_name", "process_sort_index",
                                       "thread_sort_index"]}}}},
            ]}},
    },
}
# The parts of speedscope's file-format-schema.json (evented profiles) that we write.
SPEEDSCOPE_SCHEMA = {
    "type": "object",
    "required": ["$schema", "profiles", "shared"],
    "properties": {
        "$schema": {"const": T.SPEEDSCOPE_SCHEMA},
        "shared": {"type": "object", "required": ["frames"], "properties": {"frames": {
            "type": "array", "items": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string"}, "file": {"type": "string"}, "line": _NUM}}}}},
        "profiles": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["type", "name", "unit", "startValue", "endValue", "events"],
            "properties": {
                "type": {"const": "evented"}, "name": {"type": "string"},
                "unit": {"enum": ["seconds", "milliseconds", "microseconds"]},
                "startValue": _NUM, "endValue": _NUM,
                "events": {"type": "array", "items": {
                    "type": "object", "required": ["type", "frame", "at"],
                    "properties": {"type": {"enum": ["O", "C"]}, "frame": _NUM,
                                   "at": _NUM}}}}}},
    },
}


def _run_phases(sampled: dict) -> list[dict]:
    """A Covalent-like run around the target: client phases and its functions as tasks."""
    spans = sampled["spans"]
    end = spans["child_fn"][1] + 0.2
    rows = [_phase(R.SUBMIT, 0.0, 0.1), _phase(R.UNTIL_RUNNING, 0.1, 0.15),
            _phase(R.SERVER, 0.15, end), _phase(R.COMPLETION_DETECT, end, end + 0.05),
            _phase(R.RETRIEVE, end + 0.05, end + 0.1)]
    for name, (a, b) in spans.items():
        pid = sampled["child"] if name == "child_fn" else sampled["pid"]
        rows += [_phase(R.NODE, a, b, name), _phase(R.IN_TASK, a, b, name, pid)]
    rows.append(_phase(R.NODE, spans["busy_fn"][0], spans["busy_fn"][1], "overlapping"))
    return rows


def _check_nesting(events: list[dict]) -> None:
    """On each track, X slices nest: a slice starting inside another ends inside it."""
    tracks: dict[tuple[int, int], list[dict]] = {}
    for e in events:
        if e["ph"] == "X":
            tracks.setdefault((e["pid"], e["tid"]), []).append(e)
    for track in tracks.values():
        stack: list[int] = []
        for e in sorted(track, key=lambda e: (e["ts"], -e["dur"])):
            while stack and stack[-1] <= e["ts"]:
                stack.pop()
            assert not stack or e["ts"] + e["dur"] <= stack[-1], (e, stack)
            stack.append(e["ts"] + e["dur"])


def test_trace_json_is_valid_and_shows_phases_nodes_tasks_and_stacks(sampled: dict,
                                                                     tmp_path: Path) -> None:
    sampler = sampled["sampler"]
    names = {pid: p.cmdline for pid, p in sampler.processes.items()}
    path = T.write_trace(tmp_path / "trace.json", _run_phases(sampled), sampled["samples"],
                         RATE, pids={"client": 1, "server": sampled["pid"]}, names=names)
    doc = json.loads(path.read_text())
    jsonschema.validate(doc, TRACE_SCHEMA)
    events = doc["traceEvents"]
    _check_nesting(events)
    x = [e for e in events if e["ph"] == "X"]
    start = doc["otherData"]["run_start_us"]
    phases = {e["name"]: e for e in x if e["cat"] == "phase" and e["pid"] == 1}
    assert list(phases) == [R.SUBMIT, R.UNTIL_RUNNING, R.SERVER, R.COMPLETION_DETECT,
                            R.RETRIEVE] and phases[R.SUBMIT]["ts"] == start
    nodes = [e for e in x if e["cat"] == "node"]
    assert {e["pid"] for e in nodes} == {sampled["pid"]}
    assert len({e["tid"] for e in nodes}) == 2  # the overlapping node got a lane of its own
    tasks = {e["name"]: e for e in x if e["cat"] == "in_task"}
    assert tasks["child_fn"]["pid"] == sampled["child"]
    busy = [e for e in x if e["cat"] == "sample" and e["name"] == "busy_fn"
            and e["pid"] == sampled["pid"]]  # (the child's child_fn calls it too)
    child = [e for e in x if e["cat"] == "sample" and e["name"] == "child_fn"]
    assert busy and child and {e["pid"] for e in child} == {sampled["child"]}
    a, b = sampled["spans"]["busy_fn"]
    assert min(e["ts"] for e in busy) >= start + (a - ALIGN_S - 0.5 / RATE) * 1e6
    assert max(e["ts"] + e["dur"] for e in busy) <= start + (b + LATE_S + 0.5 / RATE) * 1e6
    meta = {(e["pid"], e["name"]): e["args"] for e in events if e["ph"] == "M"}
    assert meta[(sampled["child"], "process_name")]["name"].startswith("worker ")
    assert meta[(1, "process_name")]["name"] == "client 1"


def test_speedscope_file_per_process_is_valid_and_balanced(sampled: dict,
                                                           tmp_path: Path) -> None:
    paths = T.write_speedscope_files(tmp_path, sampled["samples"], RATE)
    assert set(paths) == {s.pid for s in sampled["samples"]}
    assert paths[sampled["child"]].name == f"speedscope-worker-{sampled['child']}.json"
    for path in paths.values():
        doc = json.loads(path.read_text())
        jsonschema.validate(doc, SPEEDSCOPE_SCHEMA)
        for profile in doc["profiles"]:
            open_: list[int] = []
            last = profile["startValue"]
            for ev in profile["events"]:
                assert ev["at"] >= last
                last = ev["at"]
                if ev["type"] == "O":
                    open_.append(ev["frame"])
                else:
                    assert open_.pop() == ev["frame"]
            assert not open_ and profile["endValue"] == last
    doc = json.loads(paths[sampled["child"]].read_text())
    frames = doc["shared"]["frames"]
    busy = 0.0
    for profile in doc["profiles"]:
        opened = {}
        for ev in profile["events"]:
            if frames[ev["frame"]]["name"] == "child_fn":
                if ev["type"] == "O":
                    opened[ev["frame"]] = ev["at"]
                else:
                    busy += ev["at"] - opened.pop(ev["frame"])
    assert abs(busy - 0.3) < SECONDS_TOL


def test_trace_events_of_a_run_without_samples_still_has_every_span() -> None:
    events, start = T.trace_events(PHASES, [], RATE)
    x = [e for e in events if e["ph"] == "X"]
    assert start == 0 and len(x) == len(PHASES) + 1  # + the server span on the server track
    jsonschema.validate({"traceEvents": events, "displayTimeUnit": "ms"}, TRACE_SCHEMA)
    _check_nesting(events)


def test_pyspy_comes_with_the_project() -> None:
    """A dependency (pyproject.toml): the sampling tests run, never skip, on a fresh install."""
    assert S.find_pyspy() is not None
