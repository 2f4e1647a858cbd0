"""Named Covalent environments (bench.services.environments) and the client that runs in one
(bench.run.client): build and cache, failures that name their cause, and a real server
started from an environment's interpreter, measured through that environment's client.

The covalent==0.240.0 environment is built in the real cache (~/.cache/covalent-bench/envs,
or $COVALENT_BENCH_ENV_CACHE): the first run builds it (a minute or two), later runs reuse it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from bench.run.client import RemoteClient, RemoteClientError
from bench.run.runner import ServerUnavailableError, measure_plain
from bench.services import environments as envs
from bench.services.environments import Environment, EnvironmentBuildError, build
from bench.services.server import CovalentServer, covalent_server
from bench.workloads import workload_for

RELEASE = "covalent==0.240.0"
CHAIN = {"n": 2, "sleep_s": 0.0}
CHAIN_WORKLOAD = workload_for("chain")
DEAD = "http://127.0.0.1:9"  # nothing listens there


# --- environments ---------------------------------------------------------------------------


def test_environment_names_and_values_are_checked() -> None:
    assert Environment("v240").requirement == RELEASE and Environment("v240").env == {}
    with pytest.raises(ValueError, match="environment name"):
        Environment("../escape")
    with pytest.raises(ValueError, match="requirement is empty"):
        Environment("empty", " ")
    with pytest.raises(ValueError, match="must be strings"):
        Environment("numbers", env={"COVALENT_USE_OLD_DASK": 1})  # type: ignore[dict-item]


def test_cache_root_follows_the_environment_variable(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(envs.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert envs.cache_root() == tmp_path / "elsewhere"
    monkeypatch.delenv(envs.CACHE_ENV)
    assert envs.cache_root() == Path.home() / ".cache" / "covalent-bench" / "envs"


def test_a_release_is_installed_with_its_family_pins() -> None:
    assert envs._family_pins("covalent==0.232.0.post1") == ("setuptools<81", "autoray<0.6.10")
    assert envs._family_pins("covalent==0.238.0") == envs._family_pins(RELEASE) == ()
    assert envs._family_pins("/src/covalent") == ()  # its family is known after the install
    assert envs._family_pins("covalent==0.0.0-nonexistent") == ()  # pip says what is wrong


def test_a_bad_requirement_fails_naming_it_and_a_half_built_dir_is_rebuilt(
    tmp_path: Path,
) -> None:
    bad = Environment("bad", "covalent==0.0.0-nonexistent")
    key = envs._key(envs._absolute_requirement(bad.requirement))["hash"]
    half = tmp_path / f"covalent-0.0.0-nonexistent-{key}"
    (half / "venv").mkdir(parents=True)
    (half / "venv" / "left-over").write_text("from a build that was killed")
    with pytest.raises(EnvironmentBuildError) as caught:
        build(bad, cache_root=tmp_path)
    first_line = str(caught.value).splitlines()[0]
    assert "'bad'" in first_line and "covalent==0.0.0-nonexistent" in first_line
    assert "last lines of" in str(caught.value)  # the install log's tail follows
    assert caught.value.log_path is not None and caught.value.log_path.is_file()
    assert not (half / "venv" / "left-over").exists()  # started over, not reused
    assert not (half / envs.MARKER).exists()


@pytest.fixture(scope="module")
def built() -> envs.BuiltEnvironment:
    """covalent==0.240.0 in the real cache: built once, then reused across sessions."""
    return build(Environment("test-0.240.0", RELEASE))


@pytest.mark.slow
def test_a_release_builds_once_and_is_reused(built: envs.BuiltEnvironment) -> None:
    assert built.covalent_version == "0.240.0"
    marker = json.loads((built.path / envs.MARKER).read_text())
    assert marker["covalent_version"] == "0.240.0" and marker["python"] == built.python
    assert (built.path / envs.LOG_NAME).is_file()
    again = build(Environment("test-0.240.0", RELEASE))
    assert again.cached and again.build_s < 2.0
    assert again.python == built.python and again.path == built.path
    # Another environment of the release, under other settings, is that build too: its
    # variables apply when it runs, and are its own.
    other = build(Environment("test-other-settings", RELEASE, env={"OMP_NUM_THREADS": "1"}))
    assert other.cached and other.path == built.path and other.python == built.python
    assert other.name == "test-other-settings" and other.env == {"OMP_NUM_THREADS": "1"}
    assert built.path.name.startswith("covalent-0.240.0-")  # named for what it holds


# --- the client in another interpreter, without a server ------------------------------------


@pytest.fixture(scope="module")
def local_client() -> Iterator[RemoteClient]:
    """A client child running this very interpreter: the protocol, without a build."""
    with RemoteClient(sys.executable, request_timeout_s=120) as client:
        yield client


def test_a_server_that_is_not_there_raises_server_unavailable_with_records(
    local_client: RemoteClient, tmp_path: Path,
) -> None:
    assert local_client.covalent_version
    with pytest.raises(ServerUnavailableError) as caught:
        local_client.measure_covalent_batch(CHAIN_WORKLOAD, CHAIN, executor="local",
                                            address=DEAD, probe_dir=tmp_path, timeout_s=30)
    (record,) = caught.value.records
    assert record.mode == "covalent" and record.status == "ERROR"
    assert "server unavailable" in record.error


def test_a_failing_request_names_the_error_and_the_client_goes_on(
    local_client: RemoteClient, tmp_path: Path,
) -> None:
    class Nope:  # a workload whose name the child cannot load
        name, ref = "nope", ("nope", None, None)

    with pytest.raises(RemoteClientError, match="unknown workload 'nope'") as caught:
        local_client.measure_covalent_batch(Nope(), {}, executor="local", address=DEAD,
                                            probe_dir=tmp_path)
    assert caught.value.error_type == "WorkloadError"
    assert local_client.proc is not None and local_client.proc.poll() is None


def test_a_client_that_dies_is_a_clear_error(tmp_path: Path) -> None:
    with RemoteClient(sys.executable) as client:
        assert client.proc is not None
        client.proc.kill()
        client.proc.wait()
        with pytest.raises(RemoteClientError, match="exited with -9"):
            client.measure_covalent_batch(CHAIN_WORKLOAD, CHAIN, executor="local",
                                          address=DEAD, probe_dir=tmp_path)


def test_an_interpreter_that_cannot_be_a_client_fails_at_start(tmp_path: Path) -> None:
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\necho 'no bench here' >&2\nexit 1\n")
    python.chmod(0o755)
    with pytest.raises(RemoteClientError, match="no bench here"):
        RemoteClient(str(python)).start()


# --- a server and a client of the environment -----------------------------------------------


@pytest.fixture(scope="module")
def env_server(built: envs.BuiltEnvironment) -> Iterator[CovalentServer]:
    with covalent_server(python=built.python, env=built.env) as server:
        yield server


@pytest.mark.slow
def test_a_chain_through_the_environment_matches_the_plain_run(
    built: envs.BuiltEnvironment, env_server: CovalentServer, tmp_path: Path,
) -> None:
    # The server runs the environment's interpreter, not this one.
    assert env_server.main_pid is not None
    assert psutil.Process(env_server.main_pid).cmdline()[0] == built.python

    workload = workload_for("chain")
    params = workload.check(CHAIN)
    plain = measure_plain(workload, params, tmp_path)
    with RemoteClient(built.python, built.env) as client:
        assert client.covalent_version == "0.240.0"
        (record,) = client.measure_covalent_batch(
            workload, params, executor="local", address=env_server.address,
            probe_dir=tmp_path, timeout_s=120, server=env_server)
    assert record.status == "COMPLETED", record.error
    assert record.mode == "covalent" and record.executor == "local" and record.dispatch_id
    assert record.outcome.digest == plain.outcome.digest
    assert record.outcome.metrics["correct"]
    assert record.tasks_probed == "2/2"
    assert record.timings["submit_s"] > 0 and "server_cpu_s" in record.timings
    # What the server holds after it, for a soak: its tree's RSS and files, its database.
    assert record.timings["server_rss_mb"] > 50 and record.timings["server_open_files"] > 3
    assert record.timings["server_db_mb"] > 0


@pytest.mark.slow
def test_an_interrupt_reaches_the_client_and_brings_its_rows_back(
    built: envs.BuiltEnvironment, env_server: CovalentServer, tmp_path: Path,
) -> None:
    # Python's own Ctrl-C handler, also where a background shell started us with SIGINT
    # ignored (then Python installs none and the signal below would be lost).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    with RemoteClient(built.python, built.env) as client:
        # A real SIGINT, as Ctrl-C sends: it wakes a blocked wait (interrupt_main doesn't).
        timer = threading.Timer(4.0, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt) as caught:
                client.measure_covalent_batch(
                    CHAIN_WORKLOAD, {"n": 1, "sleep_s": 60.0}, executor="local",
                    address=env_server.address, probe_dir=tmp_path, timeout_s=120)
        finally:
            timer.cancel()
            signal.signal(signal.SIGINT, previous)
    (record,) = caught.value.bench_records  # type: ignore[attr-defined]
    assert record.status == "INTERRUPTED" and record.dispatch_id
