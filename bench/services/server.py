"""The Covalent server's lifecycle: start one isolated server, or attach to a running one.

An owned server gets a fresh state directory (config, database, logs, caches) and a free
loopback port, runs `covalent start` in its own session, and is stopped on exit with
`covalent stop` under the *same* environment (any other environment stops someone else's
server), after which every process of its tree is reaped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import requests
import toml  # covalent writes covalent.conf in its dialect

from bench.measure.covalent_api import CLI_SNIPPET

__all__ = [
    "KEEP_STATE_ENV",
    "SERVER_ENV",
    "CovalentServer",
    "CovalentServerError",
    "attached_server",
    "covalent_server",
    "server_for",
]

SERVER_ENV = "COVALENT_BENCH_SERVER"
KEEP_STATE_ENV = "COVALENT_BENCH_KEEP_STATE"

LOG_NAME = "covalent_ui.log"  # the server's own log, under COVALENT_LOGDIR
START_LOG_NAME = "covalent_start.log"  # what `covalent start` printed
STOP_TIMEOUT_S = 15.0  # for the server's processes to exit after `covalent stop`
_CLI_TIMEOUT_S = 60.0  # `covalent stop` waits on the server without a limit of its own
_HTTP_TIMEOUT_S = 5.0
_TAIL_LINES = 20

# The CLI run by this very interpreter, so the server it launches (`sys.executable app.py`)
# runs in the same environment as the benchmark.
_CLI = CLI_SNIPPET

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

    @property
    def log_path(self) -> Path | None:
        """The server's own log file (owned only)."""
        return None if self.root is None else self.root / _STATE_DIRS["COVALENT_LOGDIR"] / LOG_NAME

    def processes(self) -> list[psutil.Process]:
        """The server's live process tree: top process and all its descendants."""
        return [] if self.pid is None else _process_tree(self.pid)


@contextlib.contextmanager
def covalent_server(
    *,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    no_cluster: bool = False,
    base_dir: str | os.PathLike[str] | None = None,
    startup_timeout: float = 180.0,
    env: Mapping[str, str] | None = None,
) -> Iterator[CovalentServer]:
    """Start `covalent start` with fresh isolated dirs, yield it, and stop exactly that server.

    `workers`/`threads_per_worker` size the Dask cluster (None: covalent's defaults, which the
    yielded server reports). `env` adds variables for the server only (e.g. OMP_NUM_THREADS).
    Raises CovalentServerError if the server does not answer within `startup_timeout` seconds;
    its state directory is then kept for inspection.
    """
    if no_cluster and (workers is not None or threads_per_worker is not None):
        raise ValueError("workers and threads_per_worker size the Dask cluster; drop no_cluster")
    keep = os.environ.get(KEEP_STATE_ENV) == "1"
    args = _start_args(workers, threads_per_worker, no_cluster)
    with _sigterm_raises():
        server, server_env, start_proc = _start_on_free_port(args, base_dir, env, startup_timeout)
        try:
            yield server
        finally:
            with _signals_deferred():
                _stop(server, server_env, start_proc)
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
) -> tuple[CovalentServer, dict[str, str], subprocess.Popen[bytes]]:
    """Start a server in a fresh state dir on a free port; retry if the port gets taken."""
    for attempt in range(1, _PORT_ATTEMPTS + 1):
        root = Path(tempfile.mkdtemp(prefix="covalent-bench-", dir=base_dir))
        env = _server_env(root, _free_port(), extra_env)
        try:
            server, proc = _start(root, env, args, timeout)
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


def _server_env(root: Path, port: int, extra: Mapping[str, str] | None) -> dict[str, str]:
    """The server's environment: ours, with every covalent path inside `root`."""
    # Inherited COVALENT_* variables describe the caller's own client setup: none apply here.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVALENT_")}
    for var, sub in _STATE_DIRS.items():
        # `covalent start` writes its pid file into the cache dir without creating it first.
        (root / sub).mkdir()
        env[var] = str(root / sub)
    (root / "db").mkdir()
    env["COVALENT_DATABASE"] = str(root / "db" / "dispatcher_db.sqlite")
    env["COVALENT_SVC_PORT"] = str(port)
    # Bind where we connect; "localhost" may resolve to ::1 on some machines.
    env["COVALENT_DISPATCHER_ADDR"] = "127.0.0.1"
    env.update(extra or {})
    return env


def _start(
    root: Path, env: dict[str, str], args: list[str], timeout: float
) -> tuple[CovalentServer, subprocess.Popen[bytes]]:
    """Run `covalent start` until the server answers; on any failure leave nothing running."""
    cmd = [sys.executable, "-c", _CLI, "start", f"--port={env['COVALENT_SVC_PORT']}", *args]
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
    try:
        _wait_for_cli(proc, root, timeout)
        server = _read_back(root, env, startup_s=time.perf_counter() - t0)
    except BaseException as exc:
        with _signals_deferred():
            _kill_start(proc, _read_pid(root / _STATE_DIRS["COVALENT_CACHE_DIR"] / "ui.pid"))
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
    while (status := _exit_status(proc.pid)) is None:
        top = _read_pid(pidfile)
        if top is not None and not _alive(top):
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


def _read_back(root: Path, env: Mapping[str, str], startup_s: float) -> CovalentServer:
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
        _check_answers(address)
    except (requests.RequestException, ValueError) as exc:
        raise _start_error(
            f"{address} does not answer as a Covalent server ({type(exc).__name__})",
            root,
            "read the server log above.",
        ) from exc
    pid = _read_pid(Path(env["COVALENT_CACHE_DIR"]) / "ui.pid")
    if pid is None or not _listens_on(_process_tree(pid), port):
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
    server: CovalentServer, env: Mapping[str, str], start_proc: subprocess.Popen[bytes]
) -> None:
    """`covalent stop` this server, then make sure every one of its processes is gone."""
    t0 = time.perf_counter()
    procs = _server_processes(server.pid, start_proc.pid)
    _run_cli(["stop", "--no-header", "--no-footer"], env)
    _, alive = psutil.wait_procs(procs, timeout=STOP_TIMEOUT_S)
    if alive:
        log.warning(
            "%d processes of %s outlived `covalent stop`; killing them: %s",
            len(alive),
            server.address,
            [p.pid for p in alive],
        )
        _kill(alive)
    _kill_start(start_proc, server.pid)  # strays started after the snapshot; reaps it
    log.info("Covalent server %s stopped in %.1f s", server.address, time.perf_counter() - t0)


def _kill_start(proc: subprocess.Popen[bytes], top_pid: int | None) -> None:
    """Kill `covalent start`'s process group and the server tree, then reap `covalent start`."""
    procs = _server_processes(top_pid, proc.pid)
    if proc.returncode is None:  # not reaped yet, so the group id is still this server's
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    _kill(procs)
    proc.wait()


def _run_cli(args: list[str], env: Mapping[str, str]) -> None:
    """Run a covalent CLI command under a time limit; report failures, never raise them."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _CLI, *args],
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


# --- processes ------------------------------------------------------------------------------


def _process_tree(pid: int) -> list[psutil.Process]:
    """`pid` and all its descendants (empty if it is gone)."""
    try:
        top = psutil.Process(pid)
        return [top, *top.children(recursive=True)]
    except psutil.Error:
        return []


def _server_processes(top_pid: int | None, pgid: int) -> list[psutil.Process]:
    """The server's tree, plus strays (e.g. orphaned Dask workers) left in its process group."""
    found = {p.pid: p for p in _process_tree(top_pid)} if top_pid is not None else {}
    for proc in psutil.process_iter():
        # The group leader is our unreaped `covalent start`: psutil would reap it when waiting.
        if proc.pid in found or proc.pid == pgid:
            continue
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(proc.pid) == pgid:
                found[proc.pid] = proc
    return list(found.values())


def _kill(procs: list[psutil.Process]) -> None:
    """SIGTERM, then SIGKILL what is left; log anything that survives even that."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)
        _, procs = psutil.wait_procs(procs, timeout=5.0)
        if not procs:
            return
    log.error("processes survived SIGKILL: %s", [p.pid for p in procs])


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _exit_status(pid: int) -> int | None:
    """Exit status of our child `pid` if it has exited, without reaping it (WNOWAIT)."""
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    if info is None:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):  # missing, or being written
        return None


# --- signals --------------------------------------------------------------------------------


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Handle SIGTERM as Ctrl-C while a server is up, so that `finally` stops it.

    KeyboardInterrupt, not SystemExit: pytest records a SystemExit inside a test as that
    test's failure and goes on with the next one, so `kill` would not stop a benchmark."""
    if not _in_main_thread():  # signal handlers can only be set there
        yield
        return

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM during clean-up, so that a second Ctrl-C cannot orphan the server."""
    if not _in_main_thread():
        yield
        return
    held: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda s, _f: held.append(s))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    # Reached only when no exception is already on its way out.
    if signal.SIGINT in held:
        raise KeyboardInterrupt
    if held:
        raise SystemExit(128 + signal.SIGTERM)


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


def _check_answers(address: str) -> None:
    """Raise unless a Covalent server answers at `address` (a cheap, read-only request)."""
    response = requests.get(
        f"{address}/api/v2/dispatches",
        params={"count": 1, "status_only": True},
        timeout=_HTTP_TIMEOUT_S,
    )
    response.raise_for_status()
    if "dispatches" not in response.json():  # ValueError too if the body is not JSON
        raise ValueError(f"{address} answers, but not as a Covalent server")


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
