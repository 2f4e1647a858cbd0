"""Covalent at scale: under load (bench.analysis.load: errors by kind, throughput and
latency per level of dispatches in flight, the knee) and in a soak (bench.analysis.soak:
what grows dispatch after dispatch); and the report's sections from records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import records as R
from bench.analysis.load import error_kind, knee, knee_sentence, load_table, ramp_stop
from bench.analysis.soak import SOAK_MIN_RUNS, soak_growth, soak_runs, soak_sentence


@pytest.mark.parametrize("status,error,kind", [
    ("COMPLETED", "", None),
    (R.TIMEOUT, "the dispatch outlived 600 s", "timeout"),
    ("FAILED", "sqlite3.OperationalError: database is locked", "database locked"),
    ("FAILED", "HTTPError: 500 Server Error: Internal Server Error for url", "HTTP 500"),
    ("FAILED", "requests.exceptions.HTTPError: status code 503", "HTTP 503"),
    ("FAILED", "OSError: [Errno 24] Too many open files", "too many open files"),
    (R.ERROR, "ConnectionError: Max retries exceeded with url: /api/v2/dispatches",
     "connection"),
    ("FAILED", "ValueError: a task raised", "other"),
    (R.INTERRUPTED, "SIGTERM", "interrupted"),
])
def test_error_kinds(status: str, error: str, kind: str | None) -> None:
    assert error_kind(status, error) == kind


def _runs(levels: dict[int, tuple[float, list[str]]], executor: str = "local",
          rounds: int = 2) -> pd.DataFrame:
    """Covalent runs of a sweep: per level N, (batch wall, statuses of its N runs) in each
    round, the i-th result in hand at (i + 1) / N of the batch's wall."""
    rows = []
    for n, (wall, statuses) in levels.items():
        for r in range(rounds):
            for i, status in enumerate(statuses):
                rows.append({
                    "session_id": "s", "config_id": "chain" + (f"-n{n}" if n > 1 else ""),
                    "mode": "covalent", "executor": executor, "environment": "",
                    "round": r + 1, "warmup": False, "concurrency": n,
                    "status": status, "tasks_probed": "10/10",
                    "error": "" if status == "COMPLETED" else "database is locked",
                    "batch_wall_s": wall, "latency_s": wall * (i + 1) / n})
    return pd.DataFrame(rows)


def test_throughput_latency_and_errors_per_level() -> None:
    runs = _runs({1: (2.0, ["COMPLETED"]), 4: (4.0, ["COMPLETED"] * 4),
                  8: (8.0, ["COMPLETED"] * 6 + ["FAILED"] * 2)})
    runs = pd.concat([runs, runs.assign(warmup=True, round=0)])  # warm-up never counts
    table = load_table(runs).set_index("concurrency")
    assert list(table.index) == [1, 4, 8]
    assert table.loc[1, "dispatches_per_s"] == pytest.approx(0.5)  # 2 runs in 2 x 2 s
    assert table.loc[4, "dispatches_per_s"] == pytest.approx(1.0)  # 8 in 8 s
    assert table.loc[4, "tasks_per_s"] == pytest.approx(10.0)
    assert table.loc[8, "dispatches_per_s"] == pytest.approx(12 / 16)  # only completed
    assert (table.loc[8, "dispatches"], table.loc[8, "completed"]) == (16, 12)
    assert table.loc[8, "errors: database locked"] == 4 and table.loc[4, "errors"] == 0
    assert table.loc[4, "latency_p50_s"] == pytest.approx(2.5)  # 1, 2, 3, 4 s, twice
    assert table.loc[4, "latency_max_s"] == pytest.approx(4.0)
    assert table.loc[4, "latency_p95_s"] == pytest.approx(4.0)
    assert table.loc[4, "rounds"] == 2


def test_the_knee_is_saturation_or_errors_and_none_is_said_so() -> None:
    flat = _runs({1: (2.0, ["COMPLETED"]), 2: (2.0, ["COMPLETED"] * 2),
                  4: (4.0, ["COMPLETED"] * 4), 8: (7.9, ["COMPLETED"] * 8)})
    (row,) = knee(load_table(flat)).to_dict("records")
    # 0.5 -> 1.0 dispatches/s from 1 to 2, then 1.0 at 4: saturated at 4.
    assert (row["knee"], row["why"], row["below"]) == (4.0, "saturated", 2)
    assert knee_sentence(pd.Series(row)).startswith(
        "`local`: knee at 4 in flight: 1.00 → 1.00 dispatches/s from 2")
    # side by side, runs.csv as loaded names the environment in the executor: said once
    side = {**row, "environment": "0.238.0", "executor": "0.238.0:local"}
    assert knee_sentence(pd.Series(side)).startswith("`0.238.0:local`: knee at 4")
    failing = _runs({1: (2.0, ["COMPLETED"]), 2: (1.0, ["COMPLETED", "FAILED"])}, "dask")
    (row,) = knee(load_table(failing)).to_dict("records")
    assert (row["knee"], row["why"]) == (2.0, "errors")
    assert "errors from 2 in flight" in knee_sentence(pd.Series(row))
    # one noisy level that does not gain, then throughput rises again: not yet the knee
    noisy = _runs({1: (2.0, ["COMPLETED"]), 2: (4.1, ["COMPLETED"] * 2),
                   4: (4.0, ["COMPLETED"] * 4), 8: (8.0, ["COMPLETED"] * 8)})
    (row,) = knee(load_table(noisy)).to_dict("records")
    assert (row["knee"], row["below"]) == (8.0, 4)
    scaling = _runs({1: (2.0, ["COMPLETED"]), 2: (2.0, ["COMPLETED"] * 2),
                     4: (2.0, ["COMPLETED"] * 4)})
    (row,) = knee(load_table(scaling)).to_dict("records")
    assert np.isnan(row["knee"]) and row["top"] == 4
    assert knee_sentence(pd.Series(row)).startswith("`local`: no knee up to 4 in flight")


def _write_runs(directory: Path, runs: pd.DataFrame) -> None:
    runs = runs.assign(run_id=[f"r{i}" for i in range(len(runs))], workload="chain",
                       params='{"n": 10, "sleep_s": 0.0}', slot=0, output_digest="d",
                       outputs="{}", probes="on", flags="",
                       timestamp="2026-12-02T00:00:00+00:00")
    if "wall_s" not in runs:
        runs["wall_s"] = runs["latency_s"]
    writer = R.runs_writer(directory)
    for row in runs.to_dict("records"):
        writer.append(row)


def test_the_report_shows_the_load_section_from_records(tmp_path: Path) -> None:
    from bench.report.page import main as report_main

    runs = pd.concat([_runs({1: (2.0, ["COMPLETED"]), 2: (2.1, ["COMPLETED"] * 2),
                             4: (4.0, ["COMPLETED"] * 3 + ["FAILED"])}),
                      _runs({1: (2.0, ["COMPLETED"])}).assign(mode="plain", executor="")])
    _write_runs(tmp_path, runs.assign(profile="load"))
    assert report_main(["--in", str(tmp_path)]) == 0
    page = (tmp_path / "README.md").read_text()
    assert "## Under load" in page and "load.png" in page
    assert "`local`: errors from 4 in flight" in page
    assert "errors: database locked" in page
    assert (tmp_path / "load.png").stat().st_size > 10_000
    assert list(pd.read_csv(tmp_path / "load.csv")["concurrency"]) == [1, 2, 4]


def _soak(n: int, rss_per_run: float, seed: int = 3) -> pd.DataFrame:
    """n dispatches after a warm-up, one per round: the server's RSS rising by
    `rss_per_run` MB each (with noise), its open files flat, its database growing."""
    rng = np.random.default_rng(seed)
    k = np.arange(n + 1)
    return pd.DataFrame({
        "session_id": "s", "profile": "soak", "workload": "chain", "config_id": "chain",
        "mode": "covalent", "executor": "local",
        "environment": "", "round": k, "warmup": k == 0, "concurrency": 1,
        "status": "COMPLETED", "error": "", "tasks_probed": "10/10",
        "wall_s": 2.0 + rng.normal(0, 0.2, n + 1) + np.where(k % 17 == 5, 3.0, 0.0),
        "latency_s": 2.0, "batch_wall_s": 2.0,
        "server_rss_mb": 200 + rss_per_run * k + rng.normal(0, 1.0, n + 1),
        "server_open_files": 40.0, "server_db_mb": 0.5 + 0.01 * k})


def test_a_soak_says_what_grows_with_a_ci_and_what_does_not() -> None:
    runs = _soak(60, rss_per_run=0.3)
    assert soak_runs(runs.iloc[: SOAK_MIN_RUNS - 1], None).empty  # too short to be a soak
    rows = soak_growth(soak_runs(runs, None))
    growth = rows.set_index("metric")
    rss = growth.loc["server_rss_mb"]
    assert rss["dispatches"] == 60 and bool(rss["grows"])  # the warm-up is left out
    assert rss["ci_low_per_100"] < 30 < rss["ci_high_per_100"]
    # The odd slow run (+3 s every 17th) moves a Theil-Sen slope little: nothing grows.
    orch = growth.loc["orchestration_s"]
    assert not orch["grows"] and not orch["shrinks"], orch.to_dict()
    assert not growth.loc["server_open_files", "grows"]
    assert growth.loc["server_db_mb", "slope_per_100"] == pytest.approx(1.0)
    said = {r["metric"]: soak_sentence(r) for _, r in rows.iterrows()}
    assert said["server_rss_mb"].startswith("server RSS (MB): ") and said[
        "server_rss_mb"].endswith(": grows") and rss["first"] < rss["last"]
    assert said["orchestration_s"].endswith("no growth shown")
    flat = soak_growth(soak_runs(_soak(60, rss_per_run=0.0), None)).set_index("metric")
    assert not flat.loc["server_rss_mb", "grows"]


def test_the_report_shows_the_soak_section_from_records(tmp_path: Path) -> None:
    from bench.report.page import main as report_main

    runs = _soak(50, rss_per_run=0.3)
    plain = runs.assign(mode="plain", executor="", wall_s=0.001)
    _write_runs(tmp_path, pd.concat([runs, plain]).assign(profile="soak"))
    assert report_main(["--in", str(tmp_path)]) == 0
    page = (tmp_path / "README.md").read_text()
    assert "## Soak: dispatch after dispatch" in page and "soak.png" in page
    assert "`local`, server RSS (MB): " in page and ": grows" in page
    assert (tmp_path / "soak.png").stat().st_size > 10_000
    assert set(pd.read_csv(tmp_path / "soak.csv")["metric"]) >= {"server_rss_mb",
                                                                 "orchestration_s"}


def test_a_ramp_stops_at_errors_and_past_a_confirmed_knee() -> None:
    # (in flight, completed, runs, batch wall s) per measured batch
    rising = [(1, 1, 1, 2.0), (2, 2, 2, 2.2), (4, 4, 4, 2.6)]
    assert ramp_stop(rising) is None  # throughput still doubling
    failed = [*rising, (8, 6, 8, 5.0)]
    assert ramp_stop(failed) == "errors at 8 in flight (2 run(s) of a batch did not complete)"
    flat = [(1, 1, 1, 1.0), (2, 2, 2, 1.1), (4, 4, 4, 4.2), (8, 8, 8, 8.1)]
    assert ramp_stop(flat[:3]) is None  # one flat doubling is not yet a knee
    reason = ramp_stop(flat)
    assert reason and reason.startswith("past the knee: 1.82 -> 0.95 -> 0.99 dispatches/s")


def test_an_until_knee_ramp_skips_the_levels_past_its_stop(tmp_path: Path) -> None:
    from bench.config.profiles import ProfileError, load_profile
    from bench.engine import Engine, Settings, plan

    profile = load_profile("load", data_dir="/mnist", overrides=["ramp='until-knee'",
                                                                  "executors=['local']"])
    assert {s.ramp for s in profile.scenarios} == {"until-knee"}
    engine = Engine(profile, Settings(out_dir=tmp_path))
    cases = plan(profile, Settings(out_dir=tmp_path))
    by_level = {}
    for case in cases:
        by_level.setdefault((case.scenario.concurrency, case.mode), case)
    local = by_level[(4, "covalent")]
    key = (local.scenario.workload.config_id(local.scenario.params), local.label)
    engine._ramps[key] = [(1, 1, 1, 1.0), (2, 2, 2, 1.0), (4, 3, 4, 2.0)]  # 4: one failed
    assert engine.skip_reason(by_level[(4, "covalent")]) is None  # its level is under way
    assert engine.skip_reason(by_level[(8, "covalent")]).startswith(
        "ramp stopped: errors at 4 in flight")
    assert engine.skip_reason(by_level[(8, "plain")]).startswith("ramp stopped")
    with pytest.raises(ProfileError, match="ramp must be one of full, until-knee"):
        load_profile("load", data_dir="/mnist", overrides=["ramp='sometimes'"])
