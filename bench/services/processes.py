"""Processes of the services we start: trees, kills, signals, listeners, and a watchdog.

Shared by bench.services.server and bench.services.cluster. The watchdog is what makes a
hard death of the benchmark (kill -9, OOM killer) leave nothing behind: every service
context starts one, a tiny Python process in its own session that holds the read end of a
pipe from us. When we die, the pipe closes (or its parent pid changes) and it kills the
sessions and process trees it was told about, then removes the state directories. On a
normal exit we stop the services ourselves and then dismiss it.

This module runs as that watchdog too (`python -I processes.py --parent PID`), so at module
level it imports nothing but the standard library and psutil. Linux only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = [
    "LOOPBACK_HOSTS",
    "Listener",
    "Watchdog",
    "alive",
    "beyond_loopback",
    "exit_status",
    "group_processes",
    "kill",
    "listeners",
    "loopback_no_proxy",
    "process_tree",
    "read_pid",
    "signals_deferred",
    "sigterm_raises",
    "watchdog",
]

# What NO_PROXY must name so that no proxy variable ever routes our loopback traffic.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_LOOPBACK_IPS = ("127.0.0.1", "::1", "::ffff:127.0.0.1")
_WATCHDOG_POLL_S = 1.0  # backstop for a parent death the pipe does not show (a forked holder)
_WATCHDOG_EXIT_S = 5.0

log = logging.getLogger(__name__)


# --- proxies --------------------------------------------------------------------------------


def loopback_no_proxy(env: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Add the loopback hosts to NO_PROXY and no_proxy in `env` (kept: what is there already).

    requests, aiohttp (trust_env) and urllib read these on every request, so this may run at
    any time before the first loopback request. Returns `env`."""
    for var in ("NO_PROXY", "no_proxy"):
        have = [h.strip() for h in env.get(var, "").split(",") if h.strip()]
        env[var] = ",".join([*have, *(h for h in LOOPBACK_HOSTS if h not in have)])
    return env


# --- process trees --------------------------------------------------------------------------


def process_tree(pid: int) -> list[psutil.Process]:
    """`pid` and all its descendants (empty if it is gone)."""
    try:
        top = psutil.Process(pid)
        return [top, *top.children(recursive=True)]
    except psutil.Error:
        return []


def group_processes(top_pid: int | None, pgid: int) -> list[psutil.Process]:
    """The tree of `top_pid`, plus strays (e.g. orphaned Dask workers) left in process group
    `pgid`, leaving out the group leader itself: it is our unreaped child, and psutil would
    reap it when waiting."""
    found = {p.pid: p for p in process_tree(top_pid)} if top_pid is not None else {}
    for proc in psutil.process_iter():
        if proc.pid in found or proc.pid == pgid:
            continue
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(proc.pid) == pgid:
                found[proc.pid] = proc
    return list(found.values())


def kill(procs: list[psutil.Process]) -> None:
    """SIGTERM, then SIGKILL what is left; log anything that survives even that."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)
        _, procs = psutil.wait_procs(procs, timeout=5.0)
        if not procs:
            return
    log.error("processes survived SIGKILL: %s", [p.pid for p in procs])


def alive(proc: int | psutil.Process) -> bool:
    """Running (a zombie is not: it has exited and waits only to be reaped)."""
    try:
        if isinstance(proc, int):
            proc = psutil.Process(proc)
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def exit_status(pid: int) -> int | None:
    """Exit status of our child `pid` if it has exited, without reaping it (WNOWAIT);
    -N if a signal N ended it. None while it runs. ChildProcessError if not our child."""
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    if info is None:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):  # missing, or being written
        return None


# --- listeners ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listener:
    """A socket that accepts connections (TCP LISTEN) or datagrams (unconnected UDP)."""

    pid: int
    name: str
    kind: str  # "tcp" or "udp"
    ip: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{self.kind} {host}:{self.port} (pid {self.pid} {self.name})"


def listeners(procs: Iterable[psutil.Process]) -> list[Listener]:
    """Every listening socket of `procs` (processes that are gone are skipped)."""
    found = []
    for proc in procs:
        try:
            conns = proc.net_connections(kind="inet")
            name = proc.name()
        except psutil.Error:
            continue
        for conn in conns:
            tcp = conn.type == socket.SOCK_STREAM
            if (conn.status == psutil.CONN_LISTEN) if tcp else not conn.raddr:
                found.append(Listener(proc.pid, name, "tcp" if tcp else "udp", conn.laddr.ip,
                                      conn.laddr.port))
    return found


def beyond_loopback(found: Iterable[Listener]) -> list[Listener]:
    """Those bound to anything but a loopback address (0.0.0.0, ::, a real interface)."""
    return [item for item in found if item.ip not in _LOOPBACK_IPS]


# --- signals --------------------------------------------------------------------------------


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


# What ends a session as Ctrl-C does: `kill`, and the terminal or ssh session closing.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Handle SIGTERM and SIGHUP as Ctrl-C while a service is up, so that `finally` stops it.

    KeyboardInterrupt, not SystemExit: pytest records a SystemExit inside a test as that
    test's failure and goes on with the next one, so `kill` would not stop a benchmark."""
    if not _in_main_thread():  # signal handlers can only be set there
        yield
        return

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum} ({signal.Signals(signum).name})")

    previous = {sig: signal.signal(sig, _raise) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


@contextlib.contextmanager
def signals_deferred(reraise: bool = True) -> Iterator[list[int]]:
    """Hold SIGINT, SIGTERM and SIGHUP during clean-up, so that a second Ctrl-C cannot orphan
    a service or lose a record; yields the list of signals held. With `reraise`, a held
    signal is raised once the block is done (never over an exception on its way out)."""
    held: list[int] = []
    if not _in_main_thread():
        yield held
        return
    previous = {
        sig: signal.signal(sig, lambda s, _f: held.append(s))
        for sig in (signal.SIGINT, *STOP_SIGNALS)
    }
    try:
        yield held
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    # Reached only when no exception is already on its way out.
    if not reraise:
        return
    if signal.SIGINT in held:
        raise KeyboardInterrupt
    if held:
        raise SystemExit(128 + held[0])


# --- the watchdog: our side -----------------------------------------------------------------


class Watchdog:
    """Our handle on a watchdog process: tell it what to clean up should we die."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        self._lock = threading.Lock()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def session(self, sid: int) -> None:
        """Kill every process of session `sid` (one we started with start_new_session=True,
        so `sid` is its leader's pid) that was created since its leader."""
        try:
            since = psutil.Process(sid).create_time()
        except psutil.Error:  # the leader exited already; its session may live on
            since = time.time() - 60.0
        self._send({"session": sid, "since": since})

    def tree(self, pid: int) -> None:
        """Kill `pid` and its descendants (for processes outside the registered sessions)."""
        try:
            since = psutil.Process(pid).create_time()
        except psutil.Error:
            return
        self._send({"tree": pid, "since": since})

    def remove(self, path: str | os.PathLike[str]) -> None:
        """Remove this directory after the kill."""
        self._send({"remove": str(path)})

    def dismiss(self) -> None:
        """We cleaned up ourselves: the watchdog exits without touching anything."""
        self._send({"stop": True})
        with contextlib.suppress(OSError):
            self._proc.stdin.close()  # type: ignore[union-attr]
        try:
            self._proc.wait(timeout=_WATCHDOG_EXIT_S)
        except subprocess.TimeoutExpired:
            log.warning("watchdog %d did not exit when dismissed; killing it", self.pid)
            self._proc.kill()
            self._proc.wait()

    def _send(self, message: dict[str, object]) -> None:
        line = (json.dumps(message) + "\n").encode()
        with self._lock:
            try:
                self._proc.stdin.write(line)  # type: ignore[union-attr]
                self._proc.stdin.flush()  # type: ignore[union-attr]
            except (OSError, ValueError):  # it died (it never should), or dismissed
                log.warning("watchdog %d is gone: %s is not watched", self.pid, message)


@contextlib.contextmanager
def watchdog(keep_dirs: bool = False) -> Iterator[Watchdog]:
    """Start a watchdog for this process, yield it, and dismiss it on the way out.

    `keep_dirs`: on our death it kills, but leaves the registered directories in place."""
    cmd = [sys.executable, "-I", str(Path(__file__).resolve()), f"--parent={os.getpid()}"]
    if keep_dirs:
        cmd.append("--keep-dirs")
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd="/",
        # Its own session: a Ctrl-C or a kill of our process group does not take it along.
        start_new_session=True,
    )
    dog = Watchdog(proc)
    try:
        yield dog
    finally:
        dog.dismiss()


# --- the watchdog: its side -----------------------------------------------------------------


def _watch(argv: list[str]) -> int:
    parent = int(next(a for a in argv if a.startswith("--parent=")).split("=", 1)[1])
    keep_dirs = "--keep-dirs" in argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the benchmark
    stop = {"now": False}

    def _on_signal(signum: int, frame: object) -> None:  # SIGTERM/SIGHUP: clean up now
        stop["now"] = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)

    fd = sys.stdin.fileno()
    os.set_blocking(fd, False)
    sessions: dict[int, float] = {}
    trees: dict[int, float] = {}
    dirs: list[str] = []
    buffer = b""
    while True:
        eof = False
        with contextlib.suppress(InterruptedError):
            select.select([fd], [], [], _WATCHDOG_POLL_S)
        while True:  # drain what is there
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                eof = True
                break
            buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                message = json.loads(line)
                if message.get("stop"):
                    return 0  # dismissed: our parent cleaned up itself
                if "session" in message:
                    sessions[int(message["session"])] = float(message["since"])
                if "tree" in message:
                    trees[int(message["tree"])] = float(message["since"])
                if "remove" in message:
                    dirs.append(str(message["remove"]))
        if eof or stop["now"] or os.getppid() != parent:
            break
    _clean_up(sessions, trees, [] if keep_dirs else dirs)
    return 0


def _members(sessions: dict[int, float], trees: dict[int, float]) -> list[psutil.Process]:
    """Live processes of the registered sessions and trees (created since they were)."""
    me = os.getpid()
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            sid = os.getsid(proc.pid)
            # Clock-tick resolution; a process older than its session is a reused pid.
            if sid in sessions and proc.create_time() >= sessions[sid] - 0.05:
                found[proc.pid] = proc
    for pid, since in trees.items():
        with contextlib.suppress(psutil.Error):
            top = psutil.Process(pid)
            if top.create_time() <= since + 0.05:
                found.update((p.pid, p) for p in [top, *top.children(recursive=True)])
    found.pop(me, None)
    return [p for p in found.values() if alive(p)]


def _clean_up(sessions: dict[int, float], trees: dict[int, float], dirs: list[str]) -> None:
    for _ in range(20):  # again, for children spawned while we were killing
        procs = _members(sessions, trees)
        if not procs:
            break
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.kill()  # psutil checks that the pid was not reused
        # Orphans are reaped by init; zombies count as gone.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(alive(p) for p in procs):
            time.sleep(0.05)
    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(_watch(sys.argv[1:]))
