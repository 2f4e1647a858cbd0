"""bench.services.server against real Covalent servers: start, serve, stop, attach, fail clearly.

Starts two servers in all (one shared by the module, one owned by the lifecycle test) plus
two that fail on purpose within seconds.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import covalent as ct
import psutil
import pytest
import requests
from helpers import make_workflow

from bench.services.server import (
    SERVER_ENV,
    CovalentServer,
    CovalentServerError,
    attached_server,
    covalent_server,
    server_for,
)

pytestmark = pytest.mark.slow



def _run_workflow(server: CovalentServer, results_dir: Path, executor: str = "local") -> None:
    dispatch_id = ct.dispatch(make_workflow(executor), dispatcher_addr=server.address)(2, 3)
    result = ct.get_result(
        dispatch_id, wait=True, dispatcher_addr=server.address, results_dir=str(results_dir)
    )
    assert str(result.status) == "COMPLETED", result.error
    assert result.result == 15


def _answers(address: str) -> bool:
    try:
        return requests.get(f"{address}/api/v2/dispatches", timeout=5).ok
    except requests.RequestException:
        return False


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _processes_using(state_dir: Path) -> list[psutil.Process]:
    """Live processes whose covalent config lies under `state_dir` (servers started there)."""
    found = []
    for proc in psutil.process_iter():
        try:
            config_dir = proc.environ().get("COVALENT_CONFIG_DIR", "")
            if config_dir.startswith(str(state_dir)) and not _gone(proc.pid):
                found.append(proc)
        except psutil.Error:  # gone meanwhile, or not ours to read
            continue
    return found


@pytest.fixture(scope="module")
def shared_server() -> Iterator[CovalentServer]:
    with covalent_server(workers=1, threads_per_worker=1) as server:
        pids = [p.pid for p in server.processes()]
        yield server
    assert all(_gone(pid) for pid in pids), "the shared server left processes behind"


def test_owned_server_lifecycle_beside_another(
    shared_server: CovalentServer, tmp_path: Path
) -> None:
    with covalent_server(workers=1, threads_per_worker=1, base_dir=tmp_path) as server:
        assert server.owned and server.address == f"http://127.0.0.1:{server.port}"
        assert server.startup_s is not None and server.startup_s > 0
        assert server.root is not None and server.root.parent == tmp_path
        assert (server.workers, server.threads_per_worker) == (1, 1)
        assert server.port != shared_server.port and server.root != shared_server.root

        _run_workflow(server, tmp_path / "results-owned", executor="local")
        _run_workflow(shared_server, tmp_path / "results-shared", executor="dask")

        procs = server.processes()
        assert procs[0].pid == server.pid and len(procs) >= 3  # shell, server, Dask, pool...
        pids = [p.pid for p in procs]
        assert len(_processes_using(tmp_path)) >= 3  # the helper below sees this server
        root = server.root

    assert [pid for pid in pids if not _gone(pid)] == []
    assert _processes_using(tmp_path) == []
    assert not root.exists()
    # `covalent stop` ran with this server's environment only: the other one still answers.
    assert _answers(shared_server.address)


def test_attached_server_is_never_stopped(shared_server: CovalentServer) -> None:
    with attached_server(shared_server.address + "/") as server:
        assert server.owned is False
        assert (server.address, server.port) == (shared_server.address, shared_server.port)
        assert server.startup_s is None and server.root is None and server.pid is None
        assert server.processes() == []
    assert _answers(shared_server.address)
    assert all(p.is_running() for p in shared_server.processes())


def test_server_for_attaches_to_env_address(
    shared_server: CovalentServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SERVER_ENV, shared_server.address)
    with server_for(workers=4) as server:  # start options do not apply when attaching
        assert server.owned is False and server.address == shared_server.address
    assert _answers(shared_server.address)


def test_bad_attach_address_fails_clearly() -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(CovalentServerError, match=f"No Covalent server answers at .*:{port}"):
        with attached_server(f"http://127.0.0.1:{port}"):
            pass


def test_rejected_start_fails_fast_with_its_output(tmp_path: Path) -> None:
    # The covalent CLI itself rejects a negative count ("No such option '-1'").
    with pytest.raises(CovalentServerError, match="exited with status 2") as info:
        with covalent_server(threads_per_worker=-1, base_dir=tmp_path, startup_timeout=60):
            pass
    message = str(info.value)
    assert "covalent_start.log" in message and "No such option" in message
    assert "What to do" in message
    assert _processes_using(tmp_path) == []


def test_start_timeout_kills_the_half_started_server(tmp_path: Path) -> None:
    # Far shorter than a start-up takes (~5-10 s here): the server is killed mid-start.
    with pytest.raises(CovalentServerError, match="did not answer within 2 s") as info:
        with covalent_server(
            workers=1, threads_per_worker=1, base_dir=tmp_path, startup_timeout=2.0
        ):
            pass
    assert "covalent_ui.log" in str(info.value)
    assert _processes_using(tmp_path) == []
