"""bench.pertask: the graphs it dispatches, the per-task fit, and one small real run."""

from __future__ import annotations

import math
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from bench.pertask import (
    PERTASK_COLUMNS,
    PERTASK_CSV,
    PERTASK_SUMMARY_CSV,
    PLOTS,
    PertaskPlan,
    build_lattice,
    expected_result,
    ideal_time,
    load_pertask,
    pertask_section,
    pertask_summary,
    run_pertask,
    run_plain,
)


def _graph(shape: str, n: int) -> nx.MultiDiGraph:
    lattice = build_lattice(shape, "local")
    lattice.build_graph(n, 0.0)
    return lattice.transport_graph.get_internal_graph_copy()


def _steps(graph: nx.MultiDiGraph) -> list[int]:
    return [node for node, data in graph.nodes(data=True) if data["name"] == "step"]


def test_chain_graph_has_n_dependent_tasks() -> None:
    graph = _graph("chain", 5)
    steps = _steps(graph)
    assert len(steps) == 5
    order = [node for node in nx.topological_sort(graph) if node in steps]
    for before, after in zip(order, order[1:], strict=False):  # each feeds the next one's x
        assert any(d["edge_name"] == "x" for d in graph.get_edge_data(before, after).values())


def test_fanout_graph_has_n_independent_tasks() -> None:
    graph = _graph("fanout", 5)
    steps = _steps(graph)
    assert len(steps) == 5
    for a in steps:
        for b in steps:
            assert a == b or not nx.has_path(graph, a, b)


def test_plain_baseline_returns_what_the_lattice_must() -> None:
    assert run_plain("chain", 4, 0.0) == expected_result("chain", 4) == 4
    assert run_plain("fanout", 3, 0.0) == expected_result("fanout", 3) == [1, 2, 3]


def test_ideal_time() -> None:
    assert ideal_time("chain", 10, 0.1, slots=4) == pytest.approx(1.0)
    assert ideal_time("fanout", 10, 0.1, slots=4) == pytest.approx(0.3)  # ceil(10 / 4) waves
    assert ideal_time("fanout", 10, 0.0, slots=None) == 0.0
    assert math.isnan(ideal_time("fanout", 10, 0.1, slots=None))


def _synthetic(slope: float, intercept: float, shape: str, sleep_s: float, slots: int,
               noise: float = 0.002) -> pd.DataFrame:
    """Rows as run_pertask writes them: wall = ideal + intercept + slope x n (+ noise)."""
    rows = []
    rng = np.random.default_rng(0)
    for n in (1, 10, 100, 1000):
        for rnd in range(3):
            ideal = ideal_time(shape, n, sleep_s, slots)
            rows.append({"mode": "plain", "executor": "", "shape": shape, "sleep_s": sleep_s,
                         "n": n, "round": rnd, "status": "COMPLETED",
                         "wall_s": n * sleep_s * 1.001})
            rows.append({"mode": "covalent", "executor": "local", "shape": shape,
                         "sleep_s": sleep_s, "n": n, "round": rnd, "slots": slots,
                         "status": "COMPLETED",
                         "wall_s": ideal + intercept + slope * n + rng.normal(0, noise)})
    return pd.DataFrame(rows)


def test_fit_recovers_a_known_per_task_cost() -> None:
    chain = _synthetic(slope=0.004, intercept=0.5, shape="chain", sleep_s=0.01, slots=2)
    fanout = _synthetic(slope=0.02, intercept=1.0, shape="fanout", sleep_s=0.1, slots=2)
    failed = pd.DataFrame([
        {"mode": "covalent", "executor": "dask", "shape": "chain", "sleep_s": 0.0, "n": 1,
         "round": 0, "slots": 2, "status": "COMPLETED", "wall_s": 0.5},
        {"mode": "covalent", "executor": "dask", "shape": "chain", "sleep_s": 0.0, "n": 10,
         "round": 0, "slots": 2, "status": "TIMEOUT", "wall_s": 9.0, "error": "still RUNNING"},
        {"mode": "covalent", "executor": "dask", "shape": "chain", "sleep_s": 0.0, "n": 100,
         "round": 0, "slots": 2, "status": "SKIPPED", "error": "n=10 round 0 ended TIMEOUT"},
    ])
    summary = pertask_summary(pd.concat([chain, fanout, failed], ignore_index=True))
    by = summary.set_index(["executor", "shape", "sleep_s"])

    row = by.loc[("local", "chain", 0.01)]
    assert row["slope_ci_low_s"] < 0.004 < row["slope_ci_high_s"]
    assert row["slope_s"] == pytest.approx(0.004, abs=2e-5)
    assert row["intercept_s"] == pytest.approx(0.5, abs=0.01)
    assert row["plain_slope_s"] == pytest.approx(0.01001)
    assert row["max_n_completed"] == 1000 and row["runs"] == 12
    # n=1000: ideal 10 s against 10 + 0.5 + 4 s
    assert row["efficiency_at_max_n"] == pytest.approx(10 / 14.5, rel=1e-3)

    row = by.loc[("local", "fanout", 0.1)]  # ideal counts the 2 slots: ceil(n / 2) x 0.1 s
    assert row["slope_s"] == pytest.approx(0.02, abs=2e-5)
    assert row["efficiency_at_max_n"] == pytest.approx(50 / (50 + 1 + 20), rel=1e-3)

    row = by.loc[("dask", "chain", 0.0)]
    assert row["max_n_completed"] == 1 and row["failed_runs"] == 1
    assert math.isnan(row["slope_s"])  # one n completed: no slope to fit
    assert row["first_failure"].startswith("TIMEOUT at n=10")
    assert row["skipped_n"] == "100"


@pytest.mark.slow
def test_small_real_run_writes_a_row_per_run(covalent_server, tmp_path: Path) -> None:
    plan = PertaskPlan(executors=("local",), shapes=("chain", "fanout"), sleeps=(0.0,),
                       sizes=(1, 10), rounds=1, timeout_s=300)
    path = run_pertask(tmp_path, plan, covalent_address=covalent_server.address)
    assert path == tmp_path / PERTASK_CSV
    df = load_pertask(tmp_path)
    assert tuple(df.columns) == PERTASK_COLUMNS
    # per shape and n: one plain and one Covalent run
    assert sorted(zip(df["shape"], df["n"], df["mode"], strict=True)) == sorted(
        (s, n, m) for s in ("chain", "fanout") for n in (1, 10) for m in ("plain", "covalent")
    )
    cov = df[df["mode"] == "covalent"]
    assert (cov["status"] == "COMPLETED").all(), cov["error"].tolist()
    assert (cov["wall_s"] > cov["submit_s"]).all() and cov["dispatch_id"].notna().all()

    section = pertask_section(tmp_path)
    assert section.startswith("## What one task costs")
    assert (tmp_path / PERTASK_SUMMARY_CSV).exists()
    for name in (PLOTS["time"], PLOTS["cost"]):
        assert (tmp_path / name).stat().st_size > 0 and f"]({name})" in section


@pytest.mark.slow
def test_timed_out_dispatch_is_recorded_and_larger_n_skipped(covalent_server,
                                                             tmp_path: Path) -> None:
    # A timeout of 0 s expires at the first status check, whatever the machine's speed.
    plan = PertaskPlan(executors=("local",), shapes=("chain",), sleeps=(0.0,), sizes=(1, 10),
                       rounds=2, timeout_s=0)
    run_pertask(tmp_path, plan, covalent_address=covalent_server.address)
    df = load_pertask(tmp_path)
    cov = df[df["mode"] == "covalent"]
    assert cov[["n", "status"]].values.tolist() == [[1, "TIMEOUT"], [10, "SKIPPED"]]
    timed_out, skipped = cov.iloc[0], cov.iloc[1]
    assert timed_out["dispatch_id"] and "after 0 s; cancelled" in timed_out["error"]
    assert skipped["error"].startswith("n=1 round 0 ended TIMEOUT")
    # Round 1 of n=1 ran plain only; nothing ran at n=10, where no executor was left.
    assert df[df["mode"] == "plain"]["n"].tolist() == [1, 1]
    summary = pertask_summary(df)
    assert summary.loc[0, "max_n_completed"] == 0 and summary.loc[0, "skipped_n"] == "10"
