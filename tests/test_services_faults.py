"""bench.services under faults: loopback-only listeners, dead proxies, state kept inside the
state dir, the benchmark killed with -9, and the dead-server detector.

Starts three Covalent servers (one with its Dask cluster, shared by the module and started
under a dead HTTP proxy; one without a cluster, hung and killed on purpose; one in a child
process that is killed with -9) and two external Dask clusters. About a minute here.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import covalent as ct
import psutil
import pytest
import requests
import toml
from helpers import make_workflow

from bench.adapters.family import CACHE_DB_NAME
from bench.services.cluster import DaskCluster, dask_cluster
from bench.services.processes import beyond_loopback, listeners, loopback_no_proxy
from bench.services.server import (
    KEEP_STATE_ENV,
    CovalentServer,
    attached_server,
    client_dispatch_cache,
    covalent_server,
)

REPO = Path(__file__).resolve().parents[1]
DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, connections fail
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
GONE_WITHIN_S = 20.0  # after kill -9 of the benchmark, for everything it started


# --- helpers --------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _still_alive(pids: Iterable[int]) -> list[int]:
    return [pid for pid in pids if _alive(pid)]


def _processes_using(base: Path) -> list[int]:
    """Live processes whose covalent config dir lies under `base` (servers, cluster workers)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("COVALENT_CONFIG_DIR", "").startswith(str(base)):
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc.pid)
        except psutil.Error:  # gone meanwhile, or not ours to read
            continue
    return found


def _wait_until(condition: Callable[[], object], timeout: float, step: float = 0.1) -> float:
    """Seconds until `condition()` held; raises AssertionError after `timeout`."""
    t0 = time.perf_counter()
    while not condition():
        if time.perf_counter() - t0 > timeout:
            raise AssertionError(f"not within {timeout:g} s")
        time.sleep(step)
    return time.perf_counter() - t0


def _kill_all(pids: Iterable[int]) -> None:
    """Last resort in a failing test: leave no process behind."""
    for pid in pids:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            continue



# --- a server with its Dask cluster and an external cluster, under a dead proxy ------------


@dataclass
class Stack:
    server: CovalentServer
    cluster: DaskCluster
    base: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Both started with every proxy variable pointing at a dead proxy and no NO_PROXY; the
    environment stays so for the rest of this module."""
    base = tmp_path_factory.mktemp("stack")
    with pytest.MonkeyPatch.context() as env:
        for var in PROXY_VARS:
            env.setenv(var, DEAD_PROXY)
        for var in ("NO_PROXY", "no_proxy", KEEP_STATE_ENV):
            env.delenv(var, raising=False)
        with (
            covalent_server(
                workers=1, threads_per_worker=1, base_dir=base, startup_timeout=90
            ) as server,
            dask_cluster(workers=1, base_dir=base, startup_timeout=60) as cluster,
        ):
            pids = [p.pid for p in server.processes() + cluster.processes()]
            yield Stack(server, cluster, base)
    assert _still_alive(pids) == []
    assert _processes_using(base) == []
    assert list(base.iterdir()) == []  # both state directories removed


@pytest.mark.slow
def test_dead_proxy_neither_blocks_nor_slows_the_server(stack: Stack) -> None:
    server = stack.server
    # Without NO_PROXY in its environment `covalent start` polls the server through the
    # proxy and never returns: the fixture's startup_timeout would have failed it.
    assert server.startup_s is not None
    env = psutil.Process(server.main_pid).environ()
    assert {"127.0.0.1", "localhost"} <= set(env["NO_PROXY"].split(","))
    assert env["HTTP_PROXY"] == DEAD_PROXY  # the proxy is still there, bypassed
    assert server.check_alive() is None  # through the dead proxy it would be refused


@pytest.mark.slow
def test_every_listener_is_on_loopback(stack: Stack) -> None:
    server, cluster = stack.server, stack.cluster
    found = listeners(server.processes() + cluster.processes())
    print("\n".join(map(str, found)))
    assert beyond_loopback(found) == [], "listening beyond loopback"
    ports = {item.port for item in found}
    scheduler_port = int(cluster.address.rsplit(":", 1)[1])
    assert {server.port, scheduler_port} <= ports
    # The server's Dask dashboard: moved from *:8787 to a free loopback port, still there.
    link = toml.load(server.root / "config" / "covalent.conf")["dask"]["dashboard_link"]
    assert urlsplit(link).hostname == "127.0.0.1" and urlsplit(link).port in ports
    # The external scheduler's HTTP endpoint: moved to loopback, still there.
    http_ports = {item.port for item in found if item.pid == cluster.pids[0]} - {scheduler_port}
    assert len(http_ports) == 1
    with requests.Session() as session:
        session.trust_env = False  # the dead proxy is still set
        assert session.get(f"http://127.0.0.1:{http_ports.pop()}/health", timeout=5).text == "ok"


@pytest.mark.slow
def test_state_and_dispatch_manifests_stay_inside(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = stack.server
    env = psutil.Process(server.main_pid).environ()
    assert env["TMPDIR"].startswith(str(server.root))
    assert env["COVALENT_CACHE_DB_URL"].endswith(str(server.root / "db" / CACHE_DB_NAME))
    assert (server.root / "db" / CACHE_DB_NAME).is_file()
    # Nothing the server holds open lies in the shared temporary directory or in ~/.cache.
    outside = [Path(tempfile.gettempdir()).resolve(), Path.home() / ".cache"]
    for proc in server.processes():
        for item in proc.open_files():
            path = Path(item.path)
            if any(path.is_relative_to(top) for top in outside):
                assert path.is_relative_to(server.root), f"{proc.pid} holds {path} open"

    # The client: what the plugin does for its own process (proxies are still dead here).
    for var, value in loopback_no_proxy({}).items():
        monkeypatch.setenv(var, value)
    default_dir = Path(ct.get_config("sdk.dispatch_cache_dir"))
    with client_dispatch_cache(tmp_path / "dispatches") as manifests:
        dispatch_id = ct.dispatch(make_workflow("dask"), dispatcher_addr=server.address)(2, 3)
        result = ct.get_result(dispatch_id, wait=True, dispatcher_addr=server.address,
                               results_dir=str(tmp_path / "results"))
    assert str(result.status) == "COMPLETED", result.error
    assert result.result == 15
    assert (manifests / dispatch_id).is_file()
    assert not (default_dir / dispatch_id).exists()


@pytest.mark.slow
def test_attached_server_gets_the_http_check_only(stack: Stack) -> None:
    with attached_server(stack.server.address) as server:
        assert server.check_alive() is None
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gone = CovalentServer(address=f"http://127.0.0.1:{port}", port=port, owned=False)
    reason = gone.check_alive(timeout_s=1.0)
    assert reason is not None and "\n" not in reason
    assert reason.startswith(f"Covalent server at http://127.0.0.1:{port} does not answer: "
                             "ConnectionError")


# --- the dead-server detector ---------------------------------------------------------------


@contextlib.contextmanager
def _no_http(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any HTTP request in the block fails the test."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"an HTTP request was made: {args[1:3]}")

    with monkeypatch.context() as m:
        m.setattr(requests.Session, "request", refuse)
        yield


@pytest.mark.slow
def test_check_alive_reports_a_hung_then_a_dead_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEEP_STATE_ENV, raising=False)
    with covalent_server(no_cluster=True, base_dir=tmp_path, startup_timeout=90) as server:
        pids = [p.pid for p in server.processes()]
        try:
            assert server.main_pid is not None and server.main_pid != server.pid
            assert server.check_alive() is None
            main = psutil.Process(server.main_pid)

            main.suspend()  # hung: the kernel still accepts connections, nobody answers
            try:
                _wait_until(lambda: main.status() == psutil.STATUS_STOPPED, timeout=10)
                with _no_http(monkeypatch):  # said from the process state, not a timeout
                    reason = server.check_alive(timeout_s=60.0)
                    # A wait's per-poll check says it too, once it lasts STOPPED_FOR_S (a
                    # profiler's brief stops are not one): no poll's read timeout first.
                    assert server.gone() is None  # first seen stopped now
                    _wait_until(lambda: server.gone() is not None, timeout=10)
                    assert server.gone() == reason
            finally:
                main.resume()
            # Stopped, not only slow: said at once, without waiting for HTTP.
            assert reason == (f"Covalent server at {server.address}: main process "
                              f"{server.main_pid} is stopped (SIGSTOP, Ctrl-Z or a debugger); "
                              f"the harness kills it")
            assert server.check_alive() is None and server.gone() is None

            main.kill()
            _wait_until(lambda: not _alive(main.pid), timeout=5)
            with _no_http(monkeypatch):  # no HTTP wait once the process is gone
                reason = server.check_alive()
            assert reason is not None and "\n" not in reason
            assert reason.startswith(
                f"Covalent server at {server.address}: main process {main.pid} is gone"
            )
            root = server.root
        except BaseException:
            _kill_all(pids)
            raise
    assert _still_alive(pids) == []
    assert _processes_using(tmp_path) == []
    assert not root.exists()


# --- kill -9 of the benchmark ---------------------------------------------------------------

_HARNESS = textwrap.dedent(
    """
    import json, sys, time
    from bench.services.cluster import dask_cluster
    from bench.services.server import covalent_server

    base = sys.argv[1]
    with covalent_server(workers=1, threads_per_worker=1, base_dir=base) as server, \\
            dask_cluster(workers=1, base_dir=base) as cluster:
        procs = server.processes() + cluster.processes()
        print(json.dumps({"pids": [p.pid for p in procs],
                          "roots": [str(server.root), str(cluster.root)]}), flush=True)
        time.sleep(600)
    """
)


@pytest.mark.slow
def test_kill_9_of_the_benchmark_leaves_nothing(tmp_path: Path) -> None:
    base = tmp_path / "state"
    base.mkdir()
    script = tmp_path / "harness.py"
    script.write_text(_HARNESS)
    stderr = open(tmp_path / "harness.err", "wb")
    harness = subprocess.Popen(
        [sys.executable, str(script), str(base)],
        cwd=REPO,
        env={**{k: v for k, v in os.environ.items() if k != KEEP_STATE_ENV},
             "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=stderr,
    )
    tracked: set[int] = set()
    try:
        ready, _, _ = select.select([harness.stdout], [], [], 150)
        line = harness.stdout.readline() if ready else b""  # type: ignore[union-attr]
        if not line:
            harness.kill()
            harness.wait()
            pytest.fail("the harness did not come up:\n"
                        + (tmp_path / "harness.err").read_text()[-3000:])
        info = json.loads(line)
        # Everything it started: server and cluster trees, `covalent start`, the watchdogs.
        children = psutil.Process(harness.pid).children(recursive=True)
        tracked = set(info["pids"]) | {p.pid for p in children}
        assert len(_still_alive(tracked)) >= 8 and _processes_using(base)

        harness.send_signal(signal.SIGKILL)
        harness.wait()
        gone_s = _wait_until(
            lambda: not _still_alive(tracked) and not _processes_using(base),
            timeout=GONE_WITHIN_S,
        )
        print(f"everything gone {gone_s:.2f} s after kill -9")
        _wait_until(lambda: not any(Path(r).exists() for r in info["roots"]), timeout=5)
    finally:
        if harness.poll() is None:
            harness.kill()
            harness.wait()
        _kill_all(_still_alive(tracked) + _processes_using(base))
        stderr.close()


# --- fast checks of the helpers -------------------------------------------------------------


def test_a_listener_beyond_loopback_is_caught() -> None:
    with socket.socket() as anywhere, socket.socket() as loopback:
        anywhere.bind(("0.0.0.0", 0))
        anywhere.listen()
        loopback.bind(("127.0.0.1", 0))
        loopback.listen()
        found = listeners([psutil.Process()])
        assert [item.port for item in beyond_loopback(found)] == [anywhere.getsockname()[1]]
        assert loopback.getsockname()[1] in {item.port for item in found}


def test_loopback_no_proxy_keeps_what_is_there() -> None:
    env = {"NO_PROXY": "example.org,localhost", "PATH": "/bin"}
    loopback_no_proxy(env)
    assert env["NO_PROXY"] == "example.org,localhost,127.0.0.1,::1"
    assert env["no_proxy"] == "127.0.0.1,localhost,::1"
    assert env["PATH"] == "/bin"
