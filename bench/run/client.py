"""The client side of Covalent runs, in another interpreter: a client must match its
server's Covalent release, so a run against another environment's server
(bench.services.environments) is dispatched, awaited and downloaded by that environment's
interpreter.

`python -m bench.run.client` (the child) answers JSON lines on stdin with JSON lines on
stdout. It first writes {"ready": true, "covalent": VERSION, "python": ..., "pid": ...}; then,
for each request

    {"workload": "chain" or "MODULE:ATTR", "inputs": null, "digest": null, "params": {...},
     "executor": "local", "address": "http://127.0.0.1:P", "probe_dir": "...",
     "concurrency": 1, "timeout_s": 600, "probe": true,
     "dispatch_to": null or {"address": "tcp://...", "cache_dir": "..."}}

it runs bench.run.runner.measure_covalent_batch (no server meter: the server's processes
belong to the parent) and answers one line: {"ok": true, "records": [...]}, or {"ok": false,
"kind": K, ...} with K "server_unavailable" (reason and records: the parent raises
ServerUnavailableError with them), "interrupted" (records: the runs of a batch that a SIGINT
stopped; their dispatches were cancelled) or "error" (error, traceback). A record is a
bench.records.RunRecord's fields, its outcome as {"digest", "metrics"}. Anything else the
child prints goes to its stderr: stdout carries nothing but answers.

The parent side is RemoteClient(python, env): a context manager that starts the child,
sends one request per measure_covalent_batch call, waits for its answer within a time
limit and rebuilds the RunRecords. The child gets a Covalent config directory of its own
(a client of another release must not rewrite the user's covalent.conf), exits at the end
of its input or when its parent dies, and its stderr is kept in a log whose tail any error
quotes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

__all__ = ["RemoteClient", "RemoteClientError", "main"]

STARTUP_TIMEOUT_S = 180.0  # the child imports covalent (and the workload) before it is ready
REQUEST_MARGIN_S = 300.0  # beyond the dispatch timeout: submitting, downloading, importing
STOP_TIMEOUT_S = 15.0
INTERRUPT_GRACE_S = 20.0  # for the child to cancel its dispatches and send their records
_TAIL_LINES = 30
# The client's own Covalent state, inside the RemoteClient's temporary directory.
_CLIENT_DIRS = {
    "COVALENT_CONFIG_DIR": "config",
    "COVALENT_CACHE_DIR": "cache",
    "COVALENT_DATA_DIR": "data",
    "COVALENT_LOGDIR": "logs",
    "COVALENT_RESULTS_DIR": "results",
    "COVALENT_DISPATCH_CACHE_DIR": "dispatches",
}


class RemoteClientError(RuntimeError):
    """The client process failed, died, or did not answer in time."""

    def __init__(self, message: str, error_type: str = "") -> None:
        super().__init__(message)
        self.error_type = error_type  # the child's exception type, for an "error" answer


# --- the child ------------------------------------------------------------------------------


def _record_to_json(record: Any) -> dict[str, Any]:
    out = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    outcome = record.outcome
    out["outcome"] = (None if outcome is None
                      else {"digest": outcome.digest, "metrics": dict(outcome.metrics)})
    return out


class _Child:
    """Serves requests; keeps the workloads it made (a user's module is imported once)."""

    def __init__(self) -> None:
        self.workloads: dict[tuple, Any] = {}

    def workload(self, request: Mapping[str, Any]) -> Any:
        from bench.workloads import workload_for

        key = (request["workload"], request.get("inputs"), request.get("digest"))
        if key not in self.workloads:
            self.workloads[key] = workload_for(*key)
        return self.workloads[key]

    def serve(self, request: Mapping[str, Any]) -> dict[str, Any]:
        from bench.run.runner import ServerUnavailableError, measure_covalent_batch
        from bench.services.cluster import DaskTarget
        from bench.services.server import CovalentServer

        try:
            workload = self.workload(request)
            params = workload.check(request["params"])  # the defaults left out of the JSON
            address = request["address"]
            # Asked when a dispatch or a status poll fails: does the server still answer?
            # (Its processes are the parent's to watch; here only HTTP tells.)
            server = CovalentServer(address=address, port=urlsplit(address).port or 0,
                                    owned=False)
            target = request.get("dispatch_to")
            records = measure_covalent_batch(
                workload, params, executor=request["executor"], address=address,
                probe_dir=request["probe_dir"], concurrency=int(request.get("concurrency", 1)),
                timeout_s=float(request.get("timeout_s", 3600.0)),
                dispatch_to=DaskTarget(**target) if target else None,
                health=server.check_alive, probe=bool(request.get("probe", True)),
            )
            return {"ok": True, "records": [_record_to_json(r) for r in records]}
        except ServerUnavailableError as exc:
            return {"ok": False, "kind": "server_unavailable", "reason": str(exc),
                    "records": [_record_to_json(r) for r in exc.records]}
        except Exception as exc:
            return {"ok": False, "kind": "error", "error_type": type(exc).__name__,
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc()[-4000:]}
        except KeyboardInterrupt as exc:
            records = getattr(exc, "bench_records", [])
            return {"ok": False, "kind": "interrupted",
                    "records": [_record_to_json(r) for r in records]}


def _exit_with_parent(parent: int) -> None:
    """End this process once the parent is gone (kill -9 of the harness)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(3)


def main() -> int:
    # Answers go to the real stdout only; whatever else prints goes to stderr.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C
    # Signals come from the parent only (own session); a parent started in the background
    # hands down SIGINT ignored, and the interrupt it forwards would be lost.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def answer(message: Mapping[str, Any]) -> None:
        answers.write(json.dumps(message, default=str) + "\n")

    try:
        import importlib.metadata

        from bench.services.server import client_dispatch_cache

        version = importlib.metadata.version("covalent")
        with _dispatch_cache(client_dispatch_cache):
            answer({"ready": True, "covalent": version, "python": sys.executable,
                    "pid": os.getpid()})
            child = _Child()
            for line in sys.stdin:
                if not line.strip():
                    continue
                try:
                    request = json.loads(line)
                except ValueError as exc:
                    answer({"ok": False, "kind": "error", "error_type": "ValueError",
                            "error": f"not a JSON request: {exc}"})
                    continue
                answer(child.serve(request))
    except KeyboardInterrupt:  # between requests: nothing to report
        return 130
    return 0


@contextlib.contextmanager
def _dispatch_cache(client_dispatch_cache: Any) -> Any:
    """The client's dispatch manifests in a temporary directory, removed on exit, where
    this Covalent has the setting (see bench.services.server.client_dispatch_cache)."""
    from bench.adapters import current

    if not current().client_dispatch_cache_dir:
        yield None
        return
    with client_dispatch_cache() as path:
        yield path


# --- the parent -----------------------------------------------------------------------------


class RemoteClient:
    """Covalent runs measured by another interpreter (`python`), with `env` added to ours.

    Use as a context manager; measure_covalent_batch sends one batch and returns its
    records like bench.run.runner.measure_covalent_batch does."""

    def __init__(self, python: str, env: Mapping[str, str] | None = None,
                 request_timeout_s: float | None = None,
                 startup_timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        self.python = python
        self.env = dict(env or {})
        self.request_timeout_s = request_timeout_s
        self.startup_timeout_s = startup_timeout_s
        self.covalent_version: str | None = None
        self.proc: subprocess.Popen[str] | None = None
        self._root: Path | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: IO[bytes] | None = None
        self._lock = threading.Lock()

    # --- lifecycle

    def __enter__(self) -> RemoteClient:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def log_path(self) -> Path | None:
        """The child's stderr."""
        return None if self._root is None else self._root / "client.log"

    def start(self) -> None:
        self._root = Path(tempfile.mkdtemp(prefix="covalent-bench-client-"))
        env = {**os.environ, **self.env}
        for var, sub in _CLIENT_DIRS.items():
            if var not in self.env:
                (self._root / sub).mkdir()
                env[var] = str(self._root / sub)
        env.pop("PYTHONHOME", None)
        env["PYTHONUNBUFFERED"] = "1"
        assert self.log_path is not None
        self._stderr = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        try:
            self.proc = subprocess.Popen(
                [self.python, "-m", "bench.run.client"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env,
                text=True, bufsize=1, start_new_session=True,  # signals reach it from us only
            )
        except OSError as exc:
            self.close()
            raise RemoteClientError(f"cannot start a client with {self.python}: {exc}") from exc
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()
        try:
            hello = self._answer(self.startup_timeout_s, "start up")
        except BaseException:
            self.close()
            raise
        if not hello.get("ready"):
            self.close()
            raise RemoteClientError(f"the client in {self.python} started with {hello!r}")
        self.covalent_version = hello.get("covalent")

    def close(self) -> None:
        """End the child (its input closed, then SIGTERM, then SIGKILL) and remove its state."""
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # type: ignore[union-attr]
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._signal(proc, signal.SIGKILL)
                    proc.wait()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    # --- requests

    def measure_covalent_batch(
        self,
        workload: Any,
        params: Mapping[str, Any],
        *,
        executor: str,
        address: str,
        probe_dir: str | os.PathLike[str],
        server: Any = None,
        concurrency: int = 1,
        timeout_s: float = 3600.0,
        dispatch_to: Any = None,
        health: Callable[[], str | None] | None = None,
        probe: bool = True,
        stop: Callable[[], str] | None = None,
    ) -> list[Any]:
        """bench.run.runner.measure_covalent_batch, the same keywords, its dispatch loop run
        by the child. `workload` must be loadable there (`workload.ref`: a built-in name or
        MODULE:ATTR). The child watches the server over HTTP; here, `server` is metered
        (server_cpu_s, worker restarts), `health` is asked when runs came back errored,
        and `stop` stops the tasks of runs that the child cancelled at `timeout_s`.
        Raises ServerUnavailableError (with the records) if the server went away,
        RemoteClientError if the child failed."""
        from bench.records import ERROR, TIMEOUT
        from bench.run.runner import CpuMeter, ServerUnavailableError, attach_records, meter_batch

        name, inputs, digest = workload.ref
        if name is None:
            raise RemoteClientError(
                f"workload {workload.name!r} was defined in this process (a notebook cell, "
                f"say): a Covalent environment's client cannot import it; put it in a module")
        request = {"workload": name, "inputs": inputs, "digest": digest,
                   "params": _sendable(workload, params), "executor": executor,
                   "address": address,
                   "probe_dir": str(probe_dir), "concurrency": concurrency,
                   "timeout_s": timeout_s, "probe": probe,
                   "dispatch_to": dataclasses.asdict(dispatch_to) if dispatch_to else None}
        limit = (self.request_timeout_s if self.request_timeout_s is not None
                 else timeout_s + REQUEST_MARGIN_S * max(1, concurrency))
        meter = CpuMeter(server.processes()) if server is not None else None
        with self._lock:
            self._send(request)
            try:
                reply = self._answer(limit, f"measure {name} on {executor}")
            except RemoteClientError:
                raise
            except BaseException as exc:  # Ctrl-C, SIGTERM: the child cancels, sends rows
                attach_records(exc, self._interrupt())
                raise
        records = [_record_from_json(r) for r in reply.get("records", [])]
        if meter is not None:
            meter_batch(records, meter, server)
        if stop is not None and any(r.status == TIMEOUT for r in records):
            stopped = stop()  # the child cancelled them; Covalent leaves their tasks running
            for record in records:
                if record.status == TIMEOUT and stopped:
                    record.error = f"{record.error}; {stopped}"
        if reply.get("ok"):
            reason = (health() if health is not None
                      and any(r.status == ERROR for r in records) else None)
            if reason:
                raise ServerUnavailableError(reason, records)
            return records
        kind = reply.get("kind")
        if kind == "server_unavailable":
            raise ServerUnavailableError(reply.get("reason", "server unavailable"), records)
        if kind == "interrupted":  # a signal that reached the child only
            exc = KeyboardInterrupt()
            attach_records(exc, records)
            raise exc
        detail = (reply.get("traceback") or "").rstrip()
        raise RemoteClientError(
            f"the client in {self.python} failed: {reply.get('error', reply)!s}"
            + (f"\n{detail}" if detail else ""), reply.get("error_type", ""))

    def _send(self, request: Mapping[str, Any]) -> None:
        proc = self._running()
        try:
            proc.stdin.write(json.dumps(request) + "\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
        except (BrokenPipeError, OSError) as exc:
            raise self._died("taking a request") from exc

    def _answer(self, timeout: float, what: str) -> dict[str, Any]:
        """The child's next answer; RemoteClientError if it dies or exceeds `timeout`."""
        deadline = time.monotonic() + timeout
        while True:  # in slices: an interrupt is noticed within a second, however it comes
            try:
                line = self._lines.get(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
                break
            except queue.Empty:
                if time.monotonic() < deadline:
                    continue
                proc = self.proc
                self.proc = None
                if proc is not None:
                    self._signal(proc, signal.SIGKILL)
                    proc.wait()
                raise RemoteClientError(
                    f"the client in {self.python} did not {what} within {timeout:g} s; it was "
                    f"killed{self._tail()}") from None
        if line is None:
            raise self._died(f"trying to {what}")
        try:
            return json.loads(line)
        except ValueError:
            raise RemoteClientError(
                f"the client in {self.python} answered a line that is not JSON: "
                f"{line[:300]!r}{self._tail()}") from None

    def _interrupt(self) -> list[Any]:
        """SIGINT to the child, then its records of the interrupted batch (if it answers)."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return []
        self._signal(proc, signal.SIGINT)
        try:
            line = self._lines.get(timeout=INTERRUPT_GRACE_S)
            reply = json.loads(line) if line else {}
        except (queue.Empty, ValueError):
            return []
        return [_record_from_json(r) for r in reply.get("records", [])]

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)

    def _running(self) -> subprocess.Popen[str]:
        if self.proc is None:
            raise RemoteClientError(f"the client in {self.python} is not running")
        if self.proc.poll() is not None:
            raise self._died("taking a request")
        return self.proc

    def _died(self, when: str) -> RemoteClientError:
        proc = self.proc
        status = None
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                status = proc.wait(timeout=5)
        self.proc = None
        how = f"exited with {status}" if status is not None else "closed its output"
        return RemoteClientError(f"the client in {self.python} {how} while {when}{self._tail()}")

    def _tail(self) -> str:
        path = self.log_path
        if path is None:
            return ""
        if self._stderr is not None:
            self._stderr.flush()
        try:
            lines = path.read_text(errors="replace").splitlines()[-_TAIL_LINES:]
        except OSError:
            return ""
        return f"\n--- last lines of its stderr ({path}) ---\n" + "\n".join(lines) if lines else ""

    @staticmethod
    def _signal(proc: subprocess.Popen[str], signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signum)  # its session: anything it started too


def _record_from_json(data: Mapping[str, Any]) -> Any:
    from bench.records import RunRecord
    from bench.workloads.base import Outcome

    names = {f.name for f in dataclasses.fields(RunRecord)}
    fields = {k: v for k, v in data.items() if k in names}
    outcome = fields.get("outcome")
    fields["outcome"] = None if outcome is None else Outcome(outcome["digest"],
                                                             dict(outcome.get("metrics") or {}))
    return RunRecord(**fields)


if __name__ == "__main__":
    sys.exit(main())


def _sendable(workload: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters as JSON can carry them to an environment's client: a default that JSON
    cannot hold (the tutorial's `loss_fn=F.nll_loss`) is left out, for that client's own
    copy of the workload to fill in; any other such value is an error that says so."""
    sent = {}
    for key, value in params.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            defaults = workload.defaults()
            if key in defaults and defaults[key] is value:
                continue
            raise RemoteClientError(
                f"parameter {key}={value!r} cannot be sent to a Covalent environment's "
                f"client (not JSON): give it as its default, or make it a value (a number, "
                f"a string, a list) the workflow turns into the object") from None
        sent[key] = value
    return sent

