"""The envelope: its graph workload (any task count, shape, fan-in, bytes, nesting), the
census a prediction reads from a graph, the fitted model and the growth test."""

from __future__ import annotations

import json
from pathlib import Path

import covalent as ct
import numpy as np
import pandas as pd
import pytest

from bench.adapters import covalent_api
from bench.analysis.decompose import numeric_outputs
from bench.analysis.envelope import (
    FEATURES,
    SWEEP_WORKLOAD,
    StoredEnvelope,
    envelope_runs,
    features,
    fit,
    fits,
    growth,
    measured_against_predicted,
    task_count_series,
)
from bench.analysis.soak import SOAK_MIN_RUNS
from bench.config.profiles import ProfileError, load_profile, profile_from_doc
from bench.engine import Settings, plan
from bench.records import NoRecordsError
from bench.run.runner import measure_covalent_batch, measure_plain
from bench.workloads import WorkloadError, workload_for
from bench.workloads.base import CENSUS_KEYS
from bench.workloads.lattice import LatticeWorkload
from bench.workloads.pertask import layered_value

GRAPH = workload_for("graph")


@ct.electron
def _needs_the_cluster(x: int) -> int:
    raise RuntimeError("needs the cluster's GPU")


@ct.electron
def _plus_one(x: int) -> int:
    return x + 1


@ct.lattice
def _runs_only_remotely(x: int = 1) -> int:
    return _plus_one(_needs_the_cluster(x))


MB = 1_000_000


@ct.electron
def _array(n: int) -> np.ndarray:
    return np.zeros(n, dtype=np.uint8)


@ct.electron
def _halves(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x[: len(x) // 2].copy(), x[len(x) // 2:].copy()


@ct.electron
def _total(parts: dict) -> int:
    return sum(len(v) for v in parts.values())


@ct.lattice
def _inner(n: int) -> np.ndarray:
    return _array(n)


@ct.lattice
def _generated_nodes(n: int = MB) -> int:
    first, second = _halves(_array(n))  # two items unpacked from one output
    return _total({"a": first, "b": second, "c": ct.electron(_inner)(n)})


def _census(**params: int) -> dict[str, int]:
    return GRAPH.census(GRAPH.check(params))


@pytest.mark.parametrize("params", [{"tasks": 1}, {"tasks": 6, "width": 1},
                                    {"tasks": 12, "width": 4, "fan_in": 3},
                                    {"tasks": 2, "width": 1, "nesting": 2}])
def test_plain_run_returns_the_checksum(params: dict, tmp_path: Path) -> None:
    full = GRAPH.check(params)
    record = measure_plain(GRAPH, full, tmp_path)
    assert record.status == "COMPLETED", record.error
    assert record.outcome.metrics["correct"]
    depth = -(-full["tasks"] // full["width"])
    assert record.outcome.metrics["tasks"] == depth * full["width"] + 1  # + the gather


def test_census_counts_what_the_graph_holds() -> None:
    fan = _census(tasks=10)
    assert fan["tasks"] == 11 and fan["sublattices"] == 0
    chain = _census(tasks=10, width=1)
    assert chain["tasks"] == 11
    dense = _census(tasks=10, width=5, fan_in=5)
    # one later layer of 5 tasks, each fed by 4 more: 20 more edges
    assert dense["edges"] == _census(tasks=10, width=5, fan_in=1)["edges"] + 20
    heavy = _census(tasks=2, width=1, payload_bytes=1_000_000)
    # the two tasks' megabyte each, as Covalent stores it: pickled, in base64 (4/3), and a
    # repr, which for an array is one short line (a `bytes` payload's was 4 bytes a byte)
    light = _census(tasks=2, width=1)["output_bytes"]
    assert 2_000_000 * 4 / 3 < heavy["output_bytes"] - light < 2_000_000 * 1.4
    # ... and stored again by the two :electron_list: nodes Covalent adds, one per list
    # argument (combine's, gather's), each the list of its parents' outputs
    assert 2_000_000 * 4 / 3 < heavy["generated_bytes"] < 2_000_000 * 1.4 + 20_000
    assert features(heavy)["mb"] == pytest.approx(
        (heavy["output_bytes"] + heavy["input_bytes"] + heavy["generated_bytes"]) / 1e6)
    # a list of four parents stores what all four returned
    assert _census(tasks=32, width=16, fan_in=4)["generated_bytes"] \
        > 3 * _census(tasks=32, width=16, fan_in=1)["generated_bytes"] / 2
    # depth: a chain's tasks run one after another, a fan-out's side by side
    assert chain["depth"] > fan["depth"] + 8 and fan["nodes"] == chain["nodes"]
    assert _census(tasks=12, width=4)["depth"] < _census(tasks=12, width=2)["depth"]
    nested = _census(tasks=2, width=1, nesting=2)
    assert nested["sublattices"] == 2 and nested["tasks"] == 3
    assert nested["nodes"] > _census(tasks=2, width=1)["nodes"]  # the sublattices' graphs
    # a sublattice runs its whole graph before its parent goes on: its depth is added
    assert nested["depth"] > _census(tasks=2, width=1, nesting=1)["depth"] \
        > _census(tasks=2, width=1)["depth"]
    assert features(nested)["dispatches"] == 3


def test_bad_shapes_are_explained() -> None:
    with pytest.raises(WorkloadError, match="width .5. cannot exceed tasks .3."):
        GRAPH.check({"tasks": 3, "width": 5})
    with pytest.raises(WorkloadError, match="fan_in .4. cannot exceed width .2."):
        GRAPH.check({"tasks": 4, "width": 2, "fan_in": 4})
    with pytest.raises(WorkloadError, match="payload_bytes must be an integer >= 0"):
        GRAPH.check({"payload_bytes": -1})
    assert GRAPH.check({"payload_bytes": 1e6})["payload_bytes"] == 1_000_000
    assert layered_value(4, 2, 2) == 4


def test_envelope_profile_plans_the_sweep() -> None:
    profile = load_profile("envelope", data_dir="/mnist")
    params = [s.params for s in profile.scenarios if s.workload.name == SWEEP_WORKLOAD]
    assert max(p["tasks"] for p in params if p["width"] == p["tasks"]) >= 1000
    assert {p["payload_bytes"] for p in params} >= {1000, 100_000_000}
    assert {p["nesting"] for p in params} >= {0, 3}
    assert len({p["fan_in"] for p in params}) >= 3
    # and, on the same servers, a load ramp to the knee and a soak the report can judge
    load = [s for s in profile.scenarios if s.part == "load"]
    assert len({s.concurrency for s in load}) >= 4 and {s.ramp for s in load} == {"until-knee"}
    (soak,) = [s for s in profile.scenarios if s.part == "soak"]
    assert soak.rounds >= SOAK_MIN_RUNS and soak.concurrency == 1


def _synthetic_sweep(coef: dict[str, float], power: float = 1.0, seed: int = 0
                     ) -> pd.DataFrame:
    """Runs whose orchestration follows coef (nodes to the given power) with 5 % noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, (nodes, edges, mb, subs, depth) in enumerate(
            [(3, 3, 0.01, 0, 2), (30, 40, 0.01, 0, 3), (300, 400, 0.1, 0, 3),
             (900, 1200, 0.4, 0, 4), (3000, 4000, 1.5, 0, 4), (30, 60, 0.01, 0, 20),
             (60, 300, 0.02, 0, 8), (15, 20, 100, 0, 5), (15, 20, 10, 0, 5),
             (20, 25, 0.02, 1, 6), (30, 35, 0.03, 2, 9), (200, 900, 0.1, 0, 60),
             (300, 500, 0.1, 0, 200)]):
        feats = {"dispatches": 1 + subs, "nodes": nodes, "edges": edges, "mb": mb,
                 "depth": depth}
        mean = (coef["dispatches"] * feats["dispatches"] + coef["nodes"] * nodes ** power
                + coef["edges"] * edges + coef["mb"] * mb + coef.get("depth", 0) * depth)
        for r in range(3):
            rows.append({"environment": "e", "executor": "local", "config_id": f"c{i}",
                         "round": r, "orchestration_s": mean * rng.normal(1, 0.05), **feats})
    return pd.DataFrame(rows)


def test_fit_recovers_known_costs_within_its_intervals() -> None:
    truth = {"dispatches": 2.5, "nodes": 0.08, "edges": 0.01, "mb": 0.05, "depth": 0.04}
    covered = dict.fromkeys(FEATURES, 0)
    for seed in range(40):  # 95 % intervals: each should hold the truth in most sweeps
        found = fit(_synthetic_sweep(truth, seed=seed), "e", "local")
        for name in FEATURES:
            est, low, high = found.coefficients[name]
            covered[name] += low <= truth[name] <= high
    assert all(n >= 32 for n in covered.values()), covered  # >= 80 % of 40
    found = fit(_synthetic_sweep(truth), "e", "local")
    assert found.r2 > 0.95
    point, low, high = found.predict({"dispatches": 1, "nodes": 100, "edges": 120, "mb": 1,
                                      "depth": 10})
    expected = 2.5 + 8 + 1.2 + 0.05 + 0.4
    assert low < expected < high and abs(point - expected) / expected < 0.1


def test_growth_names_superlinear_cost_and_not_linear_cost() -> None:
    series = {"fan-out": ["c0", "c1", "c2", "c3", "c4"]}
    linear = growth(_synthetic_sweep({"dispatches": 2, "nodes": 0.1, "edges": 0, "mb": 0}),
                    series)
    assert len(linear) == 1 and not linear[0].superlinear
    worse = growth(_synthetic_sweep({"dispatches": 2, "nodes": 0.002, "edges": 0, "mb": 0},
                                    power=1.5), series)
    assert worse[0].superlinear and worse[0].last[1] > 3 * worse[0].first[1]
    assert "grows worse than linearly" in worse[0].sentence()


def test_a_sessions_graph_is_predicted_by_the_fit_of_its_release_and_executor() -> None:
    truth = {"dispatches": 2.5, "nodes": 0.08, "edges": 0.01, "mb": 0.05}
    sweep = _synthetic_sweep(truth).assign(environment="rel-a")
    envelope = StoredEnvelope("sweep", sweep, {"rel-a": "0.240.0"})
    census = {"nodes": 100, "edges": 120, "tasks": 30, "sublattices": 0,
              "output_bytes": 600_000, "input_bytes": 300_000, "generated_bytes": 100_000,
              "depth": 10}
    expected = 2.5 + 8 + 1.2 + 0.05
    runs = pd.DataFrame([
        {"config_id": "mine", "mode": "plain", "environment": "", "covalent": "",
         "outputs": json.dumps({**census, "value": 1})},
        {"config_id": "mine", "mode": "covalent", "environment": "", "covalent": "0.240.0",
         "outputs": json.dumps({"value": 1})},
        {"config_id": "mine", "mode": "covalent", "environment": "old", "covalent": "0.238.0",
         "outputs": json.dumps({"value": 1})}])
    rounds = pd.DataFrame([{"config_id": "mine", "executor": ex, "round": r,
                            "orchestration_s": s}
                           for ex, values in (("local", (expected, expected * 1.1, 0.9 *
                                                         expected)),
                                              ("old:local", (5.0, 5.0, 5.0)))
                           for r, s in enumerate(values)])
    table = measured_against_predicted(rounds, runs, envelope).set_index("environment")
    mine = table.loc[""]  # this interpreter's 0.240.0: the fit of rel-a, which runs it
    assert mine["envelope_environment"] == "rel-a" and mine["rounds"] == 3
    assert mine["measured_orchestration_s"] == pytest.approx(expected)
    assert abs(mine["error_pct"]) < 10 and mine["inside_interval"]
    assert mine["mb"] == pytest.approx(1.0)
    old = table.loc["old"]  # no fit of 0.238.0 in this envelope: said, not guessed
    assert pd.isna(old["predicted_orchestration_s"])
    assert "no fit for covalent 0.238.0 [local]" in old["note"]


def test_too_few_runs_to_fit_are_refused() -> None:
    sweep = _synthetic_sweep({"dispatches": 2, "nodes": 0.1, "edges": 0, "mb": 0}).head(4)
    with pytest.raises(ValueError, match="4 runs, too few to fit 5 coefficients"):
        fit(sweep, "e", "local")
    # Enough runs, but edges always twice the nodes: their costs cannot be told apart.
    tied = _synthetic_sweep({"dispatches": 2, "nodes": 0.1, "edges": 0, "mb": 0})
    tied = tied.assign(edges=2 * tied["nodes"])
    with pytest.raises(ValueError, match="do not vary .* independently"):
        fit(tied, "e", "local")
    assert fits(tied) == []


@pytest.mark.slow
def test_dispatched_graph_records_its_census(covalent_server, tmp_path: Path) -> None:
    full = GRAPH.check({"tasks": 4, "width": 2, "fan_in": 2, "nesting": 1,
                        "payload_bytes": 1000})
    plain = measure_plain(GRAPH, full, tmp_path)
    (cov,) = measure_covalent_batch(GRAPH, full, executor="local",
                                    address=covalent_server.address, probe_dir=tmp_path)
    assert cov.status == "COMPLETED", cov.error
    assert cov.outcome.digest == plain.outcome.digest and cov.outcome.metrics["correct"]
    # The census is the plain run's (one per configuration, after its clock).
    assert plain.outcome.metrics["sublattices"] == 1 and "nodes" not in cov.outcome.metrics
    assert plain.outcome.metrics["tasks"] == 5  # 4 + the gather
    rounds = pd.DataFrame([{"config_id": "g", "executor": "local", "round": 0,
                            "orchestration_s": cov.wall_s}])
    runs = pd.DataFrame([{"config_id": "g", "outputs": json.dumps(m)}
                         for m in (plain.outcome.metrics, cov.outcome.metrics)])
    sweep = envelope_runs(rounds, runs)
    assert sweep.loc[0, "dispatches"] == 2 and sweep.loc[0, "executor"] == "local"


def test_a_users_plain_run_records_its_graphs_census(tmp_path: Path) -> None:
    workload = workload_for("examples.fanout:fanout_workflow")
    params = workload.check({"n": 3, "size": 100})
    record = measure_plain(workload, params, tmp_path)
    assert record.status == "COMPLETED", record.error
    assert record.outcome.metrics["tasks"] == 4 and record.outcome.metrics["sublattices"] == 0
    assert record.outcome.metrics["nodes"] > 4 and record.outcome.metrics["output_bytes"] > 0
    # The census describes the graph: it is never summarized as one of the run's results.
    frame = pd.DataFrame([{"workload": workload.name,
                           "outputs": json.dumps(record.outcome.metrics),
                           **record.outcome.metrics}])
    assert not set(numeric_outputs(frame)) & {"nodes", "edges", "tasks", "output_bytes"}
    # A workflow's own result of one of those names stays a result: a chain returns how
    # many tasks it ran (summary columns plain_tasks and covalent_tasks).
    chain = pd.DataFrame([{"workload": "chain", "outputs": json.dumps({"tasks": 10}),
                           "tasks": 10}])
    assert numeric_outputs(chain) == ["tasks"]


@ct.electron
def _counted(x: int, log: str) -> int:
    with open(log, "a") as f:  # the plain run may run a copy of this module (by value)
        f.write(f"{x}\n")
    return x + 1


@ct.lattice
def _counted_flow(log: str, n: int = 3) -> list:
    return [_counted(i, log) for i in range(n)]


def test_the_census_is_read_from_the_measured_plain_run_not_from_one_more(tmp_path: Path
                                                                           ) -> None:
    """A user's training is not run once more to read its graph: the first plain run of a
    configuration carries the census (its work after the run's clock), later ones need none."""
    log = tmp_path / "calls"
    workload = LatticeWorkload(_counted_flow)
    params = workload.check({"log": str(log), "n": 3})

    def calls() -> list[str]:
        return log.read_text().split()

    first = measure_plain(workload, params, tmp_path)
    assert first.status == "COMPLETED", first.error
    assert calls() == ["0", "1", "2"]  # one run's tasks, once
    assert first.outcome.metrics["tasks"] == 3 and first.outcome.metrics["nodes"] > 3
    assert first.outcome.metrics["output_bytes"] > 0 and first.tasks_probed == "3/3"
    second = measure_plain(workload, params, tmp_path)
    assert calls() == ["0", "1", "2"] * 2
    census = {k: first.outcome.metrics[k] for k in CENSUS_KEYS}
    assert {k: second.outcome.metrics[k] for k in CENSUS_KEYS} == census
    # the same as a census read by a plain run of its own
    assert covalent_api.graph_census(_counted_flow, (), {"log": str(log), "n": 3}) == census


def test_the_census_counts_the_outputs_of_the_nodes_covalent_adds() -> None:
    """Unpacked items, a dict argument (a dict node over two list nodes: keys and values),
    a sublattice's result and the postprocess node's are stored besides the tasks' outputs."""
    found = covalent_api.graph_census(_generated_nodes, (), {"n": MB})
    stored = len(ct.TransportableObject(np.zeros(MB, dtype=np.uint8)).serialize())
    # tasks: the array (1 MB), its halves (1 MB), the sublattice's array (1 MB), the total
    assert 3 * stored - 10_000 < found["output_bytes"] < 3 * stored + 10_000
    # the two halves unpacked (1 MB); the dict's values list (2 MB: the two halves and the
    # sublattice's array) and the dict over it and its keys list (2 MB); the sublattice's
    # result in this graph (1 MB) and in its own, its postprocess node's (1 MB)
    assert 7 * stored - 20_000 < found["generated_bytes"] < 7 * stored + 20_000
    assert found["tasks"] == 4 and found["sublattices"] == 1


def test_a_census_is_estimated_from_the_graph_where_the_plain_run_fails() -> None:
    found = covalent_api.graph_census(_runs_only_remotely, (), {"x": 1})
    assert found["estimated"] == 1 and "needs the cluster's GPU" in found["estimate_reason"]
    assert found["tasks"] == 2 and found["sublattices"] == 0 and found["output_bytes"] == 0
    # the parameter, the two tasks and the postprocess node Covalent adds, as built
    assert found["nodes"] == 4 and found["edges"] == 5
    assert found["input_bytes"] > 0


def test_a_graph_that_cannot_be_read_is_a_note_not_a_failed_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workload = workload_for("examples.fanout:fanout_workflow")
    params = workload.check({"n": 2, "size": 10})

    def unreadable(*_: object, **__: object) -> None:
        raise RuntimeError("no graph here")

    monkeypatch.setattr(covalent_api, "transport_graph", unreadable)
    record = measure_plain(workload, {**params, "seed": 99}, tmp_path)
    assert record.status == "COMPLETED" and record.wall_s > 0
    assert "no graph here" in record.outcome.metrics["census_error"]


def test_task_count_series_are_the_graphs_that_differ_only_in_size() -> None:
    def row(config_id: str, **p: int) -> dict:
        full = GRAPH.check(p)
        return {"workload": "graph", "config_id": config_id, "params": json.dumps(full)}

    runs = pd.DataFrame([row("f100", tasks=100), row("f1", tasks=1), row("f10", tasks=10),
                         row("c30", tasks=30, width=1), row("c10", tasks=10, width=1),
                         row("b", tasks=4, width=1, payload_bytes=1000),
                         row("n", tasks=4, width=1, nesting=1),
                         row("d", tasks=64, width=16, fan_in=4)])
    assert task_count_series(runs) == {"fan-out": ["f1", "f10", "f100"],
                                       "chain": ["f1", "c10", "c30"]}


def _records(out: Path, workload: str, graphs: dict[str, tuple[dict, float]],
             environment: str = "", covalent: str = "0.240.0") -> None:
    """A session in the real schema (the records writers): per configuration its census
    (on the plain rows) and Covalent walls of `orchestration` + 0.1 s of task time."""
    from bench.records import phases_writer, runs_writer

    runs, phases = runs_writer(out), phases_writer(out)
    for config_id, (census, orchestration) in graphs.items():
        for rnd in range(3):
            jitter = 1 + 0.03 * (rnd - 1)
            for mode, executor, outputs, wall in (
                    ("plain", "", {**census, "value": 1}, 0.1),
                    ("covalent", "local", {"value": 1}, 0.1 + orchestration * jitter)):
                run_id = f"{config_id}-{mode}-{rnd}"
                runs.append({"timestamp": "2026-12-02T00:00:00+00:00", "session_id": "s",
                             "profile": "p", "workload": workload, "config_id": config_id,
                             "params": json.dumps({"k": config_id}), "mode": mode,
                             "executor": executor, "environment": environment if executor
                             else "", "round": rnd, "warmup": False, "wall_s": wall,
                             "status": "COMPLETED", "output_digest": "d",
                             "outputs": json.dumps(outputs), "covalent": covalent,
                             "run_id": run_id})
                phases.append({"session_id": "s", "run_id": run_id, "config_id": config_id,
                               "mode": mode, "executor": executor, "round": rnd,
                               "phase": "in_task", "task": "t", "start_s": 0.0,
                               "duration_s": 0.1})


def test_a_byo_report_sets_the_envelopes_prediction_beside_the_measurement(
        tmp_path: Path) -> None:
    from bench.report import make_report

    def census(nodes: int, edges: int, mb: float = 0.01, subs: int = 0, depth: int = 3
               ) -> dict:
        return {"nodes": nodes, "edges": edges, "tasks": nodes // 3, "sublattices": subs,
                "output_bytes": int(mb * 1e6), "input_bytes": 0, "generated_bytes": 0,
                "depth": depth}

    cost = {"dispatches": 0.8, "nodes": 0.05, "edges": 0.01, "mb": 0.02, "depth": 0.03}

    def orchestration(c: dict) -> float:
        f = features(c)
        return sum(cost[k] * f[k] for k in FEATURES)

    shapes = [census(*s) for s in ((3, 3), (30, 40), (300, 400), (60, 300), (15, 20, 100),
                                   (20, 25, 0.02, 1), (30, 35, 0.03, 2), (200, 900),
                                   (100, 150, 0.01, 0, 60), (40, 60, 0.01, 0, 20))]
    _records(tmp_path / "envelope", "graph",
             {f"graph-{i}": (c, orchestration(c)) for i, c in enumerate(shapes)},
             environment="rel", covalent="0.240.0")
    mine = census(40, 50, 0.5)
    _records(tmp_path / "mine", "examples.fanout:fanout_workflow",
             {"fanout-n=12": (mine, orchestration(mine) * 1.05)})
    report = make_report(tmp_path / "mine", envelope_dir=tmp_path / "envelope")
    table = pd.read_csv(tmp_path / "mine" / "predicted.csv")
    (row,) = table.to_dict("records")
    assert row["envelope_environment"] == "rel" and row["inside_interval"]
    assert row["error_pct"] == pytest.approx(100 * (1 / 1.05 - 1), abs=2)
    page = report.page.read_text()
    assert "## Predicted from the envelope" in page
    assert f"the envelope in {tmp_path / 'envelope'} predicts" in page
    assert "1 of 1 point predictions within ±25 %" in page
    finding = next(line for line in page.splitlines() if "The envelope predicted" in line)
    assert "−5 % off the" in finding and "1 of 1 measurements fall inside" in finding
    # An envelope named but holding none: a clear error, not an empty section.
    with pytest.raises(NoRecordsError, match="no measured run of the `graph` workload"):
        make_report(tmp_path / "mine", envelope_dir=tmp_path / "mine")


def test_a_reference_graph_scales_the_prediction_to_this_sessions_speed(
        tmp_path: Path) -> None:
    """A host twice as slow as in the envelope's session (everything costs x 2): unscaled,
    the prediction is half the measurement; scaled by the reference graph run in the same
    session, it is right, and its interval holds the measurement. The envelope read back
    from its report's envelope_runs.csv alone predicts the same."""
    import shutil

    from bench.report import make_report

    cost = {"dispatches": 0.8, "nodes": 0.05, "edges": 0.01, "mb": 0.02, "depth": 0.03}

    def orchestration(c: dict) -> float:
        f = features(c)
        return sum(cost[k] * f[k] for k in FEATURES)

    shapes = [_census(tasks=n, width=w) for n, w in ((1, 1), (10, 10), (30, 30), (3, 1),
                                                     (12, 1), (12, 4), (6, 2))]
    shapes += [_census(tasks=2, width=1, payload_bytes=10**7), _census(tasks=2, nesting=1),
               _census(tasks=2, nesting=2), _census(tasks=8, width=8, fan_in=4)]
    _records(tmp_path / "envelope", "graph",
             {f"graph-{i}": (c, orchestration(c)) for i, c in enumerate(shapes)},
             environment="rel", covalent="0.240.0")
    reference = _census(**GRAPH.reference)
    mine = _census(tasks=20, width=5)
    slow = 2.0
    _records(tmp_path / "mine", "graph", {"graph-width=10": (reference,
                                                             slow * orchestration(reference))})
    _records(tmp_path / "mine", "examples.fanout:fanout_workflow",
             {"fanout-n=20": (mine, slow * orchestration(mine))})
    make_report(tmp_path / "mine", envelope_dir=tmp_path / "envelope")
    (row,) = pd.read_csv(tmp_path / "mine" / "predicted.csv").to_dict("records")
    assert row["config_id"] == "fanout-n=20"  # the reference is a scale, not a prediction
    assert row["reference_rounds"] == 3
    assert row["reference_scale"] == pytest.approx(slow, rel=0.03)
    assert row["reference_scale_low"] < slow < row["reference_scale_high"]
    assert row["unscaled_predicted_s"] == pytest.approx(orchestration(mine), rel=0.03)
    assert abs(row["error_pct"]) < 3 and row["inside_interval"]
    # The envelope's report folder alone (envelope_runs.csv, as reports/sample-envelope).
    make_report(tmp_path / "envelope")
    stored = tmp_path / "stored"
    stored.mkdir()
    shutil.copy(tmp_path / "envelope" / "envelope_runs.csv", stored)
    make_report(tmp_path / "mine", envelope_dir=stored)
    (again,) = pd.read_csv(tmp_path / "mine" / "predicted.csv").to_dict("records")
    assert again["predicted_orchestration_s"] == pytest.approx(row["predicted_orchestration_s"])
    # Without the reference: the prediction says it is not scaled, and how to scale it.
    _records(tmp_path / "unscaled", "examples.fanout:fanout_workflow",
             {"fanout-n=20": (mine, slow * orchestration(mine))})
    make_report(tmp_path / "unscaled", envelope_dir=stored)
    (plain,) = pd.read_csv(tmp_path / "unscaled" / "predicted.csv").to_dict("records")
    assert plain["error_pct"] == pytest.approx(-50, abs=2)
    assert "run it with --bench-reference" in plain["note"]


def test_the_reference_graph_runs_with_the_sessions_settings() -> None:
    profile = load_profile(None, ["rounds=2", "executors=['local']"], ["n=4"],
                           workload="examples.fanout:fanout_workflow", reference=True)
    mine, ref = profile.scenarios
    assert ref.part == "reference" and ref.workload.name == "graph"
    assert ref.params == GRAPH.check(GRAPH.reference) and ref.id == "graph-width=10"
    assert (ref.rounds, ref.warmup_rounds, ref.executors) == (mine.rounds,
                                                              mine.warmup_rounds, ("local",))
    # Its rounds spread among the session's, its warm-up first: scaled by it, a prediction
    # meets the host's speed of the measurement's minutes (it drifts within an hour).
    two = load_profile(None, ["rounds=4", "warmup_rounds=1", "executors=['local']"],
                       ["n=[2, 4]"], workload="examples.fanout:fanout_workflow",
                       reference=True)
    order = [(c.scenario.id, c.round) for c in plan(two, Settings(out_dir=Path(".")))
             if c.mode == "covalent"]
    assert [r for r in order if r[0] == "graph-width=10"] == [("graph-width=10", r)
                                                              for r in range(5)]
    where = [i for i, (cid, _) in enumerate(order) if cid == "graph-width=10"]
    assert where[0] == 0 and where == [0, 3, 6, 9, 12]  # one after every two rounds
    assert len(order) == 15 and order[-1][0] != "graph-width=10"
    # A lattice with inputs of its own: they are not the reference graph's.
    with_inputs = load_profile(None, workload="examples.tutorial_seed:workflow",
                               inputs="examples.tutorial_seed:inputs", reference=True)
    assert [s.workload.name for s in with_inputs.scenarios][1] == "graph"
    with pytest.raises(ProfileError, match="reference must be true or false"):
        profile_from_doc("p", {"workload": "chain", "reference": "yes"})


def test_a_session_without_phases_or_census_gets_no_prediction_table() -> None:
    """A report made beside a stored envelope (reports/envelope is the default) of a session
    that took no census, or has no phases.csv (no orchestration), just has no such table."""
    sweep = _synthetic_sweep({"dispatches": 1, "nodes": 0.1, "edges": 0, "mb": 0})
    envelope = StoredEnvelope("sweep", sweep, {"e": "0.240.0"})
    census = {"nodes": 10, "edges": 9, "tasks": 3, "sublattices": 0, "output_bytes": 0,
              "input_bytes": 0, "generated_bytes": 0, "depth": 4}
    runs = pd.DataFrame([{"config_id": "c", "mode": "plain", "environment": "",
                          "covalent": "", "outputs": json.dumps(census)}])
    no_phases = pd.DataFrame([{"config_id": "c", "executor": "local", "round": 0,
                               "total_overhead_s": 2.0}])
    assert measured_against_predicted(no_phases, runs, envelope).empty
    no_census = runs.assign(outputs=json.dumps({"value": 1}))
    with_phases = no_phases.assign(orchestration_s=2.0)
    assert measured_against_predicted(with_phases, no_census, envelope).empty
