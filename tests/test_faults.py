"""Faults and bad input, on a real server: the run never hangs, nothing measured is lost,
every run leaves a row with its reason, no process is left behind, and a rerun works."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import psutil
import pytest

from mnist_core.data import raw_dir, write_synthetic_mnist

REPO = Path(__file__).resolve().parents[1]

# A lattice with one task that takes `sleep_s`: long enough to kill things under it. The
# task notes its pid in STARTED first: a test waits for that, not for a guessed time.
SLOW_WORKFLOW = '''
import os
import pathlib
import time
import covalent as ct

STARTED = pathlib.Path({started!r})


@ct.electron
def nap(sleep_s):
    with STARTED.open("a") as f:
        f.write(f"{{os.getpid()}}\\n")
    time.sleep(sleep_s)
    return sleep_s


@ct.lattice
def slow(sleep_s: float = 0.1):
    return nap(sleep_s)
'''


def _ours(state: Path) -> list[psutil.Process]:
    """Live processes started by a harness whose temporary state lives under `state`."""
    found = []
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
            cmd = " ".join(proc.cmdline())
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if any(str(state) in v for v in env.values()) or str(state) in cmd:
            found.append(proc)
    return found


def _bench(out: Path, state: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pytest", "bench", "--benchmark-only", "-q", "-p",
           "no:cacheprovider", "--bench-out", str(out), *args]
    env = {**os.environ, "TMPDIR": str(state)}
    env.pop("COVALENT_BENCH_SERVER", None)
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _rows(path: Path, at_least: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and len(path.read_text().splitlines()) >= at_least + 1:
            return
        time.sleep(0.2)
    raise AssertionError(f"no {at_least} rows in {path} in time")


def _wait_for(what: Callable[[], bool], timeout: float = 120, why: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError(f"not in {timeout:.0f} s: {why}")
        time.sleep(0.1)


@pytest.fixture
def slow_module(tmp_path: Path) -> Path:
    path = tmp_path / "slow_wf.py"
    path.write_text(SLOW_WORKFLOW.format(started=str(tmp_path / "task-started")))
    return path


@pytest.mark.slow
def test_server_killed_mid_dispatch_ends_the_session_with_a_row_naming_it(
    slow_module: Path, tmp_path: Path
) -> None:
    out, state = tmp_path / "out", tmp_path / "state"
    state.mkdir()
    # The local task is killed under within a second of its start; 6 s leaves it running
    # then, and the plain run (its census read from it) takes 6 s, not 20.
    args = ["--bench-workload", f"{slow_module}:slow", "--bench-arg", "sleep_s=6",
            "--bench-set", "rounds=3", "--bench-set", "warmup_rounds=0",
            "--bench-set", "executors=['local']"]
    proc = _bench(out, state, *args)
    _rows(out / "runs.csv", 1, proc)  # the first plain run is in: local is dispatching now
    started = slow_module.parent / "task-started"  # the plain run's pid is the harness's
    _wait_for(lambda: set(started.read_text().split()) - {str(proc.pid)},
              why="the local task did not start")
    def is_server(proc: psutil.Process) -> bool:  # `python app.py`, not its shell
        cmd = proc.cmdline()
        return "app.py" in cmd and "python" in Path(cmd[0]).name

    mains = [p for p in _ours(state) if is_server(p)
             and (p.parent() is None or not is_server(p.parent()))]
    assert mains, "no server main process found"
    for p in mains:
        p.kill()
    output, _ = proc.communicate(timeout=120)  # a session that waits on forever fails here
    assert proc.returncode == 3, output[-3000:]
    assert "the Covalent server is gone" in output
    runs = pd.read_csv(out / "runs.csv")
    assert runs.iloc[0]["status"] == "COMPLETED" and runs.iloc[0]["mode"] == "plain"
    killed = runs.iloc[-1]
    assert killed["status"] == "ERROR" and "server" in killed["error"], killed.to_dict()
    _wait_for(lambda: not _ours(state), timeout=30, why="a process of the session is left")
    # A rerun works.
    rerun = _bench(out, state, "--bench-workload", f"{slow_module}:slow", "--bench-set",
                   "rounds=1", "--bench-set", "warmup_rounds=0", "--bench-set",
                   "executors=['local']")
    output, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, output[-3000:]
    assert (pd.read_csv(out / "runs.csv")["status"].iloc[-2:] == "COMPLETED").all()


@pytest.mark.slow
def test_a_task_that_never_ends_is_cancelled_at_the_dispatch_timeout(
    slow_module: Path, covalent_server, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pytest", "bench", "--benchmark-only", "-q", "-p",
           "no:cacheprovider", "--bench-out", str(out), "--covalent-address",
           covalent_server.address, "--bench-workload", f"{slow_module}:slow",
           "--bench-arg", "sleep_s=600", "--bench-set", "rounds=1", "--bench-set",
           "warmup_rounds=0", "--bench-set", "executors=['local']", "--bench-set",
           "timeout_s=5", "-k", "local"]
    # Ended by its 5 s timeout, not by the task's 600 s (nor this test's own 300 s).
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout[-3000:]
    (row,) = pd.read_csv(out / "runs.csv").itertuples()
    assert row.status == "TIMEOUT" and "dispatch timeout of 5 s; cancelled" in row.error


def test_read_only_output_directory_fails_before_anything_runs(tmp_path: Path) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    if os.access(out, os.W_OK):  # root ignores permissions: use a path under a file
        out = tmp_path / "file" / "reports"
        (tmp_path / "file").write_text("not a directory")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "bench", "--benchmark-only", "-q", "-p",
         "no:cacheprovider", "--bench-profile", "smoke", "--bench-out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    # Exit 4, pytest's usage error, is raised while pytest configures, before any fixture
    # (and so before any server) exists.
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "--bench-out" in ln]
    assert lines and "Traceback" not in proc.stderr, proc.stdout + proc.stderr


@pytest.mark.parametrize("damage", ["header", "truncated", "altered"])
def test_damaged_mnist_fails_before_anything_runs_naming_the_file(
    tmp_path: Path, damage: str
) -> None:
    root = write_synthetic_mnist(tmp_path / "mnist", 64, 32, seed=0)
    target = raw_dir(root) / "train-images-idx3-ubyte"
    data = bytearray(target.read_bytes())
    if damage == "header":
        data[0:4] = b"\x00\x00\x00\x00"
    elif damage == "truncated":
        data = data[: len(data) // 2]
    else:  # the canonical size, other bytes: must fail the canonical checksum
        data = bytearray(16 + 60_000 * 784)
    target.write_bytes(bytes(data))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "bench", "--benchmark-only", "-q", "-p",
         "no:cacheprovider", "--bench-profile", "smoke", "--data-dir", str(root),
         "--bench-out", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    # Exit 4 (usage error) comes from pytest_configure: before any fixture or server.
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = proc.stdout + proc.stderr
    assert "cannot run the benchmark" in text and str(target) in text, text[-2000:]
    assert "Traceback" not in text
    assert not (tmp_path / "out" / "runs.csv").exists() or len(
        (tmp_path / "out" / "runs.csv").read_text().splitlines()) <= 1


@pytest.mark.slow
def test_a_worker_killed_mid_task_flags_the_run(slow_module: Path, tmp_path: Path) -> None:
    """The server's Dask worker dies under a task: Dask restarts it and reruns the task, so
    the run completes; its row is flagged, and the summary leaves it out."""
    from bench.run.runner import measure_covalent_batch
    from bench.services.server import covalent_server
    from bench.workloads import workload_for

    workload = workload_for(f"{slow_module}:slow")
    params = workload.check({"sleep_s": 8.0})
    with covalent_server() as server:
        import threading

        def kill_a_worker() -> None:
            _wait_for((tmp_path / "task-started").exists, why="the task did not start")
            workers = [p for p in server.processes()
                       if "spawn_main" in " ".join(p.cmdline())]
            for p in workers[:1]:
                p.send_signal(signal.SIGKILL)

        killer = threading.Thread(target=kill_a_worker)
        killer.start()
        (record,) = measure_covalent_batch(workload, params, executor="dask",
                                           address=server.address, probe_dir=tmp_path,
                                           server=server)
        killer.join()
    assert record.status == "COMPLETED", record.error
    assert record.flags.startswith("worker_restart"), record.flags
