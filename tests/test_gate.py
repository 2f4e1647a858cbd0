"""The regression gate: significant AND large, environment-aware, recorded in history."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.gate import judge
from bench.gate import main as gate_main

REPO = Path(__file__).resolve().parents[1]
rng = np.random.default_rng(7)


def test_small_or_insignificant_changes_pass() -> None:
    base = pd.Series(rng.normal(4.0, 0.3, 5))
    # 10 % worse and significant: below the threshold.
    assert judge(base * 1.10 + 0.01, base, "orchestration_s", 25, 0.05).verdict == "ok"
    # 40 % worse on the median but drowned in noise: not significant.
    noisy = pd.Series([1.0, 9.0, 5.6, 0.5, 12.0])
    assert judge(noisy, base, "orchestration_s", 25, 0.05).verdict == "ok"


def test_large_significant_regression_fails_with_its_figures() -> None:
    base = pd.Series(rng.normal(4.0, 0.2, 5))
    verdict = judge(base + 2.0, base, "orchestration_s", 25, 0.05, "cfg", "dask")
    assert verdict.verdict == "regression"
    message = verdict.message()
    for text in ("orchestration_s", "baseline", "threshold 25%", "Mann-Whitney U p=", "cfg",
                 "dask", f"{verdict.new[0]:.3f}", f"{verdict.baseline[0]:.3f}"):
        assert text in message
    assert verdict.p_value < 0.05


def test_improvement_is_not_a_failure() -> None:
    base = pd.Series(rng.normal(4.0, 0.2, 5))
    assert judge(base / 2, base, "orchestration_s", 25, 0.05).verdict == "improved"


def test_missing_baseline_says_how_to_take_one(tmp_path, capsys) -> None:
    assert gate_main(["--in", str(tmp_path), "--baseline", str(tmp_path / "b")]) == 2
    assert "--refresh-baseline" in capsys.readouterr().err


def _bench(out: Path, synthetic_root: Path, address: str, *extra: str,
           env: dict | None = None) -> None:
    cmd = [
        sys.executable, "-m", "pytest", "bench", "--benchmark-only", "-q", "-p",
        "no:cacheprovider", "--bench-profile", "smoke", "--bench-out", str(out),
        "--data-dir", str(synthetic_root), "--covalent-address", address,
        "--bench-set", "train_subset=256", "--bench-set", "test_subset=128",
        "--bench-set", "rounds=4", "--bench-set", "threads=1",
        "--bench-set", "executors=['local']", *extra,
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.quiet
def test_gate_catches_a_planted_slower_dispatch(
    synthetic_root, covalent_server, tmp_path, capsys
) -> None:
    base_dir, baseline = tmp_path / "base", tmp_path / "baseline"
    _bench(base_dir, synthetic_root, covalent_server.address)
    assert gate_main(["--in", str(base_dir), "--baseline", str(baseline),
                      "--refresh-baseline"]) == 0
    env = json.loads((baseline / "environment.json").read_text())
    assert env["covalent"] == "0.240.0" and env["cpu_count"]

    # Unchanged code against its own baseline: passes.
    assert gate_main(["--in", str(base_dir), "--baseline", str(baseline)]) == 0

    slow_dir = tmp_path / "slow"
    _bench(slow_dir, synthetic_root, covalent_server.address, "-p", "slow_dispatch_plugin",
           env={"PYTHONPATH": str(REPO / "tests"), "SLOW_DISPATCH_S": "3"})
    capsys.readouterr()
    assert gate_main(["--in", str(slow_dir), "--baseline", str(baseline)]) == 1
    err = capsys.readouterr().err
    assert "REGRESSION" in err and "orchestration_s" in err and "p=" in err
    history = pd.read_csv(slow_dir / "history.csv")
    assert set(history["metric"]) == {"orchestration_s", "total_overhead_pct"}
    assert "regression" in set(history["verdict"])
    from bench.report import main as report_main

    assert report_main(["--in", str(slow_dir)]) == 0
    assert (slow_dir / "history.png").stat().st_size > 10_000
    assert "## Overhead across commits" in (slow_dir / "README.md").read_text()


ENV = {"python": "3.11.7", "covalent": "0.240.0", "torch": "2.14.1", "cpu_count": 2,
       "timestamp": "2026-01-01T00:00:00+00:00", "session_id": "s1", "profile": "p"}


def _session(out: Path, plain_s: float, covalent_s: float, in_task_s: float,
             rounds: int = 5) -> None:
    """A tiny session of 5 rounds in the real schema, built through the records writers."""
    from bench.records import phases_writer, runs_writer

    runs, phases = runs_writer(out), phases_writer(out)
    for rnd in range(rounds):
        for mode, executor, wall, task in (("plain", "", plain_s, 0.9 * plain_s),
                                           ("covalent", "local", covalent_s, in_task_s)):
            run_id = f"{mode}{rnd}"
            jitter = 0.01 * rnd * wall
            runs.append({**ENV, "run_id": run_id, "config_id": "c", "mode": mode,
                         "executor": executor, "round": rnd, "warmup": False,
                         "wall_s": wall + jitter, "status": "COMPLETED"})
            phases.append({"run_id": run_id, "phase": "in_task", "task": "t",
                           "start_s": 0.0, "duration_s": task + 0.9 * jitter})


def test_orchestration_is_judged_at_the_machines_speed(tmp_path, capsys) -> None:
    base, slow_machine, slow_covalent = (tmp_path / d for d in ("b", "m", "c"))
    _session(base, plain_s=10.0, covalent_s=14.0, in_task_s=10.0)  # orchestration 4 s
    assert gate_main(["--in", str(base), "--baseline", str(base / "bl"),
                      "--refresh-baseline"]) == 0
    # The whole machine 40 % slower (plain too): orchestration 5.6 s is not a regression.
    _session(slow_machine, plain_s=14.0, covalent_s=19.6, in_task_s=14.0)
    assert gate_main(["--in", str(slow_machine), "--baseline", str(base / "bl")]) == 0
    assert "x0.71" in capsys.readouterr().out
    # Covalent alone 2 s slower, the plain runs unchanged: caught.
    _session(slow_covalent, plain_s=10.0, covalent_s=16.0, in_task_s=10.0)
    capsys.readouterr()
    assert gate_main(["--in", str(slow_covalent), "--baseline", str(base / "bl")]) == 1
    assert "REGRESSION" in capsys.readouterr().err
    history = pd.read_csv(slow_covalent / "history.csv")
    assert history["speed_scale"].tolist() == pytest.approx([1.0, 1.0], abs=0.005)


def test_other_environment_compares_relative_overhead_only(tmp_path, capsys) -> None:
    from bench.gate import ENV_JSON, ROUNDS_CSV

    # A tiny session: records in the real schema, built through the records writers.
    from bench.records import phases_writer, runs_writer

    runs, phases = runs_writer(tmp_path), phases_writer(tmp_path)
    for rnd in range(4):
        for mode, executor, wall in (("plain", "", 10.0 + rnd * 0.1),
                                     ("covalent", "local", 12.0 + rnd * 0.1)):
            run_id = f"{mode}{rnd}"
            runs.append({**ENV, "run_id": run_id, "config_id": "c", "mode": mode,
                         "executor": executor, "round": rnd, "warmup": False,
                         "wall_s": wall, "status": "COMPLETED"})
            phases.append({"run_id": run_id, "phase": "in_task", "task": "t",
                           "start_s": 0.0, "duration_s": 9.0})
    baseline = tmp_path / "baseline"
    baseline.mkdir()
    (baseline / ENV_JSON).write_text(json.dumps({**ENV, "cpu_count": 16}))
    pd.DataFrame({"config_id": "c", "executor": "local", "round": range(4),
                  "orchestration_s": 3.0, "total_overhead_pct": 20.0}).to_csv(
        baseline / ROUNDS_CSV, index=False)
    assert gate_main(["--in", str(tmp_path), "--baseline", str(baseline)]) == 0
    out = capsys.readouterr().out
    assert "environment differs" in out and "cpu_count: 16 -> 2" in out
    assert "total_overhead_pct" in out and "orchestration_s" not in out


# --- Input the gate cannot judge from: exit 3, one line saying what and what to do ----------


@pytest.fixture
def baseline(tmp_path) -> Path:
    """A baseline of 5 rounds taken from a synthetic session, as --refresh-baseline takes it."""
    _session(tmp_path / "base", plain_s=10.0, covalent_s=14.0, in_task_s=10.0)
    assert gate_main(["--in", str(tmp_path / "base"), "--baseline", str(tmp_path / "bl"),
                      "--refresh-baseline"]) == 0
    return tmp_path / "bl"


def _gate(session: Path, baseline: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = gate_main(["--in", str(session), "--baseline", str(baseline)])
    return code, capsys.readouterr().err


def _first_lines(text: str, n: int) -> str:
    return "".join(text.splitlines(keepends=True)[:n])


@pytest.mark.parametrize(("damage", "says"), [
    pytest.param(lambda text: text[:-20], "rounds.csv has 1 bad line (line 6: cut off at the end "
                 "of the file, no line end: a crash mid-write?)", id="cut-mid-row"),
    pytest.param(lambda text: _first_lines(text, 3),
                 "baseline too small: ", id="cut-after-two-rounds"),
    pytest.param(lambda text: text[:40], "rounds.csv lacks columns: config_id, executor, "
                 "orchestration_s, total_overhead_pct (written by an older version, or cut "
                 "off?)", id="header-cut"),
    pytest.param(lambda text: text + "7,not-a-number\n", "(line 7: 2 fields where the header "
                 "has 11)", id="torn-row-appended"),
    pytest.param(lambda text: text.replace("local\n", "local\n4,x,y,z,w,1,2,3,4,c,local\n", 1),
                 "(line 3: plain_wall_s is not a number: 'x')", id="garbage-row"),
])
def test_a_damaged_baseline_is_refused_with_exit_3(tmp_path, baseline, capsys, damage,
                                                    says) -> None:
    _session(tmp_path / "new", plain_s=10.0, covalent_s=20.0, in_task_s=10.0)
    rounds = baseline / "rounds.csv"
    rounds.write_text(damage(rounds.read_text()))
    code, err = _gate(tmp_path / "new", baseline, capsys)
    assert code == 3
    assert err.startswith("error: cannot judge: ") and says in err and err.count("\n") == 1
    assert f"restore it (git checkout -- {baseline}) or take a new one" in err
    assert "REGRESSION" not in err and not (tmp_path / "new" / "history.csv").exists()
    assert "**Cannot judge**" in (tmp_path / "new" / "gate.md").read_text()


@pytest.mark.parametrize(("content", "says"), [
    pytest.param('{"python": "3.11.7", "covalent": ', "environment.json is not valid JSON "
                 "(Expecting value: line 1 column 34 (char 33))", id="cut-off"),
    pytest.param("\x00\x00\x00", "environment.json is not valid JSON", id="zeroed"),
    pytest.param('["covalent"]', "environment.json is not a JSON object", id="not-an-object"),
    pytest.param('{"python": "3.11.7"}', "environment.json lacks keys: covalent, torch, "
                 "cpu_count", id="keys-missing"),
    pytest.param(None, "has rounds.csv but no environment.json", id="missing"),
])
def test_a_corrupt_baseline_environment_is_refused_with_exit_3(tmp_path, baseline, capsys,
                                                                content, says) -> None:
    _session(tmp_path / "new", plain_s=10.0, covalent_s=14.0, in_task_s=10.0)
    env = baseline / "environment.json"
    if content is None:
        env.unlink()
    else:
        env.write_text(content)
    code, err = _gate(tmp_path / "new", baseline, capsys)
    assert code == 3 and err.startswith("error: cannot judge: damaged baseline: ")
    assert says in err and err.count("\n") == 1


def test_a_session_of_one_measured_round_is_refused_not_a_regression(
    tmp_path, baseline, capsys
) -> None:
    # Much slower, but one round: its CI is a point, Mann-Whitney U p >= 1/6. Once this was
    # called a REGRESSION at p = 0.17; it can't be judged at all.
    _session(tmp_path / "new", plain_s=10.0, covalent_s=20.0, in_task_s=10.0, rounds=1)
    code, err = _gate(tmp_path / "new", baseline, capsys)
    assert code == 3
    assert err == ("error: cannot judge: too few rounds: c [local]: 1 measured round against "
                   "the baseline's 5, too few to judge: with 1, Mann-Whitney U cannot reach "
                   "p < 0.05 (at best p = 0.167); run at least 3 (--bench-set rounds=3)\n")
    assert not (tmp_path / "new" / "history.csv").exists()


def test_too_few_rounds_for_the_test_are_refused() -> None:
    from bench.analysis.gate import MIN_ROUNDS, TooFewRoundsError, rounds_problem

    assert MIN_ROUNDS == 3
    base = pd.Series(rng.normal(4.0, 0.2, 5))
    with pytest.raises(TooFewRoundsError, match=r"c \[local\] orchestration_s: 1 measured"):
        judge(base[:1] + 2.0, base, "orchestration_s", 25, 0.05, "c", "local")
    assert "the gate needs at least 3" in rounds_problem(2, 5, 0.05)  # p could be 1/21 ...
    assert "at best p = 0.050" in rounds_problem(3, 3, 0.05)  # 1/C(6,3): never below 0.05
    assert rounds_problem(3, 4, 0.05) is None and rounds_problem(4, 3, 0.05) is None
    assert "the baseline has 2 rounds" in rounds_problem(5, 2, 0.05)
    # NaN rounds (no phases for a run) do not count.
    with pytest.raises(TooFewRoundsError):
        judge(pd.Series([5.0, None, None]), base, "orchestration_s", 25, 0.05)


def test_a_baseline_too_small_to_judge_against_is_not_taken(tmp_path, capsys) -> None:
    _session(tmp_path, plain_s=10.0, covalent_s=14.0, in_task_s=10.0, rounds=2)
    assert gate_main(["--in", str(tmp_path), "--baseline", str(tmp_path / "bl"),
                      "--refresh-baseline"]) == 3
    assert "will not take a baseline" in capsys.readouterr().err
    assert not (tmp_path / "bl").exists()


def test_a_torn_session_line_is_dropped_with_a_note_and_the_rest_judged(
    tmp_path, baseline, capsys
) -> None:
    new = tmp_path / "new"
    _session(new, plain_s=10.0, covalent_s=14.0, in_task_s=10.0)
    runs = new / "runs.csv"
    runs.write_bytes(runs.read_bytes()[:-30])  # the last Covalent run, cut mid-write
    capsys.readouterr()
    assert gate_main(["--in", str(new), "--baseline", str(baseline)]) == 0
    captured = capsys.readouterr()
    assert f"note: {runs}: dropped 1 damaged line, kept 9 rows; line 11: cut off" in captured.out
    assert captured.err == ""  # said once, as the gate's note
    assert "dropped 1 damaged line" in (new / "gate.md").read_text()


def test_records_missing_columns_are_refused_with_exit_3(tmp_path, baseline, capsys) -> None:
    new = tmp_path / "new"
    _session(new, plain_s=10.0, covalent_s=14.0, in_task_s=10.0)
    runs = pd.read_csv(new / "runs.csv")
    runs.drop(columns=["wall_s"]).to_csv(new / "runs.csv", index=False)
    code, err = _gate(new, baseline, capsys)
    assert code == 3 and f"{new / 'runs.csv'} lacks columns: wall_s (written by" in err


def test_usage_errors_exit_2(tmp_path, capsys) -> None:
    for argv in (["--threshold-for", "nope=3"], ["--threshold-for", "orchestration_s=x"],
                 ["--alpha", "1.5"]):
        with pytest.raises(SystemExit) as raised:
            gate_main(["--in", str(tmp_path), *argv])
        assert raised.value.code == 2
    assert "--threshold-for expects METRIC=PERCENT" in capsys.readouterr().err


def test_help_documents_the_exit_codes(capsys) -> None:
    with pytest.raises(SystemExit):
        gate_main(["--help"])
    out = capsys.readouterr().out
    for text in ("Exit codes:", "1  regression", "2  usage error", "3  cannot judge"):
        assert text in out


def test_records_with_no_readable_row_are_no_records(tmp_path, baseline, capsys) -> None:
    from bench.records import RUN_COLUMNS

    new = tmp_path / "new"
    new.mkdir()
    (new / "runs.csv").write_text(",".join(RUN_COLUMNS) + "\r\n2026-01-01,s1,r0,p")
    code, err = _gate(new, baseline, capsys)
    assert code == 2 and "runs.csv holds no readable run; " in err and "line 2: cut off" in err


def _envs_session(out: Path, covalent_s: dict[str, float], rounds: int = 6) -> None:
    """A session of several Covalent environments, interleaved, in the real schema."""
    from bench.records import phases_writer, runs_writer

    runs, phases = runs_writer(out), phases_writer(out)
    for rnd in range(rounds):
        jitter = 0.02 * ((rnd * 7) % 5)
        rows = [("plain", "", "", 10.0)] + [("covalent", "local", env, wall)
                                            for env, wall in covalent_s.items()]
        for mode, executor, env, wall in rows:
            run_id = f"{mode}{env}{rnd}"
            runs.append({**ENV, "run_id": run_id, "config_id": "c", "mode": mode,
                         "executor": executor, "environment": env, "round": rnd,
                         "warmup": False, "wall_s": wall + jitter, "status": "COMPLETED"})
            phases.append({"run_id": run_id, "phase": "in_task", "task": "t",
                           "start_s": 0.0, "duration_s": 10.0})


def test_same_session_environments_are_judged_against_the_reference(tmp_path, capsys) -> None:
    """No baseline needed: the environments of one session are compared like with like."""
    same, slower = tmp_path / "same", tmp_path / "slower"
    _envs_session(same, {"ref": 14.0, "again": 14.05})
    assert gate_main(["--in", str(same), "--baseline", str(tmp_path / "none")]) == 0
    out = capsys.readouterr().out
    assert "same-session comparison: again against the reference environment ref" in out
    page = (same / "gate.md").read_text()  # no stored baseline, no speed scale: not named
    assert page.startswith("## Covalent overhead vs the reference environment `ref`")
    header = next(line for line in page.splitlines() if line.startswith("| config"))
    assert " reference " in header
    assert "speed scale" not in page and "baseline" not in page
    _envs_session(slower, {"ref": 14.0, "new": 16.0})  # orchestration 4 s -> 6 s
    assert gate_main(["--in", str(slower), "--baseline", str(tmp_path / "none")]) == 1
    assert "new:local vs ref" in capsys.readouterr().err


def test_a_confirming_session_fails_only_on_what_regressed_in_both(tmp_path, capsys) -> None:
    """CI's confirmation: a second session of the same comparison; the job fails only on a
    configuration, executor and metric that regressed in the first one too."""
    first, again, cleared = tmp_path / "first", tmp_path / "again", tmp_path / "cleared"
    none = ["--baseline", str(tmp_path / "none")]
    _envs_session(first, {"ref": 14.0, "new": 16.0})
    assert gate_main(["--in", str(first), *none]) == 1
    _envs_session(again, {"ref": 14.0, "new": 16.0})
    assert gate_main(["--in", str(again), "--confirms", str(first), *none]) == 1
    assert "REGRESSION: c [new:local vs ref]" in capsys.readouterr().err
    _envs_session(cleared, {"ref": 14.0, "new": 14.05})  # the first one was noise
    assert gate_main(["--in", str(cleared), "--confirms", str(first), *none]) == 0
    out = capsys.readouterr().out
    assert f"not confirmed (regressed in {first}, not here): c new:local vs ref" in out
    # Nothing to confirm against: said, not passed.
    assert gate_main(["--in", str(cleared), "--confirms", str(tmp_path / "nothing"), *none]) == 3
    assert "no gate verdicts there" in capsys.readouterr().err


def test_a_same_session_with_too_few_rounds_cannot_be_judged(tmp_path, capsys) -> None:
    """Two rounds per environment: a clear refusal (exit 3) naming the fix, no traceback."""
    _envs_session(tmp_path, {"ref": 14.0, "new": 16.0}, rounds=2)
    assert gate_main(["--in", str(tmp_path), "--baseline", str(tmp_path / "none")]) == 3
    err = capsys.readouterr().err
    assert "new: c [local]: the reference has 2 rounds, fewer than the 3" in err
    assert "--bench-set rounds=3" in err


def test_history_change_points_flag_a_creeping_regression(tmp_path) -> None:
    from bench.gate import history_shifts

    steady = [4.0, 4.1, 3.9, 4.05, 3.95, 4.0, 4.1, 3.9]
    crept = steady + [5.6, 5.7, 5.5]  # +40 %, fresh: the last 3 runs
    rows = [{"config_id": "c", "executor": "local", "metric": "orchestration_s",
             "new_median": v, "date": f"d{i}"} for i, v in enumerate(crept)]
    notes, fresh = history_shifts(pd.DataFrame(rows), {"orchestration_s": 25.0})
    assert len(fresh) == 1 and "shifted +" in fresh[0], notes
    flat = pd.DataFrame(rows[: len(steady)])
    assert history_shifts(flat, {"orchestration_s": 25.0}) == ([], [])
