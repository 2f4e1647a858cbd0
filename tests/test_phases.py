"""Where the time goes: task probes and the wall-time breakdown, both modes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest

from bench.analysis import SEGMENTS, _union_length, breakdown, with_breakdown
from bench.probes import read_probes, task_probe
from bench.runner import RunRecord, measure_covalent, measure_plain
from mnist_core.config import WorkflowConfig
from mnist_core.workflow import run_plain

SLEEP_S = 1.0


def test_union_counts_parallel_time_once() -> None:
    assert _union_length([(0, 2), (1, 3), (5, 6)]) == 4
    assert _union_length([]) == 0


def test_probe_records_each_task_without_changing_results(small_config, tmp_path) -> None:
    plain = run_plain(small_config)
    probed = run_plain(small_config, wrap=task_probe(tmp_path, "run1"))
    assert probed == plain
    records = read_probes(tmp_path, "run1")
    assert [r["task"] for r in records] == ["data_loader", "data_loader", "train_model", "test"]
    for r in records:
        assert r["wall_s"] >= 0 and r["cpu_s"] >= 0 and r["end"] >= r["start"]
        assert r["threads"] == 1 and not r["failed"] and r["maxrss_mb"] > 0


def _runs_frame(*records: RunRecord) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs = pd.DataFrame([r.row() for r in records])
    phases = pd.DataFrame([{"run_id": r.run_id, **p} for r in records for p in r.phases])
    return runs, phases


def _check_consistent(record: RunRecord) -> pd.Series:
    runs, phases = _runs_frame(record)
    row = with_breakdown(runs, phases).iloc[0]
    # The named segments and the rest add up to the wall time; nothing is hidden.
    assert sum(row.get(s, 0) or 0 for s in SEGMENTS) == pytest.approx(row["wall_s"])
    for p in record.phases:  # every phase lies inside the run, on one clock
        assert -0.05 <= p["start_s"] and p["start_s"] + p["duration_s"] <= record.wall_s + 0.05
    return row


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "dask"])
def test_covalent_run_breaks_down_into_phases(
    small_config: WorkflowConfig, covalent_server, tmp_path, executor: str
) -> None:
    record = measure_covalent(small_config, executor, covalent_server.address, tmp_path)
    assert record.status == "COMPLETED", record.error
    phases = {p["phase"] for p in record.phases}
    assert {"submit", "until_running", "server", "node", "in_task", "completion_detect",
            "retrieve"} <= phases
    nodes = {p["task"]: p for p in record.phases if p["phase"] == "node"}
    in_task = {p["task"]: p for p in record.phases if p["phase"] == "in_task"}
    assert {"data_loader", "train_model", "test"} <= set(nodes) & set(in_task)
    # The tutorial's data_loader outputs carry the data set: the biggest assets.
    assert nodes["data_loader"]["bytes"] > nodes["test"]["bytes"]
    for task, p in in_task.items():  # a task's own time sits inside its node's span
        assert p["duration_s"] <= nodes[task]["duration_s"] + 0.05, task
    row = _check_consistent(record)
    assert row["in_task_s"] > 0 and row["submit_s"] > 0


def _sleep_in(task: str, inner: Callable) -> Callable:
    """Wrap tasks so that `task` sleeps SLEEP_S inside its own (probed) time."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if fn.__name__ != task:
            return inner(fn)

        def slow(*args: Any, **kwargs: Any) -> Any:
            time.sleep(SLEEP_S)
            return fn(*args, **kwargs)

        slow.__name__ = fn.__name__
        return inner(slow)

    return wrap


@pytest.mark.slow
def test_sleep_inside_a_task_is_compute_not_orchestration(
    small_config: WorkflowConfig, covalent_server, tmp_path
) -> None:
    import covalent as ct

    from mnist_core.workflow import dispatch, output_of

    def in_task(run_id: str, slow: bool) -> dict[str, float]:
        probe = task_probe(tmp_path, run_id)
        wrap = _sleep_in("train_model", probe) if slow else probe
        dispatch_id = dispatch(small_config, "local", covalent_server.address, wrap=wrap)
        result = ct.get_result(dispatch_id, wait=True, dispatcher_addr=covalent_server.address,
                               results_dir=str(tmp_path / "r"))
        output_of(result)
        return {r["task"]: r["wall_s"] for r in read_probes(tmp_path, run_id)}

    fast, slow = in_task("fast", False), in_task("slow", True)
    assert slow["train_model"] - fast["train_model"] >= SLEEP_S * 0.95


def test_plain_run_has_in_task_phases(small_config: WorkflowConfig, tmp_path) -> None:
    record = measure_plain(small_config, tmp_path)
    assert [p["task"] for p in record.phases] == [
        "data_loader", "data_loader", "train_model", "test"]
    row = _check_consistent(record)
    assert row["in_task_s"] <= row["wall_s"]
    assert breakdown(_runs_frame(record)[1]).iloc[0]["server_orchestration_s"] == 0
