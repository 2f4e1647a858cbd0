"""An external Dask cluster for Covalent's DaskExecutor: start one here, or attach to one.

An owned cluster is a `dask scheduler` and `dask worker` processes (each with its nanny)
started from this interpreter on loopback (their HTTP endpoints too), each in its own session,
so that no terminal's Ctrl-C reaches them and only our `finally` stops them, together with
everything they spawned; should this process die first, a watchdog does it
(bench.services.processes).
Covalent reaches it as the executor `tcp://127.0.0.1:PORT` (mnist_core.workflow.executor_for).

Covalent's DaskExecutor stages task inputs and outputs as files under its `cache_dir` (the
dispatching client's `$XDG_CACHE_HOME/covalent`, or `~/.cache/covalent`) and the workers
read and write them there: workers and server must share that path. They need no server
address and none of the server's COVALENT_* settings.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.services.processes import (
    Watchdog,
    alive,
    group_processes,
    kill,
    loopback_no_proxy,
    process_tree,
    signals_deferred,
    sigterm_raises,
    watchdog,
)
from bench.services.server import KEEP_STATE_ENV, _tail

__all__ = [
    "SCHEDULER_ENV",
    "DaskCluster",
    "DaskClusterError",
    "attached_cluster",
    "cluster_for",
    "dask_cluster",
]

SCHEDULER_ENV = "COVALENT_BENCH_DASK_SCHEDULER"
SCHEME = "tcp://"
REPO_ROOT = Path(__file__).resolve().parents[2]
STOP_TIMEOUT_S = 10.0  # for scheduler and workers to exit after SIGTERM
_CONNECT_TIMEOUT_S = 10.0
_POLL_S = 0.5  # how often start-up checks whether a process died while waiting for workers
# Scheduler and workers serve HTTP (/health, /metrics, ...) even with --no-dashboard, by
# default on every interface: keep it on loopback, on a port of the system's choosing.
_HTTP_ADDRESS = "127.0.0.1:0"

log = logging.getLogger(__name__)


class DaskClusterError(RuntimeError):
    """A Dask cluster could not be started or reached."""


@dataclass(frozen=True)
class DaskTarget:
    """An external Dask cluster as a run's `dispatch_to`: its scheduler and the staging
    directory its workers share with the server ("" = Covalent's default). Plain data, so
    a Covalent environment's client gets it as JSON."""

    address: str
    cache_dir: str = ""


@dataclass(frozen=True)
class DaskCluster:
    """A running Dask cluster, started here (owned) or attached to."""

    address: str  # "tcp://127.0.0.1:PORT": the scheduler, as Covalent's DaskExecutor takes it
    workers: int
    threads_per_worker: int | None  # None: attached workers with differing thread counts
    startup_s: float | None = None  # launch until all workers were registered (owned only)
    owned: bool = True
    root: Path | None = None  # logs and worker scratch space (owned only)
    # A directory on the workers' and the server's shared filesystem for Covalent's staged
    # task files: DaskExecutor(cache_dir=...). Owned only; None: Covalent's default.
    staging_dir: Path | None = None
    pids: tuple[int, ...] = field(default=(), repr=False)  # scheduler and `dask worker` pids

    def target(self) -> DaskTarget:
        """Where a lattice runs on this cluster. Covalent stages task files in cache_dir,
        which workers and server must share; left empty it uses the client's
        ~/.cache/covalent and never cleans it, so an owned cluster brings its own."""
        return DaskTarget(self.address,
                          str(self.staging_dir) if self.staging_dir is not None else "")

    def check_alive(self, timeout_s: float = 3.0) -> str | None:
        """None if the scheduler is there and accepts connections, else a one-line reason.
        An owned cluster's scheduler process must be running too (checked first)."""
        where = f"external Dask cluster at {self.address}"
        if self.owned and self.pids and not alive(self.pids[0]):
            return f"{where}: its scheduler (pid {self.pids[0]}) is gone"
        host, _, port = self.address.removeprefix(SCHEME).rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout_s):
                pass
        except OSError as exc:
            return f"{where}: its scheduler does not accept connections ({exc.strerror or exc})"
        return None

    def stop_tasks(self) -> str:
        """Kill the workers of an owned cluster that run a task (their nannies restart them):
        the only way to stop a task that a cancelled dispatch left running (Dask cannot
        interrupt a task's thread). Returns what was done, for the row."""
        if not self.owned:
            return "left its tasks running on the external cluster (not the harness's)"
        from bench.services.server import stop_dask_tasks

        return stop_dask_tasks(self.address, "the external cluster's", self.processes())

    def processes(self) -> list[psutil.Process]:
        """Live processes of the cluster: scheduler, nannies, workers and their children."""
        found: dict[int, psutil.Process] = {}
        for pid in self.pids:
            found.update((p.pid, p) for p in process_tree(pid))
        return list(found.values())


@dataclass
class _Launched:
    """One started CLI process and its log."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path


@contextlib.contextmanager
def dask_cluster(
    workers: int = 2,
    threads_per_worker: int = 1,
    startup_timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
    worker_options: Sequence[str] = (),
    base_dir: str | os.PathLike[str] | None = None,
) -> Iterator[DaskCluster]:
    """Start a scheduler and `workers` workers on loopback, yield the cluster, stop all of it.

    Workers run this interpreter with the repository root as working directory and on
    PYTHONPATH (Covalent pickles task functions by reference: `mnist_core` and `bench` must
    import there). `env` adds variables for scheduler and workers; `worker_options` adds
    `dask worker` command-line options (e.g. `--memory-limit=2GB`). Raises DaskClusterError,
    with the failing process's log, if the cluster is not complete within `startup_timeout`.
    """
    if workers < 1 or threads_per_worker < 1:
        raise ValueError(f"workers and threads_per_worker must be >= 1, got {workers}, "
                         f"{threads_per_worker}")
    keep = os.environ.get(KEEP_STATE_ENV) == "1"
    root = Path(tempfile.mkdtemp(prefix="dask-bench-", dir=base_dir))
    launched: list[_Launched] = []
    failed = False
    # The watchdog cleans up if this process dies without reaching `finally` (kill -9).
    with sigterm_raises(), watchdog(keep_dirs=keep) as dog:
        dog.remove(root)
        try:
            try:
                cluster = _start(root, workers, threads_per_worker, startup_timeout, env,
                                 worker_options, launched, dog)
            except DaskClusterError:
                failed = True  # keep the logs that the message points to
                raise
            log.info("Dask cluster %s up in %.1f s (%d workers x %d threads), logs in %s",
                     cluster.address, cluster.startup_s, workers, threads_per_worker, root)
            yield cluster
        finally:
            with signals_deferred():
                _stop(launched)
                if keep or failed:
                    log.warning("kept Dask cluster logs in %s", root)
                else:
                    shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def attached_cluster(address: str, timeout: float = 10.0) -> Iterator[DaskCluster]:
    """Use a cluster that runs already: check within `timeout` s that its scheduler answers
    and has workers; never stop it."""
    address = _check_address(address)
    try:
        workers = _scheduler_workers(address, timeout)
    except (OSError, TimeoutError) as exc:
        raise DaskClusterError(
            f"No Dask scheduler answers at {address}: {type(exc).__name__}: {_first_line(exc)}\n"
            "What to do: start one (`dask scheduler`, then `dask worker <address>` on each "
            "machine), fix the address, or leave it out so that the benchmark starts its own "
            "loopback cluster."
        ) from exc
    if not workers:
        raise DaskClusterError(
            f"The Dask scheduler at {address} has no workers: Covalent tasks would wait forever.\n"
            f"What to do: start workers with `dask worker {address}`."
        )
    threads = {int(w.get("nthreads", 0)) for w in workers.values()}
    yield DaskCluster(
        address=address,
        workers=len(workers),
        threads_per_worker=threads.pop() if len(threads) == 1 else None,
        owned=False,
    )


@contextlib.contextmanager
def cluster_for(address: str | None = None, **start_kwargs: Any) -> Iterator[DaskCluster]:
    """address (or $COVALENT_BENCH_DASK_SCHEDULER) -> attached_cluster, else dask_cluster(**kw)."""
    address = address or os.environ.get(SCHEDULER_ENV) or None
    if address is None:
        with dask_cluster(**start_kwargs) as cluster:
            yield cluster
        return
    ignored = {k: v for k, v in start_kwargs.items() if v not in (None, False)}
    if ignored:
        log.warning("attaching to %s: start options %s do not apply", address, ignored)
    with attached_cluster(address) as cluster:
        yield cluster


# --- starting -------------------------------------------------------------------------------


def _start(root: Path, workers: int, threads: int, timeout: float,
           env: Mapping[str, str] | None, worker_options: Sequence[str],
           launched: list[_Launched], dog: Watchdog) -> DaskCluster:
    """Scheduler, then workers, then wait until all registered; `launched` collects them."""
    t0 = time.perf_counter()
    proc_env = _cluster_env(root, env)
    staging = root / "covalent-staging"
    staging.mkdir()
    address = _start_scheduler(root, proc_env, launched, timeout, dog)
    for i in range(workers):
        _start_worker(root, proc_env, launched, address, i, threads, worker_options, dog)
    _wait_for_workers(address, workers, launched, t0 + timeout, timeout)
    return DaskCluster(
        address=address,
        workers=workers,
        threads_per_worker=threads,
        startup_s=time.perf_counter() - t0,
        owned=True,
        root=root,
        staging_dir=staging,
        pids=tuple(item.proc.pid for item in launched),
    )


def _cluster_env(root: Path, extra: Mapping[str, str] | None) -> dict[str, str]:
    """Ours, minus the caller's COVALENT_* client settings, with this repository importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVALENT_")}
    # Unpickling a task imports covalent, which writes covalent.conf into its config dir:
    # keep that out of the user's home.
    config_dir = root / "covalent-config"
    config_dir.mkdir()
    env["COVALENT_CONFIG_DIR"] = str(config_dir)
    path = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env["PYTHONPATH"] = os.pathsep.join(path)
    # Temporary files of Dask and of the tasks stay inside `root`, removed with it.
    tmp = root / "tmp"
    tmp.mkdir()
    env["TMPDIR"] = str(tmp)
    env.update(extra or {})
    loopback_no_proxy(env)  # tasks talk to a loopback Covalent server
    return env


def _launch(name: str, args: list[str], root: Path, env: Mapping[str, str],
            launched: list[_Launched], dog: Watchdog) -> _Launched:
    log_path = root / f"{name}.log"
    with open(log_path, "wb") as out:
        # Own session: only our `finally` stops it, and its group id finds its children.
        proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            env=dict(env),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    dog.session(proc.pid)
    item = _Launched(name, proc, log_path)
    launched.append(item)
    return item


def _start_scheduler(root: Path, env: Mapping[str, str], launched: list[_Launched],
                     timeout: float, dog: Watchdog) -> str:
    """Start the scheduler on a port it picks itself (no race), read its address back."""
    info_file = root / "scheduler.json"
    item = _launch(
        "scheduler",
        ["distributed.cli.dask_scheduler", "--host=127.0.0.1", "--port=0", "--no-dashboard",
         f"--dashboard-address={_HTTP_ADDRESS}", f"--scheduler-file={info_file}"],
        root, env, launched, dog,
    )
    deadline = time.perf_counter() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError, KeyError):
            address = str(json.loads(info_file.read_text())["address"])
            if address.startswith(SCHEME):
                return address
        _check_running(item, "the Dask scheduler")
        if time.perf_counter() > deadline:
            raise _start_error(f"the scheduler wrote no address within {timeout:g} s", [item],
                               "on a slow or busy machine raise startup_timeout.")
        time.sleep(0.1)


def _start_worker(root: Path, env: Mapping[str, str], launched: list[_Launched], address: str,
                  index: int, threads: int, options: Sequence[str], dog: Watchdog) -> None:
    local = root / f"worker-{index}"
    local.mkdir()
    _launch(
        f"worker-{index}",
        ["distributed.cli.dask_worker", address, "--host=127.0.0.1", "--nworkers=1",
         f"--nthreads={threads}", "--no-dashboard", f"--dashboard-address={_HTTP_ADDRESS}",
         f"--name=worker-{index}", f"--local-directory={local}", *options],
        root, env, launched, dog,
    )


def _wait_for_workers(address: str, n: int, launched: list[_Launched], deadline: float,
                      timeout: float) -> None:
    """Until the scheduler has `n` workers; fail at once if any process of ours exits."""
    from distributed import Client

    client = Client(address, timeout=_CONNECT_TIMEOUT_S, set_as_default=False)
    try:
        while True:
            for item in launched:
                _check_running(item, f"the Dask {item.name.replace('-', ' ')}")
            left = deadline - time.perf_counter()
            if left <= 0:
                seen = len(client.scheduler_info(n_workers=-1)["workers"])
                raise _start_error(
                    f"{seen} of {n} workers registered with {address} within {timeout:g} s",
                    launched, "read the worker logs above; on a slow or busy machine raise "
                    "startup_timeout.",
                )
            try:
                client.wait_for_workers(n, timeout=min(_POLL_S, left))
                return
            except TimeoutError:
                continue
    finally:
        client.close()


def _check_running(item: _Launched, what: str) -> None:
    status = item.proc.poll()
    if status is not None:
        raise _start_error(f"{what} exited with status {status}", [item],
                           "read its log above; it names the failing option or import.")


def _start_error(what: str, items: list[_Launched], hint: str) -> DaskClusterError:
    parts = [f"Dask cluster did not start: {what}."]
    if items:
        parts.append(f"Its logs are kept in {items[0].log_path.parent} (delete it when done).")
    for item in items:
        parts.append(f"--- last lines of {item.log_path} ---\n{_tail(item.log_path)}")
    parts.append(f"What to do: {hint}")
    return DaskClusterError("\n".join(parts))


# --- stopping -------------------------------------------------------------------------------


def _stop(launched: list[_Launched]) -> None:
    """SIGTERM workers and scheduler (Dask shuts down cleanly on it), then SIGKILL what is
    left, including strays in their process groups (nanny-spawned workers, resource trackers).
    """
    if not launched:
        return
    t0 = time.perf_counter()
    # The Popen leaders are reaped by Popen.wait below: psutil must not wait on them.
    others = _others(launched)
    deadline = time.perf_counter() + STOP_TIMEOUT_S
    # Workers first, while their scheduler still answers: without it they retry connecting.
    for batch in (launched[1:], launched[:1]):
        for item in batch:
            with contextlib.suppress(OSError):
                item.proc.terminate()
        for item in batch:
            with contextlib.suppress(subprocess.TimeoutExpired):
                item.proc.wait(timeout=max(0.1, deadline - time.perf_counter()))
    _, left = psutil.wait_procs(others, timeout=max(0.1, deadline - time.perf_counter()))
    for item in launched:
        if item.proc.returncode is None:  # not reaped, so the group id is still ours
            log.warning("Dask %s did not exit on SIGTERM; killing its process group", item.name)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(item.proc.pid, signal.SIGKILL)
            item.proc.wait()
    # Strays spawned after the snapshot or orphaned by their parent.
    leftover = [p for p in [*left, *_others(launched)] if alive(p)]
    if leftover:
        log.warning("%d Dask processes outlived SIGTERM; killing them: %s", len(leftover),
                    [p.pid for p in leftover])
        kill(leftover)
    log.info("Dask cluster stopped in %.1f s", time.perf_counter() - t0)


def _others(launched: list[_Launched]) -> list[psutil.Process]:
    """Descendants of our CLI processes, and whatever else lives in their process groups."""
    found: dict[int, psutil.Process] = {}
    for item in launched:
        found.update((p.pid, p) for p in process_tree(item.proc.pid)[1:])
        found.update((p.pid, p) for p in group_processes(None, item.proc.pid))
    return list(found.values())


# --- small helpers --------------------------------------------------------------------------


def _check_address(address: str) -> str:
    text = address.strip().rstrip("/")
    host, _, port = text.removeprefix(SCHEME).rpartition(":")
    if not text.startswith(SCHEME) or not host or not port.isdigit():
        raise DaskClusterError(
            f"Not a Dask scheduler address: {address!r} (expected e.g. tcp://10.0.0.5:8786)"
        )
    return text


def _scheduler_workers(address: str, timeout: float) -> dict[str, Any]:
    from distributed import Client

    with Client(address, timeout=timeout, set_as_default=False) as client:
        return dict(client.scheduler_info(n_workers=-1)["workers"])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""
