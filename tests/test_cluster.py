"""bench.services.cluster: an external Dask cluster started from the CLI, Covalent running the
workflow on it, and clear failures. Each cluster here starts in a few seconds."""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

import psutil
import pytest
from distributed import Client
from helpers import assert_same_work

from bench.run.runner import measure_covalent_batch
from bench.services.cluster import (
    DaskCluster,
    DaskClusterError,
    attached_cluster,
    cluster_for,
    dask_cluster,
)
from bench.workloads.mnist import MnistWorkload
from mnist_core.config import WorkflowConfig
from mnist_core.workflow import run_plain

REPO = Path(__file__).resolve().parents[1]


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except psutil.Error:
            continue
    return out


def _processes_mentioning(path: Path) -> list[psutil.Process]:
    """Live processes whose command line names `path` (clusters started under it)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if any(str(path) in arg for arg in proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return _alive(found)


def _keys_seen_by_scheduler(cluster: DaskCluster) -> list[str]:
    with Client(cluster.address, set_as_default=False) as client:
        return client.run_on_scheduler(
            lambda dask_scheduler: [str(entry[0]) for entry in dask_scheduler.transition_log]
        )


@pytest.mark.slow
def test_covalent_on_external_cluster_does_the_same_work(
    small_config: WorkflowConfig, covalent_server, tmp_path: Path
) -> None:
    plain = run_plain(small_config)
    with dask_cluster(workers=2, threads_per_worker=1, base_dir=tmp_path) as cluster:
        assert cluster.address.startswith("tcp://127.0.0.1:")
        assert (cluster.workers, cluster.threads_per_worker, cluster.owned) == (2, 1, True)
        procs = cluster.processes()
        # scheduler, and per worker its nanny (the CLI process) and the worker it spawned
        assert len(procs) >= 5
        # The cluster's own staging dir (not ~/.cache/covalent), as a shared directory
        # would be on real machines; the records say "external", the tasks go to the cluster.
        workload = MnistWorkload()
        (record,) = measure_covalent_batch(
            workload, workload.check(dataclasses.asdict(small_config)), executor="external",
            address=covalent_server.address, probe_dir=tmp_path, dispatch_to=cluster.target(),
        )
        assert record.status == "COMPLETED", record.error
        assert (record.mode, record.executor) == ("covalent", "external")
        dispatch_id = record.dispatch_id
        # The tasks ran here, not on the server's own Dask cluster, through the shared dir.
        assert any(dispatch_id in key for key in _keys_seen_by_scheduler(cluster))
        assert any(dispatch_id in f.name for f in cluster.staging_dir.iterdir())
        # ... in the cluster's worker processes, each task timed from inside.
        worker_pids = {p.pid for p in procs}
        in_task = [p for p in record.phases if p["phase"] == "in_task"]
        assert {p["task"] for p in in_task} >= {"data_loader", "train_model", "test"}
        assert {p["pid"] for p in in_task} <= worker_pids

        with attached_cluster(cluster.address) as attached:
            assert attached.owned is False and attached.processes() == []
            assert (attached.workers, attached.threads_per_worker) == (2, 1)
        with cluster_for(cluster.address, workers=5) as attached:  # start options don't apply
            assert attached.owned is False and attached.workers == 2
        assert len(_alive(procs)) == len(procs), "attaching must never stop the cluster"

    assert _alive(procs) == []
    assert _processes_mentioning(tmp_path) == []
    assert_same_work(record, plain)


def test_workers_run_in_the_repository(tmp_path: Path) -> None:
    """Workers unpickle tasks by reference: they run in the repository root, on PYTHONPATH."""

    def where() -> tuple[str, str, bool]:
        import importlib.util
        import os

        return (os.getcwd(), os.environ.get("PYTHONPATH", ""),
                importlib.util.find_spec("examples") is not None)

    with dask_cluster(workers=1, base_dir=tmp_path) as cluster:
        with Client(cluster.address, set_as_default=False) as client:
            (seen,) = client.run(where).values()
    cwd, pythonpath, examples = seen
    assert cwd == str(REPO)
    assert pythonpath.split(os.pathsep)[0] == str(REPO)
    assert examples, "the repository's own modules (examples/) must import on the workers"


def test_unreachable_scheduler_fails_clearly() -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DaskClusterError, match=f"No Dask scheduler answers at tcp://127.0.0.1:{port}"):
        with attached_cluster(f"tcp://127.0.0.1:{port}", timeout=2):
            pass


@pytest.mark.parametrize("address", ["http://127.0.0.1:8786", "tcp://127.0.0.1", "127.0.0.1:8786"])
def test_malformed_scheduler_address_is_refused(address: str) -> None:
    with pytest.raises(DaskClusterError, match="Not a Dask scheduler address"):
        with attached_cluster(address):
            pass


def test_worker_that_cannot_start_is_reported_with_its_log(tmp_path: Path) -> None:
    with pytest.raises(DaskClusterError) as info:
        with dask_cluster(workers=1, worker_options=["--no-such-option"], base_dir=tmp_path):
            pytest.fail("the cluster must not start")
    message = str(info.value)
    assert "Dask worker 0 exited with status 2" in message
    assert "No such option" in message  # the tail of the worker's own log
    assert "What to do:" in message
    assert _processes_mentioning(tmp_path) == []
    (kept,) = tmp_path.iterdir()  # kept for inspection, as the message says
    assert f"logs are kept in {kept}" in message and (kept / "worker-0.log").exists()


def test_startup_timeout_is_reported_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(DaskClusterError, match=r"within 0\.2 s"):
        with dask_cluster(workers=2, startup_timeout=0.2, base_dir=tmp_path):
            pytest.fail("the cluster must not start within 0.2 s")
    assert _processes_mentioning(tmp_path) == []
