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

import contextlib
import itertools
import time
from typing import Any

import pytest

from bench.measure.runner import (
    ServerUnavailableError,
    measure_covalent_batch,
    measure_plain_batch,
)
from bench.records import ERROR, RunRecord, environment
from bench.services.cluster import DaskCluster
from bench.services.server import CovalentServer
from bench.suites.plugin import BenchSession, Case, CovalentEnvironment

# Columns that go into pytest-benchmark's JSON next to its own statistics.
EXTRA_COLUMNS = (
    "round", "slot", "warmup", "wall_s", "latency_s", "batch_wall_s", "output_digest",
    "outputs", "dispatch_id", "status", "submit_s", "server_s", "retrieve_s", "stock_wall_s",
    "server_cpu_s", "error",
)


class RunFailedError(RuntimeError):
    """A run ended other than COMPLETED; its row (with the reason) is already written."""


def test_workload(
    benchmark: Any,
    case: Case,
    bench_session: BenchSession,
    covalent_server: CovalentServer,  # up for plain runs too: they pay the idle server's tax
    external_cluster: DaskCluster | None,
    covalent_environments: dict[str, CovalentEnvironment],
) -> None:
    profile, scenario = bench_session.profile, case.scenario
    workload, params, n = scenario.workload, scenario.params, scenario.concurrency
    precision = bench_session.precision
    if precision is not None and case.round is not None:
        labels = [Case(scenario, "covalent", e, None, True, env.name if env else "").label
                  for env in (scenario.environments or (None,)) for e in scenario.executors]
        reason = precision.skip_reason(scenario, case.round, labels,
                                       starts=case.mode == "plain" and case.probed)
        if reason:
            if bench_session.progress is not None:
                bench_session.progress.skipped(case.label, n)
            pytest.skip(reason)
    rounds = itertools.count(case.round or 0)
    rows: list[dict] = []

    def one_run() -> None:
        i = next(rounds)
        probes = bench_session.probe_dir

        started = time.monotonic()

        place = covalent_environments.get(case.environment) if case.environment else None
        server = place.server if place is not None else covalent_server

        def write(records: list) -> None:
            for record in records:
                rows.append(bench_session.record(
                    scenario, record, i, server, case.environment,
                    place.covalent if place is not None else ""))
                if precision is not None:
                    precision.record(scenario.id, case.label, i, i < scenario.warmup_rounds,
                                     record)
                if bench_session.progress is not None:
                    bench_session.progress.run_done(
                        scenario.id, case.label, i, scenario.warmup_rounds + (
                            scenario.rounds if precision is None else precision.max_rounds),
                        i < scenario.warmup_rounds, record.wall_s, record.status,
                        time.monotonic() - started)

        try:
            if place is not None and place.failure:  # the row says why; the others go on
                records = [RunRecord("covalent", case.executor, 0.0, status=ERROR,
                                     error=f"environment {place.name}: {place.failure}",
                                     probed=case.probed)]
            elif place is not None:
                name, inputs, digest = workload.ref
                target = external_cluster.address if case.executor == "external" else None
                records = place.client.measure_covalent_batch(
                    name, params, case.executor, place.server.address, probes, n,
                    scenario.timeout_s, case.probed, inputs=inputs, digest=digest,
                    dispatch_to=target, server=place.server)
            elif case.mode == "plain":
                records = measure_plain_batch(workload, params, probes, covalent_server, n,
                                              case.probed)
            else:
                target = external_cluster.executor() if case.executor == "external" else None
                records = measure_covalent_batch(
                    workload, params, case.executor, covalent_server.address, probes,
                    covalent_server, n, timeout_s=scenario.timeout_s, dispatch_to=target,
                    health=covalent_server.check_alive, probe=case.probed,
                )
        except ServerUnavailableError as exc:
            write(exc.records)
            if place is not None:  # one environment's server: that environment is out
                place.failure = f"its server is gone: {exc}"
                raise RunFailedError(place.failure) from None
            # The server is the session's own: a dead one ends the session, it does not limp on.
            pytest.exit(f"the Covalent server is gone: {exc}; {len(rows)} rows of this case "
                        f"and every earlier run are in {bench_session.writer.path}",
                        returncode=3)
        except BaseException as exc:  # Ctrl-C, SIGTERM: the interrupted runs get rows too
            with contextlib.suppress(Exception):  # and the interrupt goes on, whatever
                write(getattr(exc, "bench_records", []))
            raise
        write(records)
        failed = [f"{r.status}: {r.error}" for r in records if r.status != "COMPLETED"]
        if failed:
            raise RunFailedError("; ".join(failed))

    benchmark.group = f"{scenario.id}-{case.label}"
    benchmark.extra_info.update(
        profile=profile.name,
        part=scenario.part,
        workload=workload.name,
        config_id=scenario.id,
        concurrency=n,
        params=workload.dimensions(params),
        mode=case.mode,
        executor=case.executor,
        probes="on" if case.probed else "off",
        session_id=bench_session.session_id,
        server_startup_s=covalent_server.startup_s,
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
