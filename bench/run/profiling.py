"""Profiled rounds (`--bench-stacks N`): a run measured while py-spy samples the stacks of
every process it uses (bench.run.stacks), then its samples placed in its phases and roles.

A profiled run is an extra run of its round, flagged `profiled` (bench.records.PROFILED):
its wall is recorded, never in a figure, and the profiled − unprofiled wall of the same
round is what sampling costs (bench.analysis.decompose.stacks_cost). What it leaves, per
run, in the output directory:

    stacks/<run_id>/pyspy-<role>-<pid>.chrometrace.json, .log   py-spy's own recording
    stacks/<run_id>/trace.json                                  Chrome trace-event format:
                                                                Perfetto, chrome://tracing
    stacks/<run_id>/speedscope-<role>-<pid>.json                https://www.speedscope.app
    hotspots.csv                                                seconds per function, part
                                                                and role (one row each)
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from bench.analysis.hotspots import attribute, hotspots
from bench.records import PROFILED, STACKS_DIR, RunRecord
from bench.run.stacks import DEFAULT_RATE, StackSampler
from bench.run.trace import write_speedscope_files, write_trace


def roles_for(client_pid: int, server: Any = None, workers: tuple[int, ...] = ()
              ) -> dict[str, Any]:
    """The root processes of a run by role: the interpreter that runs its client side, the
    Covalent server's main process (its pool and Dask workers follow as children), an
    external cluster's scheduler and workers."""
    roles: dict[str, Any] = {"client": client_pid}
    main = None if server is None else (server.main_pid or server.pid)
    if main:
        roles["server"] = main
    if workers:
        roles["worker"] = list(workers)
    return roles


class Profiler:
    """Runs profiled batches for one session, writing into `out_dir`; `note` says, once, why
    stacks cannot be sampled here (then runs go on, flagged, without profiles)."""

    def __init__(self, out_dir: str | os.PathLike, note: Callable[[str], None],
                 rate: int = DEFAULT_RATE) -> None:
        self.out_dir = Path(out_dir)
        self.note = note
        self.rate = rate
        self.said: set[str] = set()

    def run(self, roles: Mapping[str, Any], measure: Callable[[], list[RunRecord]]
            ) -> tuple[list[RunRecord], list[pd.DataFrame]]:
        """`measure()` with the stacks of `roles` sampled; its records flagged profiled,
        and per record that has samples its hotspots (hotspots(per_run=True) rows)."""
        pending = self.out_dir / STACKS_DIR / f".pending-{uuid.uuid4().hex[:8]}"
        sampler = StackSampler(roles, pending, rate=self.rate)
        sampler.start()
        if sampler.unavailable and sampler.unavailable not in self.said:
            self.said.add(sampler.unavailable)
            self.note(f"stacks not sampled: {sampler.unavailable}; the runs go on")
        try:
            records = measure()
        finally:
            sampler.stop()
        for record in records:
            record.flags = ";".join(filter(None, [record.flags, PROFILED]))
        hot = []
        try:
            for i, record in enumerate(records):
                found = self._profile(sampler, pending, record, roles.get("client"),
                                      last=i == len(records) - 1)
                if found is not None:
                    hot.append(found)
        finally:
            shutil.rmtree(pending, ignore_errors=True)
        return records, hot

    def _profile(self, sampler: StackSampler, pending: Path, record: RunRecord,
                 client: int | None, last: bool) -> pd.DataFrame | None:
        if not record.t0 or not sampler.files:
            return None
        pids = [int(p["pid"]) for p in record.phases if p.get("pid")]
        # On the client's side only its main thread runs the run (in-process too: the
        # engine runs there); its other threads and children are the harness's own
        # watchers (the watchdog, py-spy's waiters), never the run's time.
        samples = [s for s in sampler.samples(record.t0, task_pids=pids)
                   if s.role != "client" or s.pid == s.tid == client]
        if not samples:
            return None
        run_dir = self.out_dir / STACKS_DIR / record.run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        for path in pending.iterdir():  # py-spy's own files: the batch's, with each run
            (shutil.move if last else shutil.copy2)(path, run_dir / path.name)
        roots = {role: pid for pid, info in sampler.processes.items()
                 for role in [info.role] if pid == info.root}
        write_trace(run_dir / "trace.json", record.phases, samples, sampler.rate, pids=roots,
                    names={pid: info.cmdline for pid, info in sampler.processes.items()},
                    other={"run_id": record.run_id, "dispatch_id": record.dispatch_id})
        write_speedscope_files(run_dir, samples, sampler.rate)
        attributed = attribute(samples, record.phases, run_end_s=record.wall_s,
                               run_id=record.run_id)
        return hotspots(attributed, sampler.rate, per_run=True).assign(
            rate_hz=sampler.rate)
