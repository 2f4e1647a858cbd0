"""A profiled run as files a viewer opens: one Chrome trace (trace.json: chrome://tracing,
https://ui.perfetto.dev) and a speedscope profile per process (https://www.speedscope.app).

trace.json (the JSON object format: `traceEvents`, `displayTimeUnit`) holds, per run:
* the client's phases as complete ("X") events on the client process's "run phases" track;
* the server span and the node spans on the server process ("dispatch", "nodes N": spans
  that overlap go on separate lanes, so each track nests), the probed tasks' own spans on
  the process that ran them ("tasks N");
* every sampled thread's stacks as nested "X" slices on its own track (pid, native tid),
  like py-spy's chrometrace but placed on the run's time axis;
* process_name / thread_name / process_sort_index metadata ("M") and an instant event
  ("i") at the run's start.
Times are microseconds; the sampler starts before the run, so the file's zero is the
earliest event and the run's start is at `otherData.run_start_us`.

The speedscope files are "evented" profiles (one per thread, seconds from the run's
start), so speedscope's time-order view shows the same timeline.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bench import records as R
from bench.run.stacks import Frame, Sample

SYNTH_TID = 1_000_000_000  # tracks of spans: above any native thread id (pid_max <= 2**22)
SYNTH_PID = 2_000_000_000  # a role with no sampled process still gets a track
ROLE_ORDER = {"client": 0, "server": 1, "worker": 2}
CLIENT_TRACK_PHASES = (R.SUBMIT, R.UNTIL_RUNNING, R.SERVER, R.COMPLETION_DETECT,
                       R.QUEUED_FOR_RETRIEVE, R.RETRIEVE)
SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"
GAP_SAMPLES = 10  # a thread unsampled this many mean intervals was gone (P = e**-10 if not)


def trace_events(phases: pd.DataFrame | Sequence[Mapping[str, Any]],
                 samples: Sequence[Sample], rate: float,
                 pids: Mapping[str, int] | None = None,
                 names: Mapping[int, str] | None = None) -> tuple[list[dict], float]:
    """The trace events of one run and the run's start on the file's clock (µs).

    `pids`: role -> the pid whose track shows the client phases and the nodes (default: the
    most sampled process of that role); `names`: pid -> a label (e.g. its command line)."""
    ph = _phases(phases)
    pids = dict(pids or {})
    roles = _roles(samples)
    for role, offset in (("client", 1), ("server", 2)):
        if role not in pids:
            counts = defaultdict(int)
            for s in samples:
                if s.role == role:
                    counts[s.pid] += 1
            pids[role] = max(counts, key=counts.get) if counts else SYNTH_PID + offset
        roles.setdefault(pids[role], role)
    spans: list[dict] = []  # X events, times in s from the run's start
    tracks: dict[tuple[int, int], str] = {}

    def span(pid: int, tid: int, track: str, name: str, start: float, end: float,
             cat: str, **args: Any) -> None:
        tracks[(pid, tid)] = track
        spans.append({"ph": "X", "pid": pid, "tid": tid, "name": name, "cat": cat,
                      "t": start, "d": max(0.0, end - start), "args": args})

    for row in ph[ph["phase"].isin(CLIENT_TRACK_PHASES)].itertuples():
        span(pids["client"], SYNTH_TID, "run phases", row.phase, row.start_s, row.end_s,
             "phase")
    for row in ph[ph["phase"] == R.SERVER].itertuples():
        span(pids["server"], SYNTH_TID, "dispatch", "server span", row.start_s, row.end_s,
             "phase")
    nodes = ph[ph["phase"] == R.NODE]
    for lane, row in _lanes(nodes):
        extra = {"bytes": int(row.bytes)} if "bytes" in ph and pd.notna(row.bytes) else {}
        span(pids["server"], SYNTH_TID + 1 + lane, f"nodes {lane + 1}", _text(row.task),
             row.start_s, row.end_s, "node", **extra)
    tasks = ph[ph["phase"] == R.IN_TASK]
    for pid, group in tasks.groupby(tasks["pid"].fillna(-1).astype(int), sort=False):
        where = pid if pid >= 0 else pids["server"]
        roles.setdefault(where, "worker")
        for lane, row in _lanes(group):
            span(where, SYNTH_TID + 100 + lane, f"tasks {lane + 1}", _text(row.task),
                 row.start_s, row.end_s, "in_task",
                 **({"cpu_s": float(row.cpu_s)} if "cpu_s" in ph and pd.notna(row.cpu_s)
                    else {}))
    thread_names: dict[tuple[int, int], str] = {}
    for (pid, tid), thread in _threads(samples).items():
        thread_names[(pid, tid)] = f"{thread[0].thread or 'thread'} ({tid})"
        for frame, start, end in _slices(thread, rate):
            spans.append({"ph": "X", "pid": pid, "tid": tid, "name": frame.function,
                          "cat": "sample", "t": start, "d": end - start,
                          "args": {"file": frame.file, "line": frame.line}})
    tracks.update(thread_names)

    origin = min([0.0, *(e["t"] for e in spans)])
    events: list[dict] = []
    for e in spans:
        start, end = e.pop("t") - origin, e.pop("d")
        ts = round(start * 1e6)  # the end rounded on its own: a child never outlasts its parent
        events.append({**e, "ts": ts, "dur": max(0, round((start + end) * 1e6) - ts)})
    # Nested slices of one track must come parent first: by start, then longest first.
    events.sort(key=lambda e: (e["pid"], e["tid"], e["ts"], -e["dur"]))
    meta: list[dict] = []
    for pid in sorted({e["pid"] for e in events} | set(pids.values())):
        role = roles.get(pid, "")
        label = f"{role} {pid}" if pid < SYNTH_PID else f"{role} (not sampled)"
        if names and names.get(pid):
            label += f": {names[pid]}"
        meta += [_meta(pid, 0, "process_name", name=label),
                 _meta(pid, 0, "process_sort_index", sort_index=ROLE_ORDER.get(role, 3))]
    for (pid, tid), track in sorted(tracks.items()):
        meta += [_meta(pid, tid, "thread_name", name=track),
                 _meta(pid, tid, "thread_sort_index", sort_index=tid)]
    start_us = round(-origin * 1e6)
    mark = {"ph": "i", "s": "g", "name": "run start", "cat": "phase", "pid": pids["client"],
            "tid": SYNTH_TID, "ts": start_us}
    return meta + [mark] + events, start_us


def write_trace(path: str | os.PathLike, phases: pd.DataFrame | Sequence[Mapping[str, Any]],
                samples: Sequence[Sample], rate: float,
                pids: Mapping[str, int] | None = None, names: Mapping[int, str] | None = None,
                other: Mapping[str, Any] | None = None) -> Path:
    """Write one run's trace.json (see the module docstring); `other`: extra otherData."""
    events, start_us = trace_events(phases, samples, rate, pids, names)
    doc = {"traceEvents": events, "displayTimeUnit": "ms",
           "otherData": {"run_start_us": start_us, "rate_hz": rate, **(other or {})}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, separators=(",", ":")))
    return path


def speedscope(samples: Sequence[Sample], rate: float, name: str = "") -> dict[str, Any]:
    """A speedscope file (evented profiles, one per thread) of one process's samples."""
    frames: list[dict[str, Any]] = []
    index: dict[Frame, int] = {}
    profiles = []
    for (pid, tid), thread in sorted(_threads(samples).items()):
        events = []
        for kind, frame, at in _events(thread, rate):
            if frame not in index:
                index[frame] = len(frames)
                frames.append({"name": frame.function, "file": frame.file, "line": frame.line})
            events.append({"type": kind, "frame": index[frame], "at": at})
        if not events:
            continue
        profiles.append({
            "type": "evented", "name": f"{thread[0].role} {pid} {thread[0].thread or 'thread'}"
            f" ({tid})", "unit": "seconds", "startValue": events[0]["at"],
            "endValue": events[-1]["at"], "events": events})
    return {"$schema": SPEEDSCOPE_SCHEMA, "shared": {"frames": frames}, "profiles": profiles,
            "name": name, "activeProfileIndex": 0, "exporter": "bench.run.trace"}


def write_speedscope_files(out_dir: str | os.PathLike, samples: Iterable[Sample],
                           rate: float) -> dict[int, Path]:
    """One speedscope file per sampled process: `speedscope-<role>-<pid>.json`."""
    by_pid: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        by_pid[s.pid].append(s)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for pid, group in by_pid.items():
        role = group[0].role
        path = out_dir / f"speedscope-{role}-{pid}.json"
        path.write_text(json.dumps(speedscope(group, rate, f"{role} {pid}"),
                                   separators=(",", ":")))
        paths[pid] = path
    return paths


# -- helpers -------------------------------------------------------------------------------

def _phases(phases: pd.DataFrame | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    ph = pd.DataFrame(list(phases) if not isinstance(phases, pd.DataFrame) else phases)
    for col, default in (("phase", ""), ("task", ""), ("start_s", float("nan")),
                         ("duration_s", 0.0), ("pid", float("nan"))):
        if col not in ph:
            ph[col] = default
    ph = ph.dropna(subset=["start_s"])
    return ph.assign(end_s=ph["start_s"] + ph["duration_s"].fillna(0.0))


def _lanes(spans: pd.DataFrame) -> Iterator[tuple[int, Any]]:
    """Greedy interval partitioning: spans that overlap go to different lanes."""
    ends: list[float] = []
    for row in spans.sort_values("start_s").itertuples():
        lane = next((i for i, end in enumerate(ends) if end <= row.start_s), len(ends))
        if lane == len(ends):
            ends.append(row.end_s)
        ends[lane] = row.end_s
        yield lane, row


def _threads(samples: Iterable[Sample]) -> dict[tuple[int, int], list[Sample]]:
    out: dict[tuple[int, int], list[Sample]] = defaultdict(list)
    for s in samples:
        out[(s.pid, s.tid)].append(s)
    for key, group in out.items():
        group.sort(key=lambda s: s.time_s)
        named = next((s.thread for s in group if s.thread), "")
        if named and not group[0].thread:  # py-spy learns a thread's name a moment late
            out[key] = [Sample(s.role, s.pid, s.tid, s.time_s, s.frames, s.idle, named)
                        for s in group]
    return out


def _events(thread: Sequence[Sample], rate: float) -> Iterator[tuple[str, Frame, float]]:
    """Open ("O") and close ("C") events of one thread's frames, balanced and in time order.

    A sample stands for 1/rate s around its time; a change of stack between two samples is
    placed halfway. py-spy samples at exponential intervals (mean 1/rate), so only a gap of
    more than GAP_SAMPLES intervals means the thread was not sampled: it closes all."""
    half = 0.5 / rate
    open_: Sequence[Frame] = ()
    prev = None
    for s in thread:
        frames = s.frames
        if prev is not None and frames == open_ and s.time_s - prev <= GAP_SAMPLES / rate:
            prev = s.time_s  # the same stack goes on (the common case: one comparison)
            continue
        if prev is None or s.time_s - prev > GAP_SAMPLES / rate:
            at = s.time_s - half
            if prev is not None:
                yield from (("C", f, prev + half) for f in reversed(open_))
                open_ = ()
        else:
            at = (prev + s.time_s) / 2
        common = 0
        while common < min(len(open_), len(frames)) and open_[common] == frames[common]:
            common += 1
        yield from (("C", f, at) for f in reversed(open_[common:]))
        yield from (("O", f, at) for f in frames[common:])
        open_ = frames
        prev = s.time_s
    if prev is not None:
        yield from (("C", f, prev + half) for f in reversed(open_))


def _slices(thread: Sequence[Sample], rate: float) -> Iterator[tuple[Frame, float, float]]:
    """The (frame, start, end) slices of `_events`."""
    stack: list[tuple[Frame, float]] = []
    for kind, frame, at in _events(thread, rate):
        if kind == "O":
            stack.append((frame, at))
        else:
            f, start = stack.pop()
            yield f, start, at


def _roles(samples: Iterable[Sample]) -> dict[int, str]:
    return {s.pid: s.role for s in samples}


def _meta(pid: int, tid: int, kind: str, **args: Any) -> dict[str, Any]:
    return {"ph": "M", "pid": pid, "tid": tid, "name": kind, "args": args}


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and value != value) else str(value)
