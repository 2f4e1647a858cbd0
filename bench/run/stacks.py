"""Stack samples of every process of a run, placed on the run's time axis (py-spy).

`StackSampler` starts one py-spy recorder per root process of a run (`start()`, before the
run) and stops them when it ends (`stop()`); `samples(t0)` then gives every sample with its
role, pid, native thread id, seconds since the run's start (`t0`: the time.time() the
phases are measured from) and frames root to leaf. The command line, per root PID:

    py-spy record --pid PID --idle --nonblocking --subprocesses --threads --rate 50
                  --format chrometrace --output FILE        (environment: RUST_LOG=info)

* `--idle`: waiting threads are sampled too: waiting on the server IS orchestration.
* `--nonblocking`: the target is never paused (a rare torn stack instead of a stall;
  blocking reads cost 1.5x the CPU here).
* `--subprocesses`: children that start mid-run (the local executor's pool, Dask's worker
  processes) are followed. py-spy scans for them every 100 ms and then attaches, so a new
  child's first ~0.1-0.2 s go unsampled (a persistent pool's workers are found once).
* `--threads`: each stack gets a root frame `thread (OS_TID): NAME`. The chrome trace's own
  `tid` is a pthread id, which a forked child shares with its parent's forking thread.
* chrometrace is py-spy's only format with time: B/E events, microseconds since the
  recorder started. py-spy keeps one "previous stack" per pthread id and merges identical
  consecutive stacks, so the file is replayed the same way (`segments_from_chrometrace`) and
  each slice gets duration x rate samples, spread evenly over it (time-weighted: py-spy
  samples at exponential intervals of mean 1/rate, in bursts when it fell behind).
  speedscope and trace.json files are written from these samples (bench.run.trace).
* `RUST_LOG=info`: py-spy logs, with nanosecond UTC timestamps, its configuration just
  before its clock starts (the file's time origin) and "stopped sampling pid N because the
  process exited" (the file would keep a dead process's last stack open to the end).

Rate, 50 Hz: py-spy reads every thread of every process at each sample; here that costs
about 1 % of a core per sampled thread at 100 Hz (a 31-thread process: 17 % of a core at
50 Hz, 30 % at 100, 57 % at 200, 100 % at 500). A Covalent 0.240 server with a 2-worker Dask
cluster and the local pool has ~30 threads, the client a few more: ~0.5 core of a 2-core
machine at 100 Hz, half that at 50 Hz. 50 Hz still gives >= 50 samples per thread in a
1 s run and 20 ms resolution against phases of 0.1 s and more; a 60 s run gives ~3000
samples per thread (~10^5 per run), which parse in seconds. Measured on a busy-looping
subprocess (medians of 5 alternating runs, loaded 2-core machine): wall +1.4 % at 50 Hz,
+6.6 % at 100 Hz, both within the run-to-run noise; py-spy used 2.9 % / 4.6 % of a core.

Alignment, measured with a subprocess switching functions at known times (tests/
test_stacks.py bounds it): the origin from py-spy's log is within 0.2 ms of its clock's
start (over 240 known transitions none was seen more than 0.1 ms before it happened). What
remains is sampling: a change is seen 0-1/rate later plus py-spy's scheduling lateness; at
50 Hz median 13 ms, p95 53 ms, max 80 ms (100 Hz: 6 / 24 / 42-52 ms) on the loaded machine.
Without the log line the origin falls back to the time py-spy was spawned (2-5 ms early).

Exited threads: the chrome trace keeps a dead thread's last stack open too. A watcher
thread lists /proc/PID/task of the processes in the trees every 50 ms (new children found
with psutil every 0.5 s); a thread's last slice ends where it was seen gone (<= 25 ms).

Roles: a root's samples take the role it was given (`client`, `server`, `worker`). A
descendant is a `worker` if it ran a task: its pid is in `task_pids` (the in_task probes'
pids), or its stacks show a task runner (the local executor's pool:
concurrent.futures.process._process_worker; Dask: distributed.nanny's WorkerProcess._run,
apply_function; the harness's probe wrapper); otherwise its root's role (on a real
server: the Dask cluster process and multiprocessing's resource tracker are `server`; the
client's watchdog is `client`). A process under two roots is kept once, from the nearest.

Attaching fails without ptrace permission (root, CAP_SYS_PTRACE, kernel.yama.ptrace_scope),
when py-spy is not installed or when the PID is not (yet) a Python interpreter: the sampler
then says why in one line (`unavailable`) and the run goes on unprofiled.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

DEFAULT_RATE = 50  # see the module docstring: cost vs resolution
CLIENT, SERVER, WORKER = "client", "server", "worker"
ROLES = (CLIENT, SERVER, WORKER)
READY_TIMEOUT_S = 15.0  # py-spy retries a not-yet-Python target for about 2 s itself
STOP_TIMEOUT_S = 30.0  # writing the trace of a long run with many threads takes a moment
WATCH_INTERVAL_S = 0.05  # thread lists of known processes (cheap: a directory listing)
DISCOVER_INTERVAL_S = 0.5  # new children (psutil reads every /proc/PID/stat: ~4 ms here)
WATCH_THREAD_NAME = "bench-stacks-watch"  # our own thread in the client: left out

# A descendant that runs one of these runs tasks: a worker (see the module docstring).
WORKER_SIGNATURES = (
    ("concurrent/futures/process.py", "_process_worker"),
    ("distributed/nanny.py", "WorkerProcess._run"),
    ("distributed/worker.py", "apply_function"),
    ("bench/run/probes.py", "task_probe.<locals>.wrap.<locals>.probed"),
)


class Frame(NamedTuple):
    """One Python frame: its file (full path), function (qualified name) and current line."""

    file: str
    function: str
    line: int


@dataclass(frozen=True, slots=True)
class Sample:
    """One stack sample. `time_s` is seconds from the run's start; frames are root to leaf.

    `idle` is None: py-spy knows whether a thread was idle but none of its file formats
    carries it (--idle only decides whether idle threads are sampled at all)."""

    role: str
    pid: int
    tid: int  # the native thread id (what /proc and psutil show)
    time_s: float
    frames: tuple[Frame, ...]
    idle: bool | None = None
    thread: str = ""  # the Python thread's name


@dataclass
class ProcessInfo:
    """A process that was sampled: its role, command line and parent (as py-spy saw them)."""

    pid: int
    role: str
    cmdline: str
    parent: int | None
    root: int


@dataclass
class _Recorder:
    role: str
    root: int
    trace_path: Path
    log_path: Path
    out_path: Path
    spawned_wall: float = 0.0
    proc: subprocess.Popen | None = None
    problem: str = ""
    cpu_s: float | None = None  # py-spy's own CPU time (its cost)
    origin_wall: float | None = None  # wall-clock time of the trace's ts = 0
    origin_source: str = ""  # "py-spy log" | "spawn time"


@dataclass
class _Segment:
    """One merged py-spy slice of one thread: a stack held from `start` to `end` (wall)."""

    pid: int
    tid: int
    thread: str
    start: float
    end: float
    frames: tuple[Frame, ...]
    chain: tuple[tuple[int, str], ...]  # (pid, cmdline) from the root process down to pid
    root: int = 0


@dataclass
class _Watch:
    """What the watcher saw: when each process and thread was last seen alive, wall clock."""

    proc_seen: dict[int, tuple[float, float]] = field(default_factory=dict)  # first, last
    proc_gone: dict[int, float] = field(default_factory=dict)
    thread_seen: dict[tuple[int, int], tuple[float, float]] = field(default_factory=dict)
    thread_gone: dict[tuple[int, int], float] = field(default_factory=dict)


def find_pyspy() -> str | None:
    """py-spy next to this interpreter (a venv's bin), else on PATH."""
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else shutil.which("py-spy")


class StackSampler:
    """py-spy around one run: `start()` before it (blocks until attached), `stop()` after.

    `roles` maps a role to the PIDs of its root processes, e.g.
    `{"client": os.getpid(), "server": server.main_pid, "worker": [pid, ...]}`. Files go to
    `out_dir`: per root `pyspy-<role>-<pid>.chrometrace.json` and its `.log`. Never raises
    for a failed attach: `unavailable` says why in one line ("" when every root attached);
    the roots that did attach are still sampled."""

    def __init__(self, roles: Mapping[str, int | Iterable[int]], out_dir: str | os.PathLike,
                 rate: int = DEFAULT_RATE, pyspy: str | None = None,
                 ready_timeout_s: float = READY_TIMEOUT_S) -> None:
        self.rate = int(rate)
        self.out_dir = Path(out_dir)
        self.pyspy = pyspy if pyspy is not None else find_pyspy()
        self.ready_timeout_s = ready_timeout_s
        self._recorders: list[_Recorder] = []
        for role, pids in roles.items():
            if role not in ROLES:
                raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
            for pid in [pids] if isinstance(pids, int) else list(pids):
                stem = f"pyspy-{role}-{pid}"
                self._recorders.append(_Recorder(
                    role, int(pid), self.out_dir / f"{stem}.chrometrace.json",
                    self.out_dir / f"{stem}.log", self.out_dir / f"{stem}.out"))
        self._watch = _Watch()
        self._stop_watch = threading.Event()
        self._watcher: threading.Thread | None = None
        self._segments: list[_Segment] | None = None
        self.processes: dict[int, ProcessInfo] = {}
        self.started_wall: float | None = None
        self.stopped_wall: float | None = None

    # -- the run's side ------------------------------------------------------------------

    def __enter__(self) -> StackSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def unavailable(self) -> str:
        """Why sampling failed, one line per failed root joined by '; ' ("" if none)."""
        return "; ".join(f"{r.role} {r.root}: {r.problem}" for r in self._recorders
                         if r.problem)

    @property
    def problems(self) -> dict[int, str]:
        """Root PID -> why it could not be sampled."""
        return {r.root: r.problem for r in self._recorders if r.problem}

    @property
    def files(self) -> dict[int, Path]:
        """Root PID -> py-spy's raw chrome trace of its process tree (after `stop`)."""
        return {r.root: r.trace_path for r in self._recorders if r.trace_path.exists()}

    @property
    def pyspy_cpu_s(self) -> float:
        """CPU seconds the py-spy recorders used (their cost to the machine)."""
        return sum(r.cpu_s or 0.0 for r in self._recorders)

    def start(self) -> None:
        """Start a recorder per root and wait until each has attached or failed."""
        self.started_wall = time.time()
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            problem = "" if self.pyspy else "py-spy not found (pip install py-spy)"
        except OSError as exc:
            problem = f"cannot write {self.out_dir}: {exc.strerror or exc}"
        if problem:
            for r in self._recorders:
                r.problem = problem
            return
        env = {**os.environ, "RUST_LOG": "info"}
        for r in self._recorders:
            if not _alive(r.root):
                r.problem = "no such process"
                continue
            cmd = [self.pyspy, "record", "--pid", str(r.root), "--idle", "--nonblocking",
                   "--subprocesses", "--threads", "--rate", str(self.rate),
                   "--format", "chrometrace", "--output", str(r.trace_path)]
            with open(r.out_path, "wb") as out, open(r.log_path, "wb") as log:
                r.spawned_wall = time.time()
                try:
                    # Its own session: a Ctrl-C at the terminal must not stop it before we do.
                    r.proc = subprocess.Popen(cmd, stdout=out, stderr=log, env=env,
                                              stdin=subprocess.DEVNULL, start_new_session=True)
                except OSError as exc:
                    r.problem = f"cannot run py-spy: {exc}"
        deadline = time.monotonic() + self.ready_timeout_s
        for r in self._recorders:
            if r.proc is not None:
                self._wait_ready(r, deadline)
        if any(r.proc is not None for r in self._recorders):
            self._watcher = threading.Thread(target=self._watch_loop, name=WATCH_THREAD_NAME,
                                             daemon=True)
            self._watcher.start()

    def stop(self) -> None:
        """Stop every recorder (SIGINT: py-spy writes its file on it) and read the files."""
        if self.stopped_wall is not None:
            return
        self.stopped_wall = time.time()
        for r in self._recorders:
            if r.proc is not None and not self._reap(r, wait=False):
                with contextlib.suppress(ProcessLookupError):
                    r.proc.send_signal(signal.SIGINT)
        for r in self._recorders:
            if r.proc is not None:
                self._reap(r)
        self._stop_watch.set()
        if self._watcher is not None:
            self._watcher.join(timeout=2)
        segments: list[_Segment] = []
        for r in self._recorders:
            if r.proc is None or r.problem:
                continue
            try:
                segments += self._read(r)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                r.problem = f"unreadable py-spy output {r.trace_path.name}: {exc}"
        self._segments = _nearest_root_only(segments, {r.root for r in self._recorders})

    def samples(self, t0: float, task_pids: Iterable[int] = ()) -> list[Sample]:
        """Every sample, time_s = wall time - t0 (t0: the run's start, time.time()).

        `task_pids`: processes known to have run tasks (the in_task phases' pids): workers."""
        if self._segments is None:
            raise RuntimeError("StackSampler.samples() before stop()")
        roles = {r.root: r.role for r in self._recorders}
        self.processes = _classify(self._segments, roles, set(task_pids))
        out: list[Sample] = []
        done: dict[tuple[int, int], float] = {}  # thread -> its samples so far, unrounded
        for seg in sorted(self._segments, key=lambda s: (s.pid, s.tid, s.start)):
            role = self.processes[seg.pid].role
            # Time-weighted: each slice gets its duration x rate samples, the fractions
            # carried over to the thread's next slice (py-spy samples at random intervals
            # and in bursts when it fell behind: counting its samples would not be time).
            before = done.get((seg.pid, seg.tid), 0.0)
            done[(seg.pid, seg.tid)] = after = before + (seg.end - seg.start) * self.rate
            n = round(after) - round(before)
            step = (seg.end - seg.start) / n if n else 0.0
            out += [Sample(role, seg.pid, seg.tid, seg.start + (k + 0.5) * step - t0,
                           seg.frames, None, seg.thread) for k in range(n)]
        out.sort(key=lambda s: s.time_s)
        return out

    # -- inside --------------------------------------------------------------------------

    def _wait_ready(self, r: _Recorder, deadline: float) -> None:
        """py-spy prints 'Sampling process ...' once attached; exits with the reason if not."""
        assert r.proc is not None
        while time.monotonic() < deadline:
            if b"Sampling process" in _read_bytes(r.out_path):
                return
            if self._reap(r, wait=False):
                r.problem = _failure_reason(_read_bytes(r.log_path), r.proc.returncode)
                r.proc = None
                return
            time.sleep(0.01)
        r.problem = f"py-spy did not attach within {self.ready_timeout_s:g} s"
        _kill(r.proc)
        self._reap(r)
        r.proc = None

    def _reap(self, r: _Recorder, wait: bool = True) -> bool:
        """Whether py-spy has exited (reaping it: its rusage is what sampling cost); with
        `wait`, wait for it and SIGKILL it if it hangs."""
        assert r.proc is not None
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while r.proc.returncode is None:
            try:
                pid, status, usage = os.wait4(r.proc.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere
                r.proc.returncode = r.proc.returncode if r.proc.returncode is not None else -1
                break
            if pid:
                r.proc.returncode = os.waitstatus_to_exitcode(status)
                r.cpu_s = usage.ru_utime + usage.ru_stime
                break
            if not wait:
                return False
            if time.monotonic() > deadline:
                r.problem = r.problem or f"py-spy did not stop within {STOP_TIMEOUT_S:g} s"
                _kill(r.proc)
                deadline = float("inf")
            time.sleep(0.01)
        return True

    def _read(self, r: _Recorder) -> list[_Segment]:
        log = _read_bytes(r.log_path).decode(errors="replace")
        origin = _log_origin(log)
        r.origin_wall, r.origin_source = ((origin, "py-spy log") if origin is not None
                                          else (r.spawned_wall, "spawn time"))
        if not r.trace_path.exists():
            raise ValueError("py-spy wrote no file")
        events = json.loads(r.trace_path.read_text() or "[]")
        exits = _log_exits(log)
        segments = segments_from_chrometrace(events, r.origin_wall)
        for seg in segments:
            seg.root = r.root
        _cap(segments, self._watch, exits)
        return [s for s in segments if s.thread != WATCH_THREAD_NAME and s.end > s.start]

    def _watch_loop(self) -> None:
        roots = [r.root for r in self._recorders if r.proc is not None]
        known: dict[int, set[int]] = {pid: set() for pid in roots}  # pid -> threads alive
        last_discover = 0.0
        w = self._watch
        while not self._stop_watch.is_set():
            now = time.time()
            if now - last_discover >= DISCOVER_INTERVAL_S:
                for pid in _descendants(roots) - set(known) - set(w.proc_gone):
                    known[pid] = set()
                last_discover = now
            for pid, before in list(known.items()):
                try:
                    alive = {int(t) for t in os.listdir(f"/proc/{pid}/task")}
                except (OSError, ValueError):
                    if pid in w.proc_seen:
                        w.proc_gone.setdefault(pid, now)
                    del known[pid]
                    continue
                w.proc_seen[pid] = (w.proc_seen.get(pid, (now,))[0], now)
                for tid in alive:
                    w.thread_seen[(pid, tid)] = (w.thread_seen.get((pid, tid), (now,))[0], now)
                for tid in before - alive:
                    w.thread_gone.setdefault((pid, tid), now)
                known[pid] = alive
            self._stop_watch.wait(WATCH_INTERVAL_S)


# -- py-spy's chrome trace -> segments --------------------------------------------------

_PROCESS = re.compile(r'^process (\d+):"(.*)"$', re.S)
_THREAD = re.compile(r"^thread \((\d+)\)(?:: (.*))?$", re.S)


def segments_from_chrometrace(events: Sequence[Mapping[str, Any]],
                              origin_wall: float) -> list[_Segment]:
    """Rebuild each thread's stack over time from py-spy's B/E events.

    py-spy keeps one "previous stack" per pthread id (not per process: a forked child's
    main thread has its parent's pthread id, and then their samples alternate on one key).
    So the events are replayed per key exactly as py-spy emitted them: each sample is a run
    of E events then B events at one ts, and the full stack after it (process frames,
    thread frame, Python frames) says which process and native thread it was. A stack then
    holds until that same thread's next sample; its last one until the file's end (capped
    later by `_cap`)."""
    stacks: dict[Any, list[Mapping[str, Any]]] = {}
    group: dict[Any, tuple[float, str]] = {}  # key -> (ts, last phase) of the open sample
    per_thread: dict[tuple[int, int], list[tuple[float, tuple]]] = {}
    end_ts = max((float(e["ts"]) for e in events), default=0.0)

    def close(key: Any) -> None:
        stack = stacks.get(key)
        if stack:  # an empty stack is py-spy's final close of the key
            ident, thread_name, chain, frames = _identify(stack, key)
            per_thread.setdefault(ident, []).append(
                (group[key][0], (thread_name, chain, frames)))

    for e in events:
        ph = e.get("ph")
        if ph not in ("B", "E"):
            continue
        key, ts = e["tid"], float(e["ts"])
        open_ts, last = group.get(key, (None, ""))
        if open_ts is not None and (ts != open_ts or (ph == "E" and last == "B")):
            close(key)
        stack = stacks.setdefault(key, [])
        if ph == "B":
            stack.append(e)
        elif stack:
            stack.pop()
        group[key] = (ts, ph)
    for key in list(group):
        close(key)

    out = []
    for (pid, tid), seen in per_thread.items():
        for i, (ts, (thread_name, chain, frames)) in enumerate(seen):
            nxt = seen[i + 1][0] if i + 1 < len(seen) else end_ts
            out.append(_Segment(pid, tid, thread_name, origin_wall + ts / 1e6,
                                origin_wall + nxt / 1e6, frames, chain))
    return out


def _identify(stack: Sequence[Mapping[str, Any]], key: Any
              ) -> tuple[tuple[int, int], str, tuple[tuple[int, str], ...], tuple[Frame, ...]]:
    """(pid, native tid), thread name, process chain and Python frames of a full stack."""
    chain: list[tuple[int, str]] = []
    tid, thread_name, frames = None, "", []
    for e in stack:
        name, args = e.get("name", ""), e.get("args") or {}
        if not args.get("filename") and not frames:
            if m := _PROCESS.match(name):
                chain.append((int(m.group(1)), m.group(2)))
                continue
            if tid is None and (m := _THREAD.match(name)):
                tid, thread_name = int(m.group(1)), m.group(2) or ""
                continue
        frames.append(Frame(args.get("filename") or "", name, int(args.get("line") or 0)))
    pid = chain[-1][0] if chain else int(stack[-1]["pid"])
    return (pid, tid if tid is not None else int(key)), thread_name, tuple(chain), tuple(frames)


def _cap(segments: list[_Segment], watch: _Watch, exits: Mapping[int, float]) -> None:
    """End each thread's last segment where the thread or its process was seen gone."""
    last: dict[tuple[int, int], _Segment] = {}
    for seg in segments:
        key = (seg.pid, seg.tid)
        if key not in last or seg.start > last[key].start:
            last[key] = seg
    for (pid, tid), seg in last.items():
        ends = [seg.end]
        if pid in exits:
            ends.append(exits[pid])
        if (pid, tid) in watch.thread_gone:
            ends.append((watch.thread_gone[(pid, tid)] + watch.thread_seen[(pid, tid)][1]) / 2)
        elif pid in watch.proc_gone and pid in watch.proc_seen:
            ends.append((watch.proc_gone[pid] + watch.proc_seen[pid][1]) / 2)
        elif (pid, tid) not in watch.thread_seen and pid in watch.proc_seen and (
                watch.proc_seen[pid][0] < seg.start
                and watch.proc_seen[pid][1] > seg.start + WATCH_INTERVAL_S):
            # Never seen though its process was looked at before and after: it was born and
            # gone between two looks.
            ends.append(seg.start + WATCH_INTERVAL_S / 2)
        seg.end = max(seg.start, min(ends))


def _nearest_root_only(segments: list[_Segment], roots: set[int]) -> list[_Segment]:
    """A process sampled under two roots is kept from the root nearest to it."""
    out = []
    for seg in segments:
        chain = [pid for pid, _ in seg.chain] or [seg.pid]
        nearer = [p for p in chain[chain.index(seg.root) + 1:] if p in roots] \
            if seg.root in chain else []
        if not nearer:
            out.append(seg)
    return out


def _classify(segments: Sequence[_Segment], roles: Mapping[int, str],
              task_pids: set[int]) -> dict[int, ProcessInfo]:
    """Each sampled process's role (see the module docstring)."""
    info: dict[int, ProcessInfo] = {}
    runs_tasks: set[int] = set()
    for seg in segments:
        if seg.pid not in info:
            chain = dict(seg.chain)
            pids = [p for p, _ in seg.chain]
            parent = pids[pids.index(seg.pid) - 1] if seg.pid in pids[1:] else None
            info[seg.pid] = ProcessInfo(seg.pid, roles.get(seg.pid, roles.get(seg.root, "")),
                                        chain.get(seg.pid, ""), parent, seg.root)
        if seg.pid not in runs_tasks and any(
                f.function == fn and f.file.endswith(suffix)
                for f in seg.frames for suffix, fn in WORKER_SIGNATURES):
            runs_tasks.add(seg.pid)
    for pid, p in info.items():
        if pid not in roles and (pid in task_pids or pid in runs_tasks):
            p.role = WORKER
    return info


# -- py-spy's log --------------------------------------------------------------------------

_LOG_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z (\w+)\s+(\S+)\] (.*)$")


def _log_time(stamp: str, frac: str | None) -> float:
    base = _dt.datetime.fromisoformat(stamp).replace(tzinfo=_dt.UTC).timestamp()
    return base + (int(frac) / 10 ** len(frac) if frac else 0.0)


def _log_origin(log: str) -> float | None:
    """When py-spy's clock started: it logs its config just before (RUST_LOG=info)."""
    for line in log.splitlines():
        m = _LOG_LINE.match(line)
        if m and m.group(4) == "py_spy::config" and m.group(5).startswith("config"):
            return _log_time(m.group(1), m.group(2))
    return None


def _log_exits(log: str) -> dict[int, float]:
    """pid -> when py-spy saw it exit."""
    out = {}
    for line in log.splitlines():
        m = _LOG_LINE.match(line)
        if m and (e := re.match(r"stopped sampling pid (\d+) because the process exited",
                                m.group(5))):
            out[int(e.group(1))] = _log_time(m.group(1), m.group(2))
    return out


def _failure_reason(log: bytes, code: int | None) -> str:
    """py-spy's own error line (not its log lines, not a backtrace), as one line."""
    lines = [ln.strip() for ln in log.decode(errors="replace").splitlines()
             if ln.strip() and not ln.startswith((" ", "\t", "[", "}"))]
    errors = [ln for ln in lines if ln.startswith("Error:") or "Permission Denied" in ln]
    reason = (errors or lines or [f"py-spy exited with code {code}"])[0]
    reason = reason.removeprefix("Error:").strip()
    if "ermission" in reason:
        reason += " (attaching needs ptrace: root, CAP_SYS_PTRACE or kernel.yama.ptrace_scope=0)"
    return reason


# -- small helpers -------------------------------------------------------------------------

def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def _descendants(roots: Iterable[int]) -> set[int]:
    import psutil

    found: set[int] = set()
    for root in roots:
        with contextlib.suppress(psutil.Error):
            found.update(p.pid for p in psutil.Process(root).children(recursive=True))
    return found
