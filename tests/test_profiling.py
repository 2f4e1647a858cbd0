"""Profiled rounds (--bench-stacks, issue 19): planned beside the timed runs, flagged and
kept out of every figure; on a real server, the profiles name the functions of each part,
trace.json is a valid trace, the report shows the section, the flame graph and what
sampling cost; a machine where py-spy cannot attach gets one line and the runs go on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pandas as pd
import pytest
from test_stacks import TRACE_SCHEMA

from bench.config.profiles import load_profile
from bench.engine import Settings, SetupError, plan
from bench.records import PROFILED, RunRecord
from bench.run.profiling import Profiler

REPO = Path(__file__).resolve().parents[1]


def test_profiled_twins_close_the_first_measured_rounds() -> None:
    profile = load_profile(None, ["rounds=3", "warmup_rounds=1", "executors=['local']"],
                           workload="chain")
    cases = plan(profile, Settings(out_dir=Path("."), stacks=2))
    per_round: dict[int, list[str]] = {}
    for case in cases:
        per_round.setdefault(case.round, []).append(case.label)
    assert per_round[0] == ["plain", "local"]  # the warm-up round: never profiled
    # The round's timed runs back to back, as without profiling; then their twins.
    assert per_round[1] == ["plain", "local", "plain-stacks", "local-stacks"]
    assert per_round[2] == per_round[1]
    assert per_round[3] == ["plain", "local"] or per_round[3] == ["local", "plain"]
    with pytest.raises(SetupError, match="interleaved order"):
        plan(profile, Settings(out_dir=Path("."), stacks=1, order="grouped"))


def test_a_process_py_spy_cannot_sample_is_one_line_and_the_run_goes_on(tmp_path: Path
                                                                         ) -> None:
    notes: list[str] = []
    sleeper = subprocess.Popen(["sleep", "30"])  # no Python interpreter to attach to
    try:
        profiler = Profiler(tmp_path, notes.append)
        for _ in range(2):
            records, hot = profiler.run({"client": sleeper.pid}, lambda: [
                RunRecord("plain", "", 0.01, run_id="r", status="COMPLETED")])
            assert [r.flags for r in records] == [PROFILED] and hot == []
    finally:
        sleeper.kill()
        sleeper.wait()
    assert len(notes) == 1 and notes[0].startswith("stacks not sampled: ")
    assert "\n" not in notes[0] and "the runs go on" in notes[0]


@pytest.mark.slow
def test_profiled_rounds_name_the_functions_of_each_part(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "bench", "--benchmark-only", "-q", "-p",
         "no:cacheprovider", "--bench-workload", "chain", "--bench-arg", "n=2",
         "--bench-arg", "sleep_s=0.4",
         "--bench-set", "rounds=2", "--bench-set", "warmup_rounds=0", "--bench-set",
         "executors=['local', 'dask']", "--bench-stacks", "2", "--bench-out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    runs = pd.read_csv(out / "runs.csv")
    marked = runs["flags"].fillna("") == PROFILED
    assert marked.sum() == 6 and (runs.loc[marked, "status"] == "COMPLETED").all()
    # Never in a figure: the summary stands on the two timed rounds only.
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["plain_rounds"]) == {2} and set(summary["covalent_rounds"]) == {2}

    hot = pd.read_csv(out / "hotspots.csv")
    assert set(hot["run_id"]) == set(runs.loc[marked, "run_id"])
    cov = hot[hot["mode"] == "covalent"]
    for executor in ("local", "dask"):
        mine = cov[cov["executor"] == executor]
        # The client's submit: Covalent's own code, serialization and HTTP are named.
        submit = mine[(mine["part"] == "submit") & (mine["role"] == "client")]
        assert {"covalent", "HTTP"} & set(submit["category"]), submit["category"].tolist()
        # The tasks' own time runs in a worker process, in the chain's task function.
        in_task = mine[(mine["part"] == "in_task") & (mine["role"] == "worker")]
        assert "step" in set(in_task["function"]), in_task.head(10).to_dict()
        # The named functions cover the part: top 15 by self time, per run and role.
        for part in ("submit", "in_task"):
            rows = mine[mine["part"] == part]
            for _, group in rows.groupby(["run_id", "role"]):
                top = group.nlargest(15, "self_s")["self_s"].sum()
                assert top >= 0.8 * group["part_s"].iloc[0], (executor, part,
                                                              group.head(20).to_dict())
    for run_id in set(cov["run_id"]):
        run_dir = out / "stacks" / run_id
        jsonschema.validate(json.loads((run_dir / "trace.json").read_text()), TRACE_SCHEMA)
        assert list(run_dir.glob("speedscope-server-*.json"))
        assert list(run_dir.glob("pyspy-client-*.chrometrace.json"))

    from bench.report.page import main as report_main

    assert report_main(["--in", str(out)]) == 0
    page = (out / "README.md").read_text()
    assert "## Where the time goes, by function" in page and "flame.png" in page
    assert "### What sampling cost" in page
    assert (out / "flame.png").stat().st_size > 10_000
    cost = pd.read_csv(out / "stacks_cost.csv")
    assert {"plain", "local", "dask"} <= set(cost["executor"]) and (cost["rounds"] == 2).all()


@pytest.mark.parametrize("n", [2, 3, 4])
def test_environments_take_every_position_and_follow_every_other_equally_often(
        tmp_path: Path, n: int) -> None:
    names = [f"e{i}" for i in range(n)]
    profile_path = tmp_path / "envs.toml"
    profile_path.write_text('workload = "chain"\nrounds = 12\nexecutors = ["local"]\n' + "".join(
        f'[[environments]]\nname = "{e}"\nrequirement = "covalent==0.240.0"\n' for e in names))
    profile = load_profile(str(profile_path), [], workload=None)
    per_round: dict[int, list[str]] = {}
    for case in plan(profile, Settings(out_dir=Path("."))):
        if case.mode == "covalent":
            per_round.setdefault(case.round, []).append(case.environment)
    assert per_round[0] == names  # the first round as the profile lists them
    cycle = 2 * n if n % 2 else n
    positions = {(o.index(e), e) for o in per_round.values() for e in o}
    assert len(positions) == n * n  # each environment in every position ...
    orders = [per_round[r] for r in range(cycle)]
    follows = [(o[i - 1], o[i]) for o in orders for i in range(1, n)]
    counts = {pair: follows.count(pair) for pair in follows}
    assert len(counts) == n * (n - 1) and len(set(counts.values())) == 1, counts  # ... after each
    for o in orders:
        assert sorted(o) == names
