"""The benchmark suite: `pytest bench --benchmark-only [--bench-profile smoke|quick|tutorial|full]`.

Each scenario of the profile (a configuration, run singly or N at a time) runs plain and
on every Covalent executor through pytest-benchmark's pedantic mode, one call per round
(a run takes seconds to minutes; pytest-benchmark's calibration would multiply that). By
default rounds are interleaved (plain, local, dask, plain, ...: one benchmark per round);
`--bench-order grouped` runs the warm-up and measured rounds of a mode in one benchmark.
Every run, warm-up included, is appended to runs.csv as soon as it ends.
"""

from __future__ import annotations

import itertools
from typing import Any

from bench.cluster import DaskCluster
from bench.plugin import BenchSession, Case
from bench.records import environment
from bench.runner import measure_covalent_batch, measure_plain_batch
from bench.server import CovalentServer
from mnist_core.workflow import WorkflowFailedError

# Columns that go into pytest-benchmark's JSON next to its own statistics.
EXTRA_COLUMNS = (
    "round", "slot", "warmup", "wall_s", "latency_s", "batch_wall_s", "accuracy", "test_loss",
    "weights_sha256", "torch_threads",
    "dispatch_id", "status", "submit_s", "server_s", "retrieve_s", "stock_wall_s",
    "server_cpu_s",
)


def test_mnist_workflow(
    benchmark: Any,
    case: Case,
    bench_session: BenchSession,
    covalent_server: CovalentServer,  # up for plain runs too: they pay the idle server's tax
    external_cluster: DaskCluster | None,
    mnist_root: Any,
) -> None:
    profile, scenario = bench_session.profile, case.scenario
    config, n = scenario.config, scenario.concurrency
    rounds = itertools.count(case.round or 0)
    rows: list[dict] = []

    def one_run() -> None:
        i = next(rounds)
        probes = bench_session.probe_dir
        if case.mode == "plain":
            records = measure_plain_batch(config, probes, covalent_server, n)
        else:
            target = external_cluster.executor() if case.executor == "external" else None
            records = measure_covalent_batch(
                config, case.executor, covalent_server.address, probes, covalent_server, n,
                dispatch_to=target,
            )
        for record in records:
            rows.append(
                bench_session.record(
                    scenario,
                    record,
                    round=i,
                    warmup=i < scenario.warmup_rounds,
                    server_startup_s=covalent_server.startup_s,
                    server_workers=covalent_server.workers,
                    server_threads_per_worker=covalent_server.threads_per_worker,
                )
            )
        errors = [r.error for r in records if r.error]
        if errors:
            raise WorkflowFailedError("; ".join(errors))

    benchmark.group = f"{scenario.id}-{case.label}"
    benchmark.extra_info.update(
        profile=profile.name,
        part=scenario.part,
        config_id=scenario.id,
        concurrency=n,
        config=config.as_dict(),
        mode=case.mode,
        executor=case.executor,
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
    accuracies = {row["accuracy"] for row in rows}
    assert len(accuracies) == 1, f"rounds of {case.id} disagree on accuracy: {accuracies}"
