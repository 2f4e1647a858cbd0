"""One configuration in one mode -> one record: timings, metrics, ids, and phases.

The Covalent path times the client's own view of a run: the dispatch call, waiting for a
terminal status (polled every POLL_S, not the stock 1 s sleep, which would quantise wall
times to about a second), and downloading the result. Tasks in both modes are wrapped by
a probe that records their own time (bench.probes), so a run's wall time can be split
into phases: client submit, wait until the server runs it, each task's node span and
in-task time, completion detection, result retrieval.
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import covalent as ct
import psutil
from covalent._results_manager.results_manager import ResultManager

from bench.probes import read_probes, task_probe
from mnist_core.config import WorkflowConfig
from mnist_core.workflow import WorkflowOutput, dispatch, output_of, run_plain, status_name

POLL_S = 0.05
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "POSTPROCESSING_FAILED"}


class DispatchTimeoutError(TimeoutError):
    pass


@dataclass
class RunRecord:
    """A measured run: what the records writers turn into CSV rows."""

    mode: str
    executor: str
    wall_s: float
    output: WorkflowOutput | None
    run_id: str = ""
    dispatch_id: str = ""
    status: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    phases: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""

    def row(self) -> dict[str, Any]:
        out = self.output
        return {
            "run_id": self.run_id,
            "mode": self.mode,
            "executor": self.executor,
            "wall_s": round(self.wall_s, 4),
            "accuracy": out.accuracy if out else None,
            "accuracies": out.accuracies if out else None,
            "test_loss": out.test_loss if out else None,
            "weights_sha256": out.weights_sha256 if out else None,
            "torch_threads": out.threads if out else None,
            "resolved_device": out.device if out else None,
            "train_losses": out.train_losses if out else None,
            "train_counter": out.train_counter if out else None,
            "dispatch_id": self.dispatch_id,
            "status": self.status,
            "error": self.error,
            **{k: round(v, 4) for k, v in self.timings.items()},
        }


def _phase(phase: str, start: float, end: float, task: str = "", **extra: Any) -> dict:
    return {"phase": phase, "task": task, "start_s": start, "duration_s": end - start, **extra}


def _in_task_phases(probes: list[dict], t0: float) -> list[dict]:
    return [
        _phase(
            "in_task", p["start"] - t0, p["end"] - t0, p["task"], cpu_s=p["cpu_s"],
            sys_cpu_s=p["sys_cpu_s"], page_faults=p["page_faults"],
            task_env=";".join(f"{k}={v}" for k, v in p["env"].items() if v),
            pid=p["pid"], threads=p["threads"], maxrss_mb=round(p["maxrss_mb"], 1),
        )
        for p in probes
    ]


class CpuMeter:
    """CPU seconds used by a set of processes (the Covalent server's tree) over a span.

    On a plain run this is the idle server's tax on the machine; on a Covalent run it
    also holds the tasks that ran in the server's pool or Dask workers."""

    def __init__(self, processes: list[psutil.Process]) -> None:
        self._procs = processes
        self._start = {p.pid: self._cpu(p) for p in processes}

    @staticmethod
    def _cpu(proc: psutil.Process) -> float:
        try:
            t = proc.cpu_times()
            return t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            return 0.0

    def seconds(self, processes: list[psutil.Process]) -> float:
        """CPU since start, over the processes alive then and those started since."""
        return sum(self._cpu(p) - self._start.get(p.pid, 0.0) for p in processes)


def _client_rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def measure_plain(config: WorkflowConfig, probe_dir: str | Path) -> RunRecord:
    """One plain run; the server's CPU over it is metered by measure_plain_batch."""
    run_id = uuid.uuid4().hex[:12]
    t0 = time.time()
    start = time.perf_counter()
    output = run_plain(config, wrap=task_probe(probe_dir, run_id))
    wall = time.perf_counter() - start
    timings = {"client_rss_mb": _client_rss_mb()}
    phases = _in_task_phases(read_probes(probe_dir, run_id), t0)
    return RunRecord(
        "plain", "", wall, output, run_id, status="COMPLETED", timings=timings, phases=phases
    )


def _stock_wait(dispatch_id: str, address: str, results_dir: str, seen: list[float]) -> None:
    """What `ct.get_result(wait=True)` does before downloading: poll, sleep 1 s, repeat."""
    try:
        ResultManager.from_dispatch_id(dispatch_id, results_dir, wait=True,
                                       dispatcher_addr=address)
        seen.append(time.perf_counter())
    except Exception:  # the measured path reports failures; this column just stays empty
        pass


def _epoch(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    # Covalent stores UTC; some paths hand it back without tzinfo.
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _output_sizes(dispatch_id: str, address: str, results_dir: str) -> dict[int, int]:
    """Serialized bytes of each node's output, from the dispatch manifest."""
    manager = ct.get_result_manager(dispatch_id, results_dir, dispatcher_addr=address)
    nodes = manager._manifest["lattice"]["transport_graph"]["nodes"]
    return {node["id"]: node["assets"]["output"].get("size") or 0 for node in nodes}


@dataclass
class _Dispatched:
    """A dispatch in flight: its ids, clocks and the stock-waiter thread beside it."""

    run_id: str
    dispatch_id: str
    t0: float  # wall clock at the run's start, to place server timestamps on our axis
    start: float  # perf_counter at the run's start
    submitted: float
    stock_seen: list[float]
    stock_dir: tempfile.TemporaryDirectory
    stock: threading.Thread
    status: str = ""
    done: float = 0.0


def _submit(config: WorkflowConfig, executor: str, address: str, probe_dir: str | Path,
            dispatch_to: Any = None) -> _Dispatched:
    run_id = uuid.uuid4().hex[:12]
    t0 = time.time()
    start = time.perf_counter()
    dispatch_id = dispatch(config, executor if dispatch_to is None else dispatch_to, address,
                           wrap=task_probe(probe_dir, run_id))
    submitted = time.perf_counter()
    stock_seen: list[float] = []
    stock_dir = tempfile.TemporaryDirectory(prefix="covalent-bench-stock-")
    stock = threading.Thread(
        target=_stock_wait, args=(dispatch_id, address, stock_dir.name, stock_seen), daemon=True
    )
    stock.start()
    return _Dispatched(run_id, dispatch_id, t0, start, submitted, stock_seen, stock_dir, stock)


def _await_all(runs: list[_Dispatched], address: str, timeout_s: float) -> None:
    """Poll every POLL_S until each dispatch is terminal; note when each was seen so."""
    pending = list(runs)
    since = time.perf_counter()
    while pending:
        if time.perf_counter() - since > timeout_s:
            late = ", ".join(f"{r.dispatch_id} ({r.status or 'no status'})" for r in pending)
            raise DispatchTimeoutError(
                f"still running after {timeout_s:.0f} s on {address}: {late}"
            )
        time.sleep(POLL_S)
        for run in list(pending):
            reply = ct.get_result(run.dispatch_id, status_only=True, dispatcher_addr=address)
            run.status = status_name(reply["status"])
            if run.status in TERMINAL:
                run.done = time.perf_counter()
                pending.remove(run)


def _collect(run: _Dispatched, executor: str, address: str, probe_dir: str | Path) -> RunRecord:
    """Download the result and turn the run's clocks into timings and phases."""
    with tempfile.TemporaryDirectory(prefix="covalent-bench-result-") as results_dir:
        retrieve_start = time.perf_counter()
        result = ct.get_result(
            run.dispatch_id,
            dispatcher_addr=address,
            results_dir=results_dir,
            intermediate_outputs=False,
        )
        try:
            output = output_of(result, address, results_dir)
            error = ""
        except Exception as exc:  # recorded, then re-raised by the caller
            output, error = None, str(exc)
        end = time.perf_counter()
        sizes = _output_sizes(run.dispatch_id, address, results_dir)  # after the clock stops
    run.stock.join(timeout=5)
    run.stock_dir.cleanup()

    start, t0 = run.start, run.t0
    rel = {"submitted": run.submitted - start, "done": run.done - start,
           "retrieve": retrieve_start - start, "end": end - start}
    server_start, server_end = _epoch(result.start_time), _epoch(result.end_time)
    phases = [_phase("submit", 0.0, rel["submitted"])]
    timings = {
        "submit_s": rel["submitted"],
        "retrieve_s": rel["end"] - rel["retrieve"],
        "client_rss_mb": _client_rss_mb(),
    }
    if run.stock_seen:  # stock detection, then the same download as ours
        timings["stock_wall_s"] = run.stock_seen[0] - start + timings["retrieve_s"]
    if server_start is not None and server_end is not None:
        s0, s1 = server_start - t0, server_end - t0
        timings["server_s"] = s1 - s0
        phases += [
            _phase("until_running", rel["submitted"], s0),
            _phase("server", s0, s1),
            _phase("completion_detect", s1, rel["done"]),
        ]
    for node in result.get_all_node_results():
        node_start, node_end = _epoch(node["start_time"]), _epoch(node["end_time"])
        if node["node_name"].startswith(":parameter:") or node_start is None:
            continue
        phases.append(
            _phase("node", node_start - t0, (node_end or node_start) - t0, node["node_name"],
                   bytes=sizes.get(node["node_id"]))
        )
    phases += _in_task_phases(read_probes(probe_dir, run.run_id), t0)
    if rel["retrieve"] > rel["done"]:  # in a batch, others' downloads came first
        phases.append(_phase("queued_for_retrieve", rel["done"], rel["retrieve"]))
    phases.append(_phase("retrieve", rel["retrieve"], rel["end"]))
    return RunRecord(
        "covalent", executor, end - start, output, run.run_id, run.dispatch_id, run.status,
        timings, phases, error,
    )


def measure_covalent(
    config: WorkflowConfig,
    executor: str,
    address: str,
    probe_dir: str | Path,
    server: Any = None,
    timeout_s: float = 3600.0,
    dispatch_to: Any = None,
) -> RunRecord:
    """Dispatch, poll to a terminal status, download; a failed dispatch is recorded too.

    `executor` is the record's label; `dispatch_to` what the lattice runs on if that
    differs (an external cluster's scheduler address for the label 'external')."""
    return measure_covalent_batch(
        config, executor, address, probe_dir, server, 1, timeout_s, dispatch_to
    )[0]


def measure_covalent_batch(
    config: WorkflowConfig,
    executor: str,
    address: str,
    probe_dir: str | Path,
    server: Any = None,
    concurrency: int = 1,
    timeout_s: float = 3600.0,
    dispatch_to: Any = None,
) -> list[RunRecord]:
    """`concurrency` dispatches submitted back to back, awaited together, then downloaded.

    Each record's wall_s runs from its own dispatch call to its result in hand; latency_s
    from the batch's start; batch_wall_s is the whole batch (the same on every record)."""
    meter = CpuMeter(server.processes()) if server is not None else None
    batch_start = time.perf_counter()
    runs = [_submit(config, executor, address, probe_dir, dispatch_to)
            for _ in range(concurrency)]
    _await_all(runs, address, timeout_s)
    records = []
    for run in sorted(runs, key=lambda r: r.done):  # first finished, first fetched
        record = _collect(run, executor, address, probe_dir)
        record.timings["latency_s"] = time.perf_counter() - batch_start
        record.timings["slot"] = runs.index(run)  # order of submission
        records.append(record)
    _finish_batch(records, batch_start, meter, server)
    return sorted(records, key=lambda r: r.timings["slot"])


def measure_plain_batch(
    config: WorkflowConfig, probe_dir: str | Path, server: Any = None, concurrency: int = 1
) -> list[RunRecord]:
    """`concurrency` plain runs, one after another (what a user without Covalent does)."""
    meter = CpuMeter(server.processes()) if server is not None else None
    batch_start = time.perf_counter()
    records = []
    for slot in range(concurrency):
        record = measure_plain(config, probe_dir)
        record.timings["latency_s"] = time.perf_counter() - batch_start
        record.timings["slot"] = slot
        records.append(record)
    _finish_batch(records, batch_start, meter, server)
    return records


def _finish_batch(
    records: list[RunRecord], batch_start: float, meter: CpuMeter | None, server: Any
) -> None:
    batch_wall = time.perf_counter() - batch_start
    server_cpu = meter.seconds(server.processes()) if meter is not None else None
    for record in records:
        record.timings["batch_wall_s"] = batch_wall
        if server_cpu is not None:  # of the whole batch: the server can't tell runs apart
            record.timings["server_cpu_s"] = server_cpu
