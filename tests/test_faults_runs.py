"""Faults of single runs, on a real server (issue 22, second sweep): every way a run can fail
leaves a row naming the failure, and the session goes on or ends with the reason."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench.records import load_runs
from bench.workloads.digest import digest

REPO = Path(__file__).resolve().parents[1]


def _bench(out: Path, address: str, *args: str, cwd: Path = REPO,
           timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", str(REPO / "bench"), "--benchmark-only", "-q", "-p",
           "no:cacheprovider", "--rootdir", str(REPO), "-c", str(REPO / "pyproject.toml"),
           "--bench-out", str(out), "--covalent-address", address,
           "--bench-set", "rounds=1", "--bench-set", "warmup_rounds=0", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


# --- A: an inputs factory that raises -------------------------------------------------------

BAD_INPUTS = '''
import covalent as ct


@ct.electron
def total(values):
    return sum(values)


@ct.lattice
def wf(values):
    return total(values)


def inputs(**params):
    raise ValueError("no inputs today")
'''


@pytest.mark.slow
def test_an_inputs_factory_that_raises_is_a_failed_row_in_every_mode(
    covalent_server, tmp_path: Path
) -> None:
    _write(tmp_path, {"bad_inputs.py": BAD_INPUTS})
    module = tmp_path / "bad_inputs.py"
    out = tmp_path / "out"
    proc = _bench(out, covalent_server.address, "--bench-workload", f"{module}:wf",
                  "--bench-inputs", f"{module}:inputs", "--bench-set", "executors=['local']")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 failed" in proc.stdout
    runs = load_runs(out)
    assert list(runs["mode"]) == ["plain", "covalent"]
    assert (runs["status"] == "FAILED").all()
    for error in runs["error"]:
        assert error.startswith("inputs: the workload's inputs") and "\n" not in error
        assert "ValueError: no inputs today" in error
    assert (out / "summary.csv").exists()


# --- B: a workflow spread over the user's own files -----------------------------------------

SPREAD = {
    "helpers.py": '''
        import covalent as ct


        def scale(x, k):
            return x * k


        @ct.electron
        def scaled(x, k):
            return scale(x, k)
    ''',
    "mypkg/__init__.py": '''
        from mypkg.ops import offset  # noqa: F401
    ''',
    "mypkg/ops.py": '''
        import covalent as ct


        def offset(x):
            return x + 1


        @ct.electron
        def shift(x):
            return offset(x)


        @ct.lattice
        def inner(x):
            return shift(x)
    ''',
    "flow.py": '''
        import covalent as ct
        import mypkg
        from helpers import scale, scaled
        from mypkg.ops import inner


        @ct.electron
        def combine(a, b):
            return scale(a, 1) + mypkg.offset(b)


        @ct.lattice
        def flow(x: int = 3):
            return combine(scaled(x, 2), ct.electron(inner)(x))
    ''',
}


@pytest.mark.slow
def test_a_workflow_over_two_files_and_a_package_runs_by_its_path(
    covalent_server, tmp_path: Path
) -> None:
    """`--bench-workload path/to/flow.py:flow`, run from another directory: flow.py imports a
    sibling module and a package of the user's (none installed), one holding a sublattice."""
    project = tmp_path / "project"
    _write(project, SPREAD)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    proc = _bench(out, covalent_server.address, "--bench-workload",
                  str(project / "flow.py") + ":flow", "--bench-set",
                  "executors=['local', 'dask']", cwd=elsewhere)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    runs = load_runs(out)
    assert list(runs["executor"].fillna("")) == ["", "local", "dask"]
    assert (runs["status"] == "COMPLETED").all(), runs["error"].tolist()
    assert set(runs["output_digest"]) == {digest(11)}


HIDDEN = {
    "hidden.py": '''
        def value():
            return 7
    ''',
    "reaching.py": '''
        import importlib

        import covalent as ct


        @ct.electron
        def fetch(name):
            return importlib.import_module(name).value()


        @ct.lattice
        def reaching(name: str = "hidden"):
            return fetch(name)
    ''',
}


@pytest.mark.slow
def test_a_module_the_harness_cannot_ship_is_named_with_what_to_do(
    covalent_server, tmp_path: Path
) -> None:
    """A task that imports a sibling module by a string: nothing in the code names it, so it
    cannot travel by value; the row names the module and says how to fix it."""
    _write(tmp_path / "project", HIDDEN)
    out = tmp_path / "out"
    proc = _bench(out, covalent_server.address, "--bench-workload",
                  str(tmp_path / "project" / "reaching.py") + ":reaching",
                  "--bench-set", "executors=['local']", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-3000:]
    plain, local = load_runs(out).itertuples()
    assert plain.status == "COMPLETED"
    assert local.status == "FAILED" and "\n" not in local.error
    assert "No module named 'hidden'" in local.error
    assert ("module 'hidden' is importable only on this client and was not shipped to the "
            "server: import it at the top of the workflow's module") in local.error


# --- F, G: timeouts stop the work; a task that kills its own process -----------------------

TASKS = '''
import os

import covalent as ct


@ct.electron
def spin(pid_file):
    with open(pid_file, "w") as f:
        f.write(str(os.getpid()))
    while True:
        pass


@ct.lattice
def spinning(pid_file: str = ""):
    return spin(pid_file)


@ct.electron
def die(code):
    os._exit(code)


@ct.lattice
def dying(code: int = 3):
    return die(code)


@ct.electron
def one():
    return 1


@ct.lattice
def fine():
    return one()
'''


@pytest.fixture
def tasks_module(tmp_path: Path) -> Path:
    _write(tmp_path, {"fault_tasks.py": TASKS})
    return tmp_path / "fault_tasks.py"


def _measure(module: Path, attr: str, executor: str, server, probe_dir: Path,
             timeout_s: float = 600, **params):
    from bench.run.runner import measure_covalent_batch
    from bench.workloads import workload_for

    workload = workload_for(f"{module}:{attr}")
    (record,) = measure_covalent_batch(
        workload, workload.check(params), executor=executor, address=server.address,
        probe_dir=probe_dir, server=server, timeout_s=timeout_s, health=server.check_alive,
        stop=lambda: server.stop_tasks(executor))
    return record


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "dask"])
def test_a_task_past_the_timeout_is_stopped_not_only_cancelled(
    covalent_server, tasks_module: Path, tmp_path: Path, executor: str
) -> None:
    """A spinning task past timeout_s: its dispatch is cancelled and its process stopped
    (Covalent's cancel alone left it spinning); the executor works for the next run."""
    import psutil

    pid_file = tmp_path / "pid"
    record = _measure(tasks_module, "spinning", executor, covalent_server, tmp_path,
                      timeout_s=10, pid_file=str(pid_file))
    assert record.status == "TIMEOUT", record.error
    assert "after the dispatch timeout of 10 s; cancelled; " in record.error
    expected = ("killed its task processes (the local executor's pool workers" if
                executor == "local" else "Dask worker(s) running its tasks (pids")
    assert expected in record.error and "\n" not in record.error
    pid = int(pid_file.read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    after = _measure(tasks_module, "fine", executor, covalent_server, tmp_path)
    assert after.status == "COMPLETED", after.error


@pytest.mark.slow
def test_a_task_that_exits_its_process_on_local_is_a_failed_row_naming_it(
    covalent_server, tasks_module: Path, tmp_path: Path
) -> None:
    record = _measure(tasks_module, "dying", "local", covalent_server, tmp_path, code=3)
    assert record.status == "FAILED"
    assert record.error.startswith("die: the local executor's process pool broke under it ("), \
        record.error
    assert "ended with exit code 3" in record.error and "fresh pool" in record.error
    # The pool is replaced: later local runs work (they failed with "not usable anymore").
    for _ in range(2):
        after = _measure(tasks_module, "fine", "local", covalent_server, tmp_path)
        assert after.status == "COMPLETED", after.error


# --- D: records that cannot be written ------------------------------------------------------

NAP = '''
import time

import covalent as ct


@ct.electron
def nap(sleep_s, mark):
    if mark:  # says that a task runs now
        with open(mark, "w") as f:
            f.write("started")
    time.sleep(sleep_s)
    return sleep_s


@ct.lattice
def slow(sleep_s: float = 0.1, mark: str = ""):
    return nap(sleep_s, mark)
'''


def _spawn(out: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pytest", "bench", "--benchmark-only", "-q", "-p",
           "no:cacheprovider", "--bench-out", str(out), *args]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)


def _wait_for_rows(path: Path, n: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until `path` holds `n` rows (a run's row is written the moment it ends)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= n + 1:
            return
        if proc.poll() is not None:
            raise AssertionError(f"no {n} rows in {path}; exit {proc.returncode}:\n"
                                 + proc.stdout.read()[-3000:])
        time.sleep(0.1)
    raise AssertionError(f"no {n} rows in {path}")


def _make_unwritable(path: Path) -> None:
    if os.geteuid() == 0:  # root writes through permissions: make the file immutable
        subprocess.run(["chattr", "+i", str(path)], check=True)
    else:
        path.chmod(0o444)


def _make_writable(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], check=False)
    else:
        path.chmod(0o644)


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() == 0 and shutil.which("chattr") is None,
                    reason="root ignores permissions and chattr is missing")
def test_records_that_cannot_be_written_end_the_session_at_once(
    covalent_server, tmp_path: Path
) -> None:
    _write(tmp_path, {"nap_wf.py": NAP})
    out = tmp_path / "out"
    proc = _spawn(out, "--covalent-address", covalent_server.address, "--bench-workload",
                  f"{tmp_path / 'nap_wf.py'}:slow", "--bench-arg", "sleep_s=1",
                  "--bench-set", "rounds=4", "--bench-set", "warmup_rounds=0",
                  "--bench-set", "executors=['local']")
    runs = out / "runs.csv"
    try:
        _wait_for_rows(runs, 1, proc)
        _make_unwritable(runs)
        before = runs.read_text()
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _make_writable(runs)
    assert proc.returncode == 3, output[-3000:]
    lines = [ln for ln in output.splitlines() if f"cannot write {runs}" in ln]
    assert lines and "the session ends here, every earlier run stays in" in lines[0], output
    assert "Traceback" not in output
    assert runs.read_text() == before
    written = len(before.splitlines()) - 1
    assert written >= 1 and f"[{written + 1}/8]" not in output  # nothing ran after it


# --- C: signals and leftovers ---------------------------------------------------------------


def _ours(state: Path) -> list:
    """Live processes started by a session whose temporary files live under `state`."""
    import psutil

    found = []
    for proc in psutil.process_iter():
        try:
            env, cmd = proc.environ(), " ".join(proc.cmdline())
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        if any(str(state) in v for v in env.values()) or str(state) in cmd:
            found.append(proc)
    return found


def _leftovers(state: Path) -> list[str]:
    return sorted(p.name for p in state.iterdir()
                  if p.name.startswith(("covalent-dispatches-", "covalent-bench-")))


def _until(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s")
        time.sleep(0.1)


def _own_server_session(tmp_path: Path, sleep_s: int = 8) -> tuple[subprocess.Popen, Path,
                                                                   Path]:
    """A session with a server of its own; returns once its local dispatch's task runs."""
    _write(tmp_path, {"nap_wf.py": NAP})
    out, state, mark = tmp_path / "out", tmp_path / "state", tmp_path / "mark"
    state.mkdir()
    env = {**os.environ, "TMPDIR": str(state)}
    env.pop("COVALENT_BENCH_SERVER", None)
    proc = _spawn(out, "--bench-workload", f"{tmp_path / 'nap_wf.py'}:slow", "--bench-arg",
                  f"sleep_s={sleep_s}", "--bench-arg", f"mark='{mark}'", "--bench-set",
                  "rounds=2", "--bench-set", "warmup_rounds=0", "--bench-set",
                  "executors=['local']", env=env)
    try:
        _wait_for_rows(out / "runs.csv", 1, proc)  # the plain run is in
        mark.unlink()
        _until(mark.exists, 120)  # local's task runs
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, out, state


@pytest.mark.slow
def test_sighup_then_a_second_ctrl_c_while_stopping_keep_rows_summary_and_clean_up(
    tmp_path: Path
) -> None:
    """The terminal closes (SIGHUP) mid-dispatch: handled as SIGTERM. A Ctrl-C while the
    session stops cuts nothing short: rows, summary, no process and no directory left."""
    import signal

    proc, out, state = _own_server_session(tmp_path)
    try:
        proc.send_signal(signal.SIGHUP)
        _wait_for_rows(out / "runs.csv", 2, proc, timeout=60)  # the INTERRUPTED row
        proc.send_signal(signal.SIGINT)  # while the server stops
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    runs = load_runs(out)
    assert list(runs["status"]) == ["COMPLETED", "INTERRUPTED"], output[-3000:]
    assert "SIGHUP" in runs["error"].iloc[-1]
    assert (out / "summary.csv").exists(), output[-3000:]
    _until(lambda: not _ours(state), 20)
    assert _leftovers(state) == []


@pytest.mark.slow
def test_kill_9_of_a_session_leaves_no_temporary_directories(
    covalent_server, tmp_path: Path
) -> None:
    import signal

    _write(tmp_path, {"nap_wf.py": NAP})
    out, state = tmp_path / "out", tmp_path / "state"
    state.mkdir()
    proc = _spawn(out, "--covalent-address", covalent_server.address, "--bench-workload",
                  f"{tmp_path / 'nap_wf.py'}:slow", "--bench-arg", "sleep_s=5",
                  "--bench-set", "rounds=2", "--bench-set", "warmup_rounds=0",
                  "--bench-set", "executors=['local']", env={**os.environ,
                                                             "TMPDIR": str(state)})
    try:
        _wait_for_rows(out / "runs.csv", 1, proc)
        assert {"covalent-dispatches", "covalent-bench-probes"} <= {
            name.rsplit("-", 1)[0] for name in _leftovers(state)}
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    _until(lambda: _leftovers(state) == [], 20)
    _until(lambda: not _ours(state), 20)


@pytest.mark.slow
def test_a_stopped_server_ends_the_session_within_a_bound(tmp_path: Path) -> None:
    """SIGSTOP of the server mid-dispatch: an ERROR row saying so, and the session ends (the
    stopped server is killed) without waiting for someone to resume it."""
    import signal

    proc, out, state = _own_server_session(tmp_path)
    try:
        def server_mains() -> list:
            return [p for p in _ours(state) if "app.py" in p.cmdline()
                    and "app.py" not in p.parent().cmdline()]

        _until(server_mains, 30)
        for main in server_mains():
            main.send_signal(signal.SIGSTOP)
        output, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, output[-3000:]
    last = load_runs(out).iloc[-1]
    assert last["status"] == "ERROR" and "is stopped (SIGSTOP" in last["error"], last["error"]
    _until(lambda: not _ours(state), 20)
    assert _leftovers(state) == []


# --- E: the external scheduler killed -------------------------------------------------------


@pytest.mark.slow
def test_a_killed_external_scheduler_is_named_and_that_executor_left_out(
    covalent_server, tmp_path: Path
) -> None:
    import signal

    _write(tmp_path, {"nap_wf.py": NAP})
    out, state, mark = tmp_path / "out", tmp_path / "state", tmp_path / "mark"
    state.mkdir()
    proc = _spawn(out, "--covalent-address", covalent_server.address, "--bench-workload",
                  f"{tmp_path / 'nap_wf.py'}:slow", "--bench-arg", "sleep_s=5",
                  "--bench-arg", f"mark='{mark}'", "--bench-set", "rounds=2",
                  "--bench-set", "warmup_rounds=0", "--bench-set", "timeout_s=120",
                  "--bench-set", "executors=['external']",
                  env={**os.environ, "TMPDIR": str(state)})
    try:
        _wait_for_rows(out / "runs.csv", 1, proc)
        mark.unlink()
        _until(mark.exists, 120)  # the external cluster runs the task now
        (scheduler,) = [p for p in _ours(state) if "distributed.cli.dask_scheduler"
                        in p.cmdline()]
        scheduler.send_signal(signal.SIGKILL)
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    runs = load_runs(out)
    assert list(runs["mode"]) == ["plain", "covalent", "plain", "covalent"], output[-3000:]
    assert list(runs["status"]) == ["COMPLETED", "ERROR", "COMPLETED", "ERROR"]
    killed, after = runs["error"].iloc[1], runs["error"].iloc[3]
    assert "external Dask cluster at tcp://127.0.0.1:" in killed and "is gone" in killed
    assert "executor 'external' is left out for the rest of the session" in after
    _until(lambda: not _ours(state), 30)


def test_a_plain_task_that_exits_its_process_is_a_failed_row(
    tasks_module: Path, tmp_path: Path
) -> None:
    """os._exit in a plain run's task used to end pytest silently (exit 1, no row)."""
    from bench.run.runner import measure_plain
    from bench.workloads import workload_for

    workload = workload_for(f"{tasks_module}:dying")
    record = measure_plain(workload, workload.check({"code": 3}), tmp_path)
    assert record.status == "FAILED"
    assert record.error.startswith("a task called os._exit(3), which would end this process")
    again = measure_plain(workload_for(f"{tasks_module}:fine"), {}, tmp_path)
    assert again.status == "COMPLETED", again.error


def test_a_server_that_is_gone_ends_the_wait_before_another_poll(monkeypatch) -> None:
    """`gone` (an owned server's main process, no request) is asked before every poll: a
    killed server whose children hold its port open would make a poll wait out its read
    timeout first."""
    from bench.records import ERROR
    from bench.run import runner

    polls: list[str] = []
    monkeypatch.setattr(runner.api, "status", lambda dispatch_id, address: polls.append(
        dispatch_id) or "RUNNING")
    answers = iter([None, None, "main process 42 is gone"])
    runs = [runner._Dispatched("r", f"d{i}", 0.0, 0.0, 0.0) for i in range(2)]
    with pytest.raises(runner.ServerUnavailableError, match="main process 42 is gone"):
        runner._await_all(runs, "http://127.0.0.1:9", 60.0, gone=lambda: next(answers))
    assert polls == ["d0", "d1", "d0", "d1"]  # two sweeps while it was there, none after
    assert all(r.status == ERROR and r.error == "server unavailable: main process 42 is gone"
               for r in runs)
