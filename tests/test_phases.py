"""Where the time goes: task probes and the wall-time breakdown, both modes."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bench import records as R
from bench.adapters import covalent_api
from bench.analysis.decompose import SEGMENTS, breakdown, union_length, with_breakdown
from bench.records import RunContext, RunRecord, phase_rows, run_row
from bench.run.probes import ENV_KNOBS, read_probes, task_probe
from bench.run.runner import measure_covalent_batch, measure_plain
from bench.workloads.mnist import MnistWorkload
from mnist_core.config import WorkflowConfig
from mnist_core.model import new_model
from mnist_core.workflow import WorkflowOutput, build_lattice, run_plain

SLEEP_S = 1.0
TUTORIAL_TASKS = ["data_loader", "data_loader", "train_model", "test"]


def _params(config: WorkflowConfig) -> dict[str, Any]:
    return MnistWorkload().check(dataclasses.asdict(config))


def _measure_covalent(config: WorkflowConfig, executor: str, address: str, probe_dir: Path
                      ) -> RunRecord:
    (record,) = measure_covalent_batch(MnistWorkload(), _params(config), executor=executor,
                                       address=address, probe_dir=probe_dir)
    return record


def test_union_counts_parallel_time_once() -> None:
    assert union_length([(0, 2), (1, 3), (5, 6)]) == 4
    assert union_length([]) == 0


def test_probe_records_each_task_without_changing_results(small_config, tmp_path) -> None:
    plain = run_plain(small_config)
    raw = covalent_api.run_plain(build_lattice(), (new_model(small_config.seed), small_config),
                                 wrap=task_probe(tmp_path, "run1"))
    assert WorkflowOutput.from_raw(raw) == plain
    records = read_probes(tmp_path, "run1")
    assert [r["task"] for r in records] == TUTORIAL_TASKS
    for r in records:
        assert r["wall_s"] >= 0 and r["cpu_s"] >= 0 and r["end"] >= r["start"]
        assert r["threads"] == 1 and not r["failed"] and r["maxrss_mb"] > 0
        assert 0 <= r["sys_cpu_s"] <= r["cpu_s"] + 0.01 and r["page_faults"] >= 0
        assert set(r["env"]) == set(ENV_KNOBS)
        assert r["pid"] == os.getpid()  # plain: every task in this process


def test_task_work_is_summed_per_run_and_old_phases_still_read() -> None:
    def row(task: str, cpu: float, sys: float, faults: int, env: str) -> dict:
        return {"run_id": "r", "phase": R.IN_TASK, "task": task, "start_s": 0.0,
                "duration_s": 1.0, "cpu_s": cpu, "sys_cpu_s": sys, "page_faults": faults,
                "task_env": env}

    parts = breakdown(pd.DataFrame([
        row("train_model", 2.0, 0.5, 1000, "MALLOC_TRIM_THRESHOLD_=65536"),
        row("test", 1.0, 0.25, 10, "MALLOC_TRIM_THRESHOLD_=65536"),
    ])).iloc[0]
    assert (parts["in_task_cpu_s"], parts["in_task_sys_cpu_s"]) == (3.0, 0.75)
    assert parts["in_task_page_faults"] == 1010
    assert parts["task_env"] == "MALLOC_TRIM_THRESHOLD_=65536"
    old = breakdown(pd.DataFrame([{"run_id": "r", "phase": R.IN_TASK, "task": "t",
                                   "start_s": 0.0, "duration_s": 1.0}])).iloc[0]
    assert pd.isna(old["in_task_cpu_s"]) and old["task_env"] == ""


def _runs_frame(*records: RunRecord) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The records as the analysis reads them: runs.csv and phases.csv rows."""
    rows, phases = [], []
    for record in records:
        context = RunContext(session_id="s", profile="test", workload="mnist",
                             config_id="c", params={}, concurrency=1, round=0, warmup=False)
        row = run_row(context, record)
        rows.append(row)
        phases += phase_rows(row, record)
    return pd.DataFrame(rows), pd.DataFrame(phases)


def _check_consistent(record: RunRecord) -> pd.Series:
    runs, phases = _runs_frame(record)
    row = with_breakdown(runs, phases).iloc[0]
    # The named segments and the rest add up to the wall time; nothing is hidden.
    assert sum(row.get(s, 0) or 0 for s in SEGMENTS) == pytest.approx(row["wall_s"])
    for p in record.phases:  # every phase lies inside the run, on one clock
        assert -0.05 <= p["start_s"] and p["start_s"] + p["duration_s"] <= record.wall_s + 0.05
    assert {p["phase"] for p in record.phases} <= set(R.PHASES)
    return row


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "dask"])
def test_covalent_run_breaks_down_into_phases(
    small_config: WorkflowConfig, covalent_server, tmp_path, executor: str
) -> None:
    record = _measure_covalent(small_config, executor, covalent_server.address, tmp_path)
    assert record.status == "COMPLETED", record.error
    assert record.tasks_probed.endswith("/4"), record.tasks_probed  # 4 task nodes ran
    phases = {p["phase"] for p in record.phases}
    assert {R.SUBMIT, R.UNTIL_RUNNING, R.SERVER, R.NODE, R.IN_TASK, R.COMPLETION_DETECT,
            R.RETRIEVE} <= phases
    nodes = {p["task"]: p for p in record.phases if p["phase"] == R.NODE}
    in_task = {p["task"]: p for p in record.phases if p["phase"] == R.IN_TASK}
    assert {"data_loader", "train_model", "test"} <= set(nodes) & set(in_task)
    # The tutorial's data_loader outputs carry the data set: the biggest assets.
    assert nodes["data_loader"]["bytes"] > nodes["test"]["bytes"]
    for task, p in in_task.items():  # a task's own time sits inside its node's span
        assert p["duration_s"] <= nodes[task]["duration_s"] + 0.05, task
    row = _check_consistent(record)
    assert row["in_task_s"] > 0 and row["submit_s"] > 0
    # The probe sees the worker's environment: on dask, what the nanny set before spawning.
    knobs = {k: v for k, v in os.environ.items() if k in ENV_KNOBS}
    if executor == "dask":
        from distributed.nanny import _get_env_variables

        knobs.update(_get_env_variables("distributed.nanny.pre-spawn-environ"))
    expected = ";".join(f"{k}={knobs[k]}" for k in ENV_KNOBS if knobs.get(k))
    assert {p["task_env"] for p in in_task.values()} == {expected}


@pytest.mark.slow
def test_only_the_workflows_tasks_are_probed(
    small_config: WorkflowConfig, covalent_server, tmp_path
) -> None:
    """Probes time the workflow's own tasks, as on a plain run, not Covalent's helpers."""
    record = _measure_covalent(small_config, "local", covalent_server.address, tmp_path)
    assert record.status == "COMPLETED", record.error
    in_task = [p["task"] for p in record.phases if p["phase"] == R.IN_TASK]
    assert sorted(in_task) == sorted(TUTORIAL_TASKS)
    assert record.tasks_probed == "4/4"


def _sleep_in(
    task: str, inner: Callable, seconds: float = SLEEP_S, env_switch: str | None = None
) -> Callable:
    """Wrap tasks so that `task` sleeps inside its own (probed) time; with env_switch, only
    in processes where that variable is "1". Closures: shipped to Covalent by value."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if fn.__name__ != task:
            return inner(fn)

        def slow(*args: Any, **kwargs: Any) -> Any:
            import os

            if env_switch is None or os.environ.get(env_switch) == "1":
                time.sleep(seconds)
            return fn(*args, **kwargs)

        slow.__name__ = fn.__name__
        return inner(slow)

    return wrap


def _wait(dispatch_id: str, address: str, timeout_s: float = 300) -> str:
    deadline = time.monotonic() + timeout_s
    while (status := covalent_api.status(dispatch_id, address)) not in covalent_api.TERMINAL:
        assert time.monotonic() < deadline, f"dispatch {dispatch_id} still {status}"
        time.sleep(0.1)
    return status


@pytest.mark.slow
def test_sleep_inside_a_task_is_compute_not_orchestration(
    small_config: WorkflowConfig, covalent_server, tmp_path
) -> None:
    wrap = _sleep_in("train_model", task_probe(tmp_path, "slow"))
    address = covalent_server.address
    dispatch_id = covalent_api.dispatch(
        build_lattice(), "local", address, args=(new_model(small_config.seed), small_config),
        wrap=wrap,
    )
    assert _wait(dispatch_id, address) == "COMPLETED"
    result = covalent_api.fetch_result(dispatch_id, address, str(tmp_path / "r"))
    assert WorkflowOutput.from_raw(covalent_api.result_value(result)) == run_plain(small_config)
    in_task = {r["task"]: r for r in read_probes(tmp_path, "slow")}
    # The sleep is inside the task's own time, which lies inside its node's span.
    assert in_task["train_model"]["wall_s"] >= SLEEP_S
    (node,) = [n for n in covalent_api.node_runs(result) if n["name"] == "train_model"]
    assert node["kind"] == "task" and node["status"] == "COMPLETED"
    assert node["end"] - node["start"] >= in_task["train_model"]["wall_s"] - 0.05


def test_plain_run_has_in_task_phases(small_config: WorkflowConfig, tmp_path) -> None:
    record = measure_plain(MnistWorkload(), _params(small_config), tmp_path)
    assert record.status == "COMPLETED", record.error
    assert record.tasks_probed == "4/4"
    assert [p["task"] for p in record.phases] == TUTORIAL_TASKS
    assert {p["phase"] for p in record.phases} == {R.IN_TASK}
    row = _check_consistent(record)
    assert row["in_task_s"] <= row["wall_s"]
    parts = breakdown(_runs_frame(record)[1]).iloc[0]
    assert parts["executor_cost_s"] == parts["scheduling_gaps_s"] == 0


def test_failed_plain_run_is_a_record(small_config: WorkflowConfig, tmp_path) -> None:
    """A plain run that fails is a FAILED record with the error; the probe marks the task."""
    missing = dataclasses.replace(small_config, data_dir=str(tmp_path / "no-mnist-here"))
    record = measure_plain(MnistWorkload(), _params(missing), tmp_path)
    assert record.status == "FAILED" and record.outcome is None
    assert "RuntimeError: Dataset not found" in record.error, record.error
    assert [p["task"] for p in record.phases] == ["data_loader"]
    assert record.tasks_probed == "1/1"


@pytest.mark.slow
def test_client_delay_before_dispatch_lands_in_submit(
    small_config: WorkflowConfig, covalent_server, tmp_path, monkeypatch
) -> None:
    real_dispatch = covalent_api.dispatch

    def delayed(*args: Any, **kwargs: Any) -> str:
        time.sleep(SLEEP_S)  # e.g. a slow client: it must show up as submit, nowhere else
        return real_dispatch(*args, **kwargs)

    monkeypatch.setattr(covalent_api, "dispatch", delayed)
    record = _measure_covalent(small_config, "local", covalent_server.address, tmp_path)
    assert record.status == "COMPLETED", record.error
    assert record.timings["submit_s"] >= SLEEP_S
    (submit,) = [p for p in record.phases if p["phase"] == R.SUBMIT]
    assert submit["duration_s"] >= SLEEP_S and submit["start_s"] == 0
    row = _check_consistent(record)
    assert row["in_task_s"] < row["wall_s"] - SLEEP_S


SLOW_ENV = "BENCH_TEST_SLOW_UNDER_COVALENT"
SLOW_S = 3.0


@pytest.mark.slow
@pytest.mark.quiet  # compares a plain run's task time with a Covalent run's: run alone
def test_task_slower_only_under_covalent_is_compute_inflation(
    small_config: WorkflowConfig, tmp_path, monkeypatch
) -> None:
    import bench.run.runner as runner
    from bench.analysis.decompose import paired_rounds
    from bench.services.server import covalent_server

    real_probe = runner.task_probe
    monkeypatch.setattr(
        runner, "task_probe",
        lambda d, r: _sleep_in("train_model", real_probe(d, r), SLOW_S, SLOW_ENV),
    )
    with covalent_server(workers=1, env={SLOW_ENV: "1"}) as server:
        records = {
            "plain": measure_plain(MnistWorkload(), _params(small_config), tmp_path),
            "slow": _measure_covalent(small_config, "local", server.address, tmp_path),
        }
    assert records["slow"].status == "COMPLETED", records["slow"].error
    frames = {}
    for name, record in records.items():
        runs, phases = _runs_frame(record)
        frames[name] = with_breakdown(runs, phases)
    pair = paired_rounds(frames["plain"], frames["slow"]).iloc[0]
    # The plain run never slept (no env switch in this process); under Covalent it did,
    # and that time is counted as compute inflation, inside the tasks, not orchestration.
    assert pair["compute_inflation_s"] >= SLOW_S * 0.95
    slow_task = [p for p in records["slow"].phases
                 if p["phase"] == R.IN_TASK and p["task"] == "train_model"]
    assert slow_task[0]["duration_s"] >= SLOW_S
    # The same work both ways: the sleep changed the time, not the result.
    assert records["slow"].outcome.digest == records["plain"].outcome.digest
