"""Plain runs get the run timeout too (issue 22): a task past `timeout_s` is stopped where it
is and the run is a TIMEOUT row, whatever the task does (sleeps, spins, swallows exceptions);
the next run goes on; pytest-timeout is only a backstop far above the harness's timeouts."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import covalent as ct
import pytest

from bench.config.profiles import load_profile
from bench.engine import Settings, plan
from bench.records import TIMEOUT
from bench.run.runner import measure_plain
from bench.suites.plugin import backstop_s
from bench.workloads.lattice import LatticeWorkload


@ct.electron
def stuck(kind: str) -> str:
    if kind == "sleep":
        time.sleep(120)
    elif kind == "spin":
        while True:
            pass
    elif kind == "swallow":  # a task that catches everything it can
        while True:
            try:
                time.sleep(120)
            except Exception:  # noqa: BLE001 - the point of the test
                pass
    return kind


@ct.lattice
def hangs(kind: str = "sleep") -> str:
    return stuck(kind)


@pytest.mark.parametrize("kind", ["sleep", "spin", "swallow"])
def test_a_plain_run_past_its_timeout_is_stopped_and_the_next_runs(kind: str,
                                                                    tmp_path: Path) -> None:
    workload = LatticeWorkload(hangs)
    before = signal.getsignal(signal.SIGALRM)
    record = measure_plain(workload, workload.check({"kind": kind}), tmp_path, timeout_s=1.0)
    assert record.status == TIMEOUT, (record.status, record.error)
    assert "run timeout of 1 s" in record.error and "timeout_s" in record.error
    assert signal.getsignal(signal.SIGALRM) is before  # the alarm is the harness's, and gone
    done = measure_plain(workload, workload.check({"kind": "none"}), tmp_path, timeout_s=1.0)
    assert done.status == "COMPLETED" and done.outcome is not None


def test_pytest_timeout_is_a_backstop_far_above_the_run_timeouts() -> None:
    profile = load_profile("smoke", ["timeout_s=5000", "rounds=3"], data_dir="/mnist")
    grouped = plan(profile, Settings(out_dir=Path("."), order="grouped"))
    interleaved = plan(profile, Settings(out_dir=Path(".")))
    assert all(backstop_s(c) > 5000 for c in interleaved)
    assert all(backstop_s(c) > 4 * 5000 for c in grouped)  # 1 warm-up + 3 rounds in one case
