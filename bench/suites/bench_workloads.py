"""The benchmark suite: `pytest bench --benchmark-only [--bench-profile NAME]
[--bench-workload MODULE:ATTR --bench-arg KEY=VALUE ...]`.

Each scenario of the profile (a workload configuration, run singly or N at a time) runs
plain and on every Covalent executor through pytest-benchmark's pedantic mode, one call per
round (a run takes seconds to minutes; pytest-benchmark's calibration would multiply that).
By default rounds are interleaved (plain, local, dask, plain, ...: one benchmark per round);
`--bench-order grouped` runs the warm-up and measured rounds of a mode in one benchmark.
Every run, warm-up and failed ones included, is appended to runs.csv as soon as it ends.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from bench.engine import Case, Engine, SessionEndedError
from bench.records import environment

# Columns that go into pytest-benchmark's JSON next to its own statistics.
EXTRA_COLUMNS = (
    "round", "slot", "warmup", "wall_s", "latency_s", "batch_wall_s", "output_digest",
    "outputs", "dispatch_id", "status", "submit_s", "server_s", "retrieve_s", "stock_wall_s",
    "server_cpu_s", "error",
)


class RunFailedError(RuntimeError):
    """A run ended other than COMPLETED; its row (with the reason) is already written."""


def test_workload(benchmark: Any, case: Case, bench_engine: Engine) -> None:
    profile, scenario = bench_engine.profile, case.scenario
    reason = bench_engine.skip_reason(case)
    if reason:
        pytest.skip(reason)
    rounds = itertools.count(case.round or 0)
    rows: list[dict] = []

    def one_run() -> None:
        try:
            done = bench_engine.run(case, next(rounds))
        except SessionEndedError as exc:
            # The session's own server: a dead one ends the session, it does not limp on.
            pytest.exit(str(exc), returncode=3)
        rows.extend(done)
        failed = [f"{r['status']}: {r['error']}" for r in done if r["status"] != "COMPLETED"]
        if failed:
            raise RunFailedError("; ".join(failed))

    workload = scenario.workload
    benchmark.group = f"{scenario.id}-{case.label}"
    benchmark.extra_info.update(
        profile=profile.name,
        part=scenario.part,
        workload=workload.name,
        config_id=scenario.id,
        concurrency=scenario.concurrency,
        params=workload.dimensions(scenario.params),
        mode=case.mode,
        executor=case.executor,
        probes="on" if case.probed else "off",
        session_id=bench_engine.session_id,
        server_startup_s=bench_engine.server.startup_s if bench_engine.server else None,
        environment=environment(),
    )
    try:
        if case.round is None:
            benchmark.pedantic(
                one_run, rounds=scenario.rounds, warmup_rounds=scenario.warmup_rounds,
                iterations=1,
            )
        else:
            benchmark.pedantic(one_run, rounds=1, warmup_rounds=0, iterations=1)
    finally:
        benchmark.extra_info["runs"] = [{k: row.get(k) for k in EXTRA_COLUMNS} for row in rows]
