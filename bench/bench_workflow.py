"""The benchmark suite: `pytest bench --benchmark-only [--bench-profile smoke|quick|tutorial]`.

Each configuration of the profile runs plain and on every Covalent executor through
pytest-benchmark's pedantic mode, one call per round (a run takes seconds to minutes;
pytest-benchmark's calibration would multiply that). By default rounds are interleaved
(plain, local, dask, plain, ...: one benchmark per round); `--bench-order grouped` runs
the warm-up and measured rounds of a mode in one benchmark. Every run, warm-up included,
is appended to runs.csv as soon as it ends.
"""

from __future__ import annotations

import itertools
from typing import Any

from bench.plugin import BenchSession, Case
from bench.records import environment
from bench.runner import measure_covalent, measure_plain
from bench.server import CovalentServer
from mnist_core.workflow import WorkflowFailedError

# Columns that go into pytest-benchmark's JSON next to its own statistics.
EXTRA_COLUMNS = (
    "round", "warmup", "wall_s", "accuracy", "test_loss", "weights_sha256", "torch_threads",
    "dispatch_id", "status", "submit_s", "server_s", "retrieve_s", "stock_wall_s",
    "server_cpu_s",
)


def test_mnist_workflow(
    benchmark: Any,
    case: Case,
    bench_session: BenchSession,
    covalent_server: CovalentServer,  # up for plain runs too: they pay the idle server's tax
    mnist_root: Any,
) -> None:
    profile = bench_session.profile
    rounds = itertools.count(case.round or 0)
    rows: list[dict] = []

    def one_run() -> None:
        i = next(rounds)
        probes = bench_session.probe_dir
        if case.mode == "plain":
            record = measure_plain(case.config, probes, covalent_server)
        else:
            record = measure_covalent(
                case.config, case.executor, covalent_server.address, probes, covalent_server
            )
        rows.append(
            bench_session.record(
                case.config,
                record,
                round=i,
                warmup=i < profile.warmup_rounds,
                server_startup_s=covalent_server.startup_s,
            )
        )
        if record.error:
            raise WorkflowFailedError(record.error)

    benchmark.group = f"{case.config.id}-{case.label}"
    benchmark.extra_info.update(
        profile=profile.name,
        config_id=case.config.id,
        config=case.config.as_dict(),
        mode=case.mode,
        executor=case.executor,
        session_id=bench_session.session_id,
        server_startup_s=covalent_server.startup_s,
        environment=environment(),
    )
    try:
        if case.round is None:
            benchmark.pedantic(
                one_run, rounds=profile.rounds, warmup_rounds=profile.warmup_rounds,
                iterations=1,
            )
        else:
            benchmark.pedantic(one_run, rounds=1, warmup_rounds=0, iterations=1)
    finally:
        benchmark.extra_info["runs"] = [{k: row.get(k) for k in EXTRA_COLUMNS} for row in rows]
    accuracies = {row["accuracy"] for row in rows}
    assert len(accuracies) == 1, f"rounds of {case.id} disagree on accuracy: {accuracies}"
