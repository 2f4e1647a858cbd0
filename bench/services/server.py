"""The Covalent server's lifecycle: start one isolated server, or attach to a running one.

An owned server gets a fresh state directory (config, databases, logs, caches, TMPDIR) and a
free loopback port, runs `covalent start` in its own session, and is stopped on exit with
`covalent stop` under the *same* environment (any other environment stops someone else's
server), after which every process of its tree is reaped and the state directory removed.
Everything it listens on is bound to loopback, no proxy variable routes its loopback traffic,
and a watchdog kills it and removes its state should this process die without doing so.
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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import requests
import toml  # covalent writes covalent.conf in its dialect

from bench import adapters
from bench.adapters import covalent_api
from bench.services.processes import (
    LOOPBACK_HOSTS,
    Watchdog,
    alive,
    exit_status,
    group_processes,
    kill,
    loopback_no_proxy,
    process_tree,
    read_pid,
    signals_deferred,
    sigterm_raises,
    watchdog,
)

__all__ = [
    "KEEP_STATE_ENV",
    "SERVER_ENV",
    "CovalentServer",
    "CovalentServerError",
    "attached_server",
    "client_dispatch_cache",
    "covalent_server",
    "server_for",
]

SERVER_ENV = "COVALENT_BENCH_SERVER"
KEEP_STATE_ENV = "COVALENT_BENCH_KEEP_STATE"

LOG_NAME = "covalent_ui.log"  # the server's own log, under COVALENT_LOGDIR
START_LOG_NAME = "covalent_start.log"  # what `covalent start` printed
STOP_TIMEOUT_S = 15.0  # for the server's processes to exit after `covalent stop`
# An owned server's main process stopped (SIGSTOP, Ctrl-Z) this long is reported by gone(),
# so a wait does not first sit out a status poll's read timeout; a debugger's or a sampling
# profiler's stop is a tracing stop, never this one.
STOPPED_FOR_S = 1.0
_CLI_TIMEOUT_S = 60.0  # `covalent stop` waits on the server without a limit of its own
_HTTP_TIMEOUT_S = 5.0
_TAIL_LINES = 20

# State directory layout: env var -> subdirectory (COVALENT_DATABASE is a file, set apart).
_STATE_DIRS = {
    "COVALENT_CONFIG_DIR": "config",
    "COVALENT_DATA_DIR": "data",
    "COVALENT_CACHE_DIR": "cache",  # ui.pid, heartbeat, Dask scratch space
    "COVALENT_LOGDIR": "logs",
    "COVALENT_RESULTS_DIR": "results",
    "COVALENT_DISPATCH_CACHE_DIR": "dispatches",
    "COVALENT_EXECUTOR_DIR": "executor_plugins",
    # The local and dask executors derive their workdir and cache dir from XDG_CACHE_HOME
    # (no COVALENT_* override exists). HOME and XDG_CONFIG_HOME stay: covalent's own config
    # paths are covered above, and the user's torch/pip/dask settings must keep working.
    "XDG_CACHE_HOME": "xdg-cache",
    "XDG_DATA_HOME": "xdg-data",
}

# What the hook in the server records about Covalent's local executor's process pool, in the
# server's cache directory: the pool's worker pids, and a line per task that the pool lost.
POOL_PIDS_NAME = "bench-local-pool.pids"
POOL_EVENTS_NAME = "bench-local-pool.jsonl"

# Put on the PYTHONPATH of an owned server, so every Python process of it loads this first.
# 1. Covalent's server creates its Dask LocalCluster with no dashboard address, and Dask's
#    default ":8787" listens on all interfaces (no Dask setting moves it; even with the
#    dashboard off the scheduler's HTTP server listens there). This moves it to a free
#    loopback port.
# 2. Covalent's local executor runs every task in one module-level ProcessPoolExecutor for
#    the server's whole life: a task whose process dies (os._exit, a crash, our kill of a
#    task past its timeout) breaks it, and every later local task fails with "the process
#    pool is not usable anymore". This replaces a broken pool at the next submit, and notes
#    the pool's pids and which process died with which exit code (the rows say so).
_SITECUSTOMIZE = """\
\"\"\"Written by bench.services.server: the server's Dask dashboard listens on loopback only;
Covalent's local executor gets a fresh process pool when a task broke the last one.\"\"\"
import importlib.machinery
import importlib.util
import os
import sys

_ADDRESS = "127.0.0.1:0"


def _patch_dask(module):
    import functools
    import inspect

    cls = module.LocalCluster
    init = cls.__init__
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        if "dashboard_address" not in signature.bind_partial(self, *args, **kwargs).arguments:
            kwargs["dashboard_address"] = _ADDRESS
        init(self, *args, **kwargs)

    cls.__init__ = __init__


def _patch_local(module):
    import json
    import threading
    import time
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    # Covalent loads its executor plugins from their files, not as modules by name: the
    # local executor's module is the namespace of its class's methods.
    local = getattr(module, "_executor_manager").executor_plugins_map.get("local")
    namespace = getattr(getattr(local, "_send", None), "__globals__", {})
    cache = os.environ.get("COVALENT_CACHE_DIR")
    if not cache or not isinstance(namespace.get("proc_pool"), ProcessPoolExecutor):
        return
    events = os.path.join(cache, "@EVENTS@")
    pids_file = os.path.join(cache, "@PIDS@")

    def note(event):
        with open(events, "a") as f:
            f.write(json.dumps(event) + "\\n")

    class HealingPool:
        def __init__(self, pool):
            self._pool, self._lock, self._pids = pool, threading.Lock(), ()

        def submit(self, fn, *args, **kwargs):
            with self._lock:
                if getattr(self._pool, "_broken", False):
                    self._pool.shutdown(wait=False)
                    self._pool = ProcessPoolExecutor()
                    note({"event": "replaced", "time": time.time()})
                pool = self._pool
                future = pool.submit(fn, *args, **kwargs)
                live = getattr(pool, "_processes", None)  # the pool's own, filled lazily
                procs = dict(live or {})
                if tuple(sorted(procs)) != self._pids:
                    self._pids = tuple(sorted(procs))
                    with open(pids_file, "w") as f:
                        f.write(" ".join(map(str, self._pids)))
            meta = next((a for a in args if isinstance(a, dict) and "dispatch_id" in a), {})

            def done(fut):
                if fut.cancelled() or not isinstance(fut.exception(), BrokenProcessPool):
                    return
                seen = {**procs, **dict(live or {})}  # a worker started after this submit
                for proc in seen.values():
                    if proc.exitcode is None:  # not reaped yet: it is dying, give it a moment
                        proc.join(timeout=1.0)
                dead = [[pid, p.exitcode] for pid, p in seen.items() if p.exitcode is not None]
                note({"event": "broken", "dispatch_id": meta.get("dispatch_id"),
                      "node_ids": meta.get("node_ids"), "dead": dead, "time": time.time()})

            future.add_done_callback(done)
            return future

        def __getattr__(self, name):
            return getattr(self._pool, name)

    namespace["proc_pool"] = HealingPool(namespace["proc_pool"])


_PATCHES = {"distributed.deploy.local": _patch_dask, "covalent.executor": _patch_local}


class _PatchOnImport:
    def find_spec(self, name, path=None, target=None):
        patch = _PATCHES.get(name)
        if patch is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            try:
                patch(module)
            except Exception as exc:  # never keep the server from starting
                print(f"bench sitecustomize: {name} not patched: {exc!r}", file=sys.stderr)

        spec.loader.exec_module = exec_and_patch
        return spec


sys.meta_path.insert(0, _PatchOnImport())

# Then run the sitecustomize module that this one hides, if there is one.
_here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.machinery.PathFinder.find_spec(
    "sitecustomize", [p for p in sys.path if os.path.abspath(p or ".") != _here]
)
if _spec is not None and _spec.loader is not None:
    _spec.loader.exec_module(importlib.util.module_from_spec(_spec))
""".replace("@EVENTS@", POOL_EVENTS_NAME).replace("@PIDS@", POOL_PIDS_NAME)

log = logging.getLogger(__name__)


class CovalentServerError(RuntimeError):
    """A Covalent server could not be started, reached or stopped."""


@dataclass(frozen=True)
class CovalentServer:
    """A running Covalent server, either started here (owned) or attached to."""

    address: str  # "http://127.0.0.1:<port>", the port as actually bound
    port: int
    owned: bool  # True if started here, and so stopped here
    startup_s: float | None = None  # `covalent start` until the server answered (owned only)
    root: Path | None = None  # isolated state directory (owned only)
    pid: int | None = None  # the server's top process: the shell `covalent start` launched
    workers: int | None = None  # Dask cluster size, as the server's config has it
    threads_per_worker: int | None = None
    main_pid: int | None = None  # the server itself (`python app.py`), the shell's child
    adapter: adapters.Adapter | None = None  # its Covalent's release family (owned only)
    # gone(): when each of its processes was first seen stopped by a signal
    _stopped_since: dict[int, float] = field(default_factory=dict, compare=False, repr=False)

    @property
    def log_path(self) -> Path | None:
        """The server's own log file (owned only)."""
        return None if self.root is None else self.root / _STATE_DIRS["COVALENT_LOGDIR"] / LOG_NAME

    def processes(self) -> list[psutil.Process]:
        """The server's live process tree: top process and all its descendants."""
        return [] if self.pid is None else process_tree(self.pid)

    def footprint(self) -> dict[str, float]:
        """What the server holds now: the RSS (MB) and open file descriptors of its process
        tree, summed, and its database's size on disk (MB, owned servers: the file and its
        journal). For a soak: what grows from dispatch to dispatch."""
        procs = self.processes()
        rss = fds = 0 if procs else float("nan")  # attached: its processes are not ours
        for proc in procs:
            try:
                rss += proc.memory_info().rss
                fds += proc.num_fds()
            except psutil.Error:  # gone meanwhile, or not ours to read
                continue
        db = float("nan")
        if self.root is not None and (self.root / "db").is_dir():
            db = sum(f.stat().st_size for f in (self.root / "db").iterdir() if f.is_file())
            db /= 2**20
        return {"server_rss_mb": rss / 2**20, "server_open_files": float(fds),
                "server_db_mb": db}

    def pool_events(self, dispatch_ids: set[str]) -> list[dict[str, Any]]:
        """What the server's hook noted of these dispatches' tasks that lost their process
        in the local executor's pool: [{"dispatch_id", "node_ids", "dead": [[pid, exit]]}]."""
        if self.root is None:
            return []
        path = self.root / _STATE_DIRS["COVALENT_CACHE_DIR"] / POOL_EVENTS_NAME
        try:
            lines = path.read_text().splitlines()
        except OSError:
            return []
        events = []
        for line in lines:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if event.get("event") == "broken" and event.get("dispatch_id") in dispatch_ids:
                    events.append(event)
        return events

    def stop_tasks(self, executor: str) -> str:
        """Stop whatever runs tasks on `executor` now, since Covalent's cancel does not stop a
        running local or Dask task: the local executor's pool workers are killed (the hook
        gives the server a fresh pool at the next task), the server's Dask workers restarted.
        Only for an owned server, whose tasks are all the session's. Returns what was done,
        for the row ("" if nothing)."""
        if not self.owned or self.root is None:
            return "left its task processes running (the server is not the harness's)"
        if executor == "local":
            pids_file = self.root / _STATE_DIRS["COVALENT_CACHE_DIR"] / POOL_PIDS_NAME
            try:
                pids = [int(p) for p in pids_file.read_text().split()]
            except (OSError, ValueError):
                return ""
            ours = {p.pid: p for p in self.processes()}
            procs = [ours[pid] for pid in pids if pid in ours and alive(ours[pid])]
            if not procs:
                return ""
            kill(procs)
            return (f"killed its task processes (the local executor's pool workers "
                    f"{', '.join(str(p.pid) for p in procs)}; the next task gets a fresh pool)")
        if executor == "dask":
            try:
                address = toml.load(self.root / _STATE_DIRS["COVALENT_CONFIG_DIR"]
                                    / "covalent.conf")["dask"]["scheduler_address"]
            except (OSError, KeyError, ValueError, toml.TomlDecodeError):
                return ""
            return stop_dask_tasks(str(address), "the server's", self.processes())
        return ""

    def gone(self) -> str | None:
        """A one-line reason if this owned server's main process has exited, or has been
        stopped by a signal for STOPPED_FOR_S, else None (an attached one: None). Costs no
        request, so a wait can ask it at every poll: a killed server's children can keep
        its port open, and a stopped server answers nothing, and a poll would then wait out
        its read timeout before failing."""
        for pid in self._own_pids():
            if not alive(pid):
                return (f"Covalent server at {self.address}: main process {pid} is "
                        f"gone{_exit_note(pid)} (its log: {self.log_path})")
        now = time.monotonic()
        for pid in self._own_pids():
            if not _stopped(pid, tracing=False):
                self._stopped_since.pop(pid, None)
            elif now - self._stopped_since.setdefault(pid, now) >= STOPPED_FOR_S:
                return self._stopped_reason(pid)
        return None

    def _stopped_reason(self, pid: int) -> str:
        return (f"Covalent server at {self.address}: main process {pid} is stopped (SIGSTOP, "
                f"Ctrl-Z or a debugger); the harness kills it")

    def _own_pids(self) -> list[int]:
        """The main process and its launcher, where this server is ours; else none."""
        if not self.owned:
            return []
        return list(dict.fromkeys(p for p in (self.main_pid, self.pid) if p is not None))

    def check_alive(self, timeout_s: float = 3.0) -> str | None:
        """None if the server is alive and answers HTTP within `timeout_s`, else a one-line
        reason. An owned server's main process must be running too (checked first, and
        without waiting: `gone`); an attached one only gets the HTTP check."""
        where = f"Covalent server at {self.address}"
        if reason := self.gone():
            return reason
        for pid in self._own_pids():
            if _stopped(pid):  # it would answer no HTTP call until someone resumes it
                return self._stopped_reason(pid)
        try:
            _check_answers(self.address, timeout=timeout_s, adapter=self.adapter)
        except requests.Timeout:
            return f"{where} does not answer within {timeout_s:g} s"
        except (requests.RequestException, ValueError) as exc:
            return f"{where} does not answer: {type(exc).__name__}: {_first_line(exc)}"
        return None


@contextlib.contextmanager
def covalent_server(
    *,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    no_cluster: bool = False,
    base_dir: str | os.PathLike[str] | None = None,
    startup_timeout: float = 180.0,
    env: Mapping[str, str] | None = None,
    python: str | None = None,
    covalent_version: str | None = None,
) -> Iterator[CovalentServer]:
    """Start `covalent start` with fresh isolated dirs, yield it, and stop exactly that server.

    `workers`/`threads_per_worker` size the Dask cluster (None: covalent's defaults, which the
    yielded server reports). `env` adds variables for the server only (e.g. OMP_NUM_THREADS).
    `python` is the interpreter that runs `covalent start` and `covalent stop`, and so the
    server (None: this one); another environment's, for another Covalent release.
    `covalent_version`: that interpreter's Covalent, which picks what its server needs
    (bench.adapters; None: asked of the interpreter).
    Raises CovalentServerError if the server does not answer within `startup_timeout` seconds;
    its state directory is then kept for inspection.
    """
    if no_cluster and (workers is not None or threads_per_worker is not None):
        raise ValueError("workers and threads_per_worker size the Dask cluster; drop no_cluster")
    keep = os.environ.get(KEEP_STATE_ENV) == "1"
    args = _start_args(workers, threads_per_worker, no_cluster)
    python = python or sys.executable
    adapter = _adapter(python, covalent_version)
    cli = (python, "-c", adapter.cli_snippet)
    # The watchdog cleans up if this process dies without reaching `finally` (kill -9).
    with sigterm_raises(), watchdog(keep_dirs=keep) as dog:
        server, server_env, start_proc = _start_on_free_port(
            args, base_dir, env, startup_timeout, dog, cli, adapter
        )
        try:
            yield server
        finally:
            with signals_deferred():
                _stop(server, server_env, start_proc, cli)
                _remove_state(server.root, keep)


@contextlib.contextmanager
def attached_server(address: str) -> Iterator[CovalentServer]:
    """Use a server that runs already: check that it answers, and never stop it."""
    url, port = _parse_address(address)
    try:
        _check_answers(url)
    except (requests.RequestException, ValueError) as exc:
        raise CovalentServerError(
            f"No Covalent server answers at {url}: {type(exc).__name__}: {_first_line(exc)}\n"
            f"What to do: start one (`covalent start --port {port}`), fix the address, or unset "
            f"{SERVER_ENV} so that the benchmark starts its own isolated server."
        ) from exc
    yield CovalentServer(address=url, port=port, owned=False)


@contextlib.contextmanager
def client_dispatch_cache(directory: str | os.PathLike[str] | None = None) -> Iterator[Path]:
    """Have this process's Covalent client write its dispatch manifests into `directory`
    (None: a fresh temporary directory, removed on exit), and restore the previous one after.

    `ct.dispatch` writes one manifest per dispatch (~100 KB for a small graph) into its
    dispatch cache directory and never deletes it. Covalent sets that path once, at `import
    covalent`, from `sdk.dispatch_cache_dir` of the client's covalent.conf (written on the
    first import ever, so it wins) or else from $COVALENT_DISPATCH_CACHE_DIR; every dispatch
    reads it anew, and that is what is set here (covalent_api.swap_dispatch_cache_dir), so
    this works whenever covalent was imported."""
    made = directory is None
    path = Path(tempfile.mkdtemp(prefix="covalent-dispatches-")) if made else Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    previous = covalent_api.swap_dispatch_cache_dir(path)
    try:
        yield path
    finally:
        covalent_api.swap_dispatch_cache_dir(previous)
        if made:
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def server_for(address: str | None = None, **start_kwargs: Any) -> Iterator[CovalentServer]:
    """address (or $COVALENT_BENCH_SERVER) -> attached_server, else covalent_server(**kwargs)."""
    address = address or os.environ.get(SERVER_ENV) or None
    if address is None:
        with covalent_server(**start_kwargs) as server:
            yield server
        return
    ignored = {k: v for k, v in start_kwargs.items() if v not in (None, False)}
    if ignored:
        log.warning("attaching to %s: start options %s do not apply", address, ignored)
    with attached_server(address) as server:
        yield server


def _running_task_pid(dask_worker: Any) -> int | None:
    """On a Dask worker: its pid if a task thread runs there (a cancelled one included)."""
    return os.getpid() if getattr(dask_worker, "active_threads", None) else None


def stop_dask_tasks(address: str, whose: str, ours: list[psutil.Process]) -> str:
    """Kill the workers of the Dask cluster at `address` that are running a task (their
    nannies start fresh ones): the only way to stop a task thread that a cancelled future
    left running. Only processes in `ours` are killed. Returns what was done, or why not."""
    from distributed import Client

    try:
        with Client(address, timeout=10, set_as_default=False) as client:
            busy = client.run(_running_task_pid)
    except Exception as exc:  # the row says so; the next run finds out the rest
        return (f"could not stop its tasks on {whose} Dask workers: "
                f"{type(exc).__name__}: {_first_line(exc)}")
    mine = {p.pid: p for p in ours}
    procs = [mine[pid] for pid in busy.values() if pid in mine]
    if not procs:
        return ""
    kill(procs)
    return (f"killed {whose} Dask worker(s) running its tasks (pids "
            f"{', '.join(str(p.pid) for p in procs)}; their nannies start fresh ones)")


# --- starting -------------------------------------------------------------------------------

_PORT_ATTEMPTS = 3


class _PortTaken(CovalentServerError):
    """`covalent start` moved to another port: the server is unusable (see _read_back)."""


def _start_args(workers: int | None, threads_per_worker: int | None, no_cluster: bool) -> list[str]:
    # The `--opt=value` form: the CLI rejects `-t -1` as an unknown option "-1" either way.
    args = ["--no-cluster"] if no_cluster else []
    if workers is not None:
        args.append(f"--workers={workers}")
    if threads_per_worker is not None:
        args.append(f"--threads-per-worker={threads_per_worker}")
    return args


def _start_on_free_port(
    args: list[str],
    base_dir: str | os.PathLike[str] | None,
    extra_env: Mapping[str, str] | None,
    timeout: float,
    dog: Watchdog,
    cli: tuple[str, ...],
    adapter: adapters.Adapter,
) -> tuple[CovalentServer, dict[str, str], subprocess.Popen[bytes]]:
    """Start a server in a fresh state dir on a free port; retry if the port gets taken."""
    for attempt in range(1, _PORT_ATTEMPTS + 1):
        root = Path(tempfile.mkdtemp(prefix="covalent-bench-", dir=base_dir))
        dog.remove(root)
        env = _server_env(root, _free_port(), extra_env, adapter)
        try:
            server, proc = _start(root, env, args, timeout, dog, cli, adapter)
        except _PortTaken as exc:
            log.warning("%s (attempt %d of %d)", exc, attempt, _PORT_ATTEMPTS)
            continue
        return server, env, proc
    raise CovalentServerError(
        f"Covalent server lost its port to other processes {_PORT_ATTEMPTS} times in a row.\n"
        "What to do: find what grabs loopback ports on this machine, then try again."
    )


def _free_port() -> int:
    """A loopback port free right now (`covalent start` moves on if it is taken meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _adapter(python: str, version: str | None) -> adapters.Adapter:
    """The release family of the Covalent that `python` imports."""
    if version is None and python == sys.executable:
        return adapters.current()
    if version is None:
        try:
            done = subprocess.run(
                [python, "-c", "import importlib.metadata as m; print(m.version('covalent'))"],
                capture_output=True, text=True, timeout=_CLI_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CovalentServerError(f"cannot ask {python} for its covalent: {exc}") from exc
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            raise CovalentServerError(f"{python} has no covalent to start a server with: {last}")
        version = done.stdout.strip()
    return adapters.adapter_for(version)


def _server_env(root: Path, port: int, extra: Mapping[str, str] | None,
                adapter: adapters.Adapter) -> dict[str, str]:
    """The server's environment: ours, with every covalent path and temporary file inside
    `root`, the variables and directories its release family needs, proxies bypassed for
    loopback, and Dask's dashboard on loopback."""
    # Inherited COVALENT_* variables describe the caller's own client setup: none apply here.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVALENT_")}
    for var, sub in _STATE_DIRS.items():
        # `covalent start` writes its pid file into the cache dir without creating it first.
        (root / sub).mkdir()
        env[var] = str(root / sub)
    for var, sub in adapter.server_dirs:  # what its release needs and does not create
        (Path(env[var]) / sub).mkdir(parents=True, exist_ok=True)
    (root / "db").mkdir()
    env["COVALENT_DATABASE"] = str(root / "db" / "dispatcher_db.sqlite")
    env.update(adapter.server_env(root / "db"))
    # Every temporary file of the server and its tasks goes into `root` too (a cache
    # database's empty NamedTemporaryFile, which a killed server leaves behind, among them).
    (root / "tmp").mkdir()
    env["TMPDIR"] = str(root / "tmp")
    env["COVALENT_SVC_PORT"] = str(port)
    # Bind where we connect; "localhost" may resolve to ::1 on some machines.
    env["COVALENT_DISPATCHER_ADDR"] = "127.0.0.1"
    env.update(extra or {})
    # Whatever `extra` says: `covalent start` polls the server with requests, which would
    # send even that through HTTP_PROXY and then wait forever (the server's tasks fetch their
    # inputs from it too), and the hook keeps the Dask dashboard on loopback.
    loopback_no_proxy(env)
    hooks = root / "pyhooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    env["PYTHONPATH"] = os.pathsep.join([str(hooks), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _start(
    root: Path, env: dict[str, str], args: list[str], timeout: float, dog: Watchdog,
    cli: tuple[str, ...], adapter: adapters.Adapter,
) -> tuple[CovalentServer, subprocess.Popen[bytes]]:
    """Run `covalent start` until the server answers; on any failure leave nothing running."""
    cmd = [*cli, "start", f"--port={env['COVALENT_SVC_PORT']}", *args]
    t0 = time.perf_counter()
    with open(root / _STATE_DIRS["COVALENT_LOGDIR"] / START_LOG_NAME, "wb") as out:
        # Own session: the server lands in this process group and no terminal's Ctrl-C reaches
        # it, so only our `finally` stops it. `covalent start` is not reaped until the server
        # is gone: its pid, which is the group id, cannot be recycled meanwhile.
        proc = subprocess.Popen(
            [*cmd, "--no-header", "--no-footer"],
            env=env,
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    dog.session(proc.pid)  # the server and its Dask cluster live in this session
    try:
        _wait_for_cli(proc, root, timeout)
        server = _read_back(root, env, time.perf_counter() - t0, adapter)
        if server.pid is not None:
            dog.tree(server.pid)  # in case some part of it leaves the session
    except BaseException as exc:
        with signals_deferred():
            _kill_start(proc, read_pid(root / _STATE_DIRS["COVALENT_CACHE_DIR"] / "ui.pid"))
            # Keep the state of a real failure for inspection, as the error message says.
            inspect = isinstance(exc, CovalentServerError) and not isinstance(exc, _PortTaken)
            if not inspect:
                _remove_state(root, keep=os.environ.get(KEEP_STATE_ENV) == "1")
        raise
    log.info("Covalent server %s up in %.1f s, state in %s", server.address, server.startup_s, root)
    return server, proc


def _wait_for_cli(proc: subprocess.Popen[bytes], root: Path, timeout: float) -> None:
    """Wait for `covalent start` to return, which it does once the server answers HTTP."""
    deadline = time.perf_counter() + timeout
    pidfile = root / _STATE_DIRS["COVALENT_CACHE_DIR"] / "ui.pid"
    while (status := exit_status(proc.pid)) is None:
        top = read_pid(pidfile)
        if top is not None and not alive(top):
            # `covalent start` would poll a dead server forever.
            raise _start_error(
                "the server process exited during start-up",
                root,
                "read the server log above; it names the failing component.",
            )
        if time.perf_counter() > deadline:
            raise _start_error(
                f"the server did not answer within {timeout:g} s",
                root,
                "read the logs above; on a slow or busy machine raise startup_timeout.",
            )
        time.sleep(0.1)
    if status != 0:
        raise _start_error(
            f"`covalent start` exited with status {status}",
            root,
            "check the options given to `covalent start` (its output is above).",
        )


def _read_back(root: Path, env: Mapping[str, str], startup_s: float,
               adapter: adapters.Adapter) -> CovalentServer:
    """Describe the started server from its own config, and check that it is ours."""
    config_file = Path(env["COVALENT_CONFIG_DIR"]) / "covalent.conf"
    config = toml.load(config_file)
    port = int(config["dispatcher"]["port"])  # the bound one, if covalent moved it
    if port != int(env["COVALENT_SVC_PORT"]):
        # The server's object store read the requested port at import and hands out asset
        # URLs on it, which now lead elsewhere.
        raise _PortTaken(f"port {env['COVALENT_SVC_PORT']} was taken during start-up")
    address = f"http://127.0.0.1:{port}"
    try:
        _check_answers(address, adapter=adapter)
    except (requests.RequestException, ValueError) as exc:
        raise _start_error(
            f"{address} does not answer as a Covalent server ({type(exc).__name__})",
            root,
            "read the server log above.",
        ) from exc
    pid = read_pid(Path(env["COVALENT_CACHE_DIR"]) / "ui.pid")
    if pid is None or not _listens_on(process_tree(pid), port):
        raise _start_error(
            f"{address} answers, but not from this server's processes",
            root,
            "another server took the port meanwhile; try again.",
        )
    dask = config.get("dask", {})
    cluster = config["sdk"].get("no_cluster") != "true"
    return CovalentServer(
        address=address,
        port=port,
        owned=True,
        startup_s=startup_s,
        root=root,
        pid=pid,
        workers=int(dask["num_workers"]) if cluster and "num_workers" in dask else None,
        threads_per_worker=(
            int(dask["threads_per_worker"]) if cluster and "threads_per_worker" in dask else None
        ),
        main_pid=_main_pid(pid),
        adapter=adapter,
    )


def _start_error(what: str, root: Path, hint: str) -> CovalentServerError:
    logs = root / _STATE_DIRS["COVALENT_LOGDIR"]
    parts = [
        f"Covalent server did not start: {what}.",
        f"Its state is kept in {root} for inspection (delete it when done).",
    ]
    for path in (logs / START_LOG_NAME, logs / LOG_NAME):
        parts.append(f"--- last lines of {path} ---\n{_tail(path)}")
    parts.append(f"What to do: {hint}")
    return CovalentServerError("\n".join(parts))


# --- stopping -------------------------------------------------------------------------------


def _stop(
    server: CovalentServer, env: Mapping[str, str], start_proc: subprocess.Popen[bytes],
    cli: tuple[str, ...],
) -> None:
    """`covalent stop` this server, then make sure every one of its processes is gone."""
    t0 = time.perf_counter()
    procs = group_processes(server.pid, start_proc.pid)
    main = server.main_pid if server.main_pid is not None else server.pid
    stopped = [p.pid for p in procs if _stopped(p.pid)]
    if stopped:  # `covalent stop` would wait on it; SIGKILL ends even a stopped process
        log.warning("%s: processes %s are stopped (SIGSTOP); killing the server", server.address,
                    stopped)
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        left = procs
    elif main is not None and alive(main):
        _run_cli(cli, ["stop", "--no-header", "--no-footer"], env)
        _, left = psutil.wait_procs(procs, timeout=STOP_TIMEOUT_S)
    else:  # `covalent stop` has nothing to stop, and orphans would not exit by themselves
        log.warning("%s: main process %s is gone; killing the rest", server.address, main)
        left = procs
    if left:
        log.warning(
            "%d processes of %s outlived `covalent stop`; killing them: %s",
            len(left),
            server.address,
            [p.pid for p in left],
        )
        kill(left)
    _kill_start(start_proc, server.pid)  # strays started after the snapshot; reaps it
    log.info("Covalent server %s stopped in %.1f s", server.address, time.perf_counter() - t0)


def _kill_start(proc: subprocess.Popen[bytes], top_pid: int | None) -> None:
    """Kill `covalent start`'s process group and the server tree, then reap `covalent start`."""
    procs = group_processes(top_pid, proc.pid)
    if proc.returncode is None:  # not reaped yet, so the group id is still this server's
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    kill(procs)
    proc.wait()


def _run_cli(cli: tuple[str, ...], args: list[str], env: Mapping[str, str]) -> None:
    """Run a covalent CLI command under a time limit; report failures, never raise them."""
    proc = subprocess.Popen(
        [*cli, *args],
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=_CLI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.warning("`covalent %s` did not return within %g s", " ".join(args), _CLI_TIMEOUT_S)
        return
    if proc.returncode != 0:
        log.warning(
            "`covalent %s` exited with %d:\n%s",
            " ".join(args),
            proc.returncode,
            output.decode(errors="replace")[-2000:],
        )


def _remove_state(root: Path | None, keep: bool) -> None:
    if root is None:
        return
    if keep:
        log.warning("kept Covalent server state in %s (%s=1)", root, KEEP_STATE_ENV)
    else:
        shutil.rmtree(root, ignore_errors=True)


# --- small helpers --------------------------------------------------------------------------


def _parse_address(address: str) -> tuple[str, int]:
    """("http://host:port" without a trailing slash, port) from a URL or "host:port"."""
    text = address.strip().rstrip("/")
    if "://" not in text:
        text = f"http://{text}"
    parts = urlsplit(text)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        raise CovalentServerError(
            f"Not a Covalent server address: {address!r} (expected e.g. http://127.0.0.1:48008)"
        )
    return text, port


def _check_answers(address: str, timeout: float = _HTTP_TIMEOUT_S,
                   adapter: adapters.Adapter | None = None) -> None:
    """Raise unless a Covalent server answers at `address` (a cheap, read-only request): its
    family's dispatch list, or for a server of unknown release (attached) each family's in
    turn, newest first, until one is there."""
    lists = (adapter.dispatch_list,) if adapter is not None else adapters.dispatch_lists()
    with requests.Session() as session:
        # A proxy from the environment must not route loopback traffic (NO_PROXY may lack it).
        session.trust_env = urlsplit(address).hostname not in LOOPBACK_HOSTS
        for listing in lists:
            response = session.get(f"{address}{listing.path}", params=dict(listing.params),
                                   timeout=timeout)
            if response.status_code != 404:
                break
    response.raise_for_status()
    if listing.key not in response.json():  # ValueError too if the body is not JSON
        raise ValueError(f"{address} answers, but not as a Covalent server")


def _main_pid(top: int) -> int | None:
    """The server process proper: `python app.py`, the child of the shell that `covalent
    start` launched (its forked Dask processes show the same command line, one level down)."""
    with contextlib.suppress(psutil.Error):
        shell = psutil.Process(top)
        for proc in [shell, *shell.children()]:
            if "app.py" in proc.cmdline():
                return proc.pid
    return None


def _stopped(pid: int, tracing: bool = True) -> bool:
    """Stopped by a signal (SIGSTOP, SIGTSTP) or (`tracing`) in a tracer's stop: it runs
    nothing until resumed."""
    states = (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP) if tracing else (
        psutil.STATUS_STOPPED,)
    try:
        return psutil.Process(pid).status() in states
    except psutil.Error:
        return False


def _exit_note(pid: int) -> str:
    """" (exit N)" if `pid` is our child and has exited (rarely: the server is a grandchild)."""
    try:
        status = exit_status(pid)
    except ChildProcessError:
        return ""
    return "" if status is None else f" (exit {status})"


def _listens_on(procs: list[psutil.Process], port: int) -> bool:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            # net_connections() is psutil >= 6; connections() before that.
            conns = (getattr(proc, "net_connections", None) or proc.connections)(kind="tcp")
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns):
                return True
    return False


def _tail(path: Path, lines: int = _TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read: {exc.strerror})"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""
