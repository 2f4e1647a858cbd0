"""Records the gate and the report must survive (issue 22, faults second sweep): a speed scale
of noise, a torn line, no phases.csv, missing optional columns, a baseline with failed runs.
Synthetic sessions in the real schema, built through the records writers; no server."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytest

from bench.gate import main as gate_main
from bench.records import phases_writer, runs_writer

ENV = {"python": "3.11.7", "covalent": "0.240.0", "torch": "2.14.1", "cpu_count": 2,
       "timestamp": "2026-01-01T00:00:00+00:00", "session_id": "s1", "profile": "p",
       "workload": "chain", "params": {"n": 2, "sleep_s": 0.0}, "output_digest": "d"}


def _write(out: Path, plain: Sequence[float], covalent: Sequence[float],
           in_task: float | Sequence[float], status: Sequence[str] | None = None,
           environments: Sequence[str] = ("",)) -> None:
    """One session: round r runs plain (plain[r] s) then each environment's Covalent run
    (covalent[r] s, its tasks in_task s), with the phase rows a real session writes."""
    runs, phases = runs_writer(out), phases_writer(out)
    for rnd, (p_wall, c_wall) in enumerate(zip(plain, covalent, strict=True)):
        task = in_task if isinstance(in_task, float | int) else in_task[rnd]
        rows = [("plain", "", "", p_wall, 0.9 * p_wall, "COMPLETED")]
        rows += [("covalent", "local", env, c_wall, task,
                  status[rnd] if status else "COMPLETED") for env in environments]
        for mode, executor, env, wall, own, state in rows:
            run_id = f"{mode}{env}{rnd}"
            keys = {"session_id": "s1", "run_id": run_id, "profile": "p", "workload": "chain",
                    "config_id": "c", "mode": mode, "executor": executor, "environment": env,
                    "round": rnd, "warmup": False, "probes": "on"}
            runs.append({**ENV, **keys, "wall_s": wall, "status": state})
            phases.append({**keys, "phase": "in_task", "task": "t", "start_s": 0.0,
                           "duration_s": own})


def _gate(capsys, *argv: str | Path) -> tuple[int, str, str]:
    capsys.readouterr()
    code = gate_main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _tear_line(path: Path, line: int) -> None:
    """Line `line` (1 = the header) cut in half, as a crash mid-write leaves it."""
    lines = path.read_text().splitlines(keepends=True)
    lines[line - 1] = lines[line - 1][: len(lines[line - 1]) // 2] + "\r\n"
    path.write_text("".join(lines))


# Plain runs of milliseconds (a toy lattice): their median moves by half when one line goes.
MS_PLAIN = [0.001, 0.001, 0.003, 0.003, 0.003]
COVALENT = [1.50, 1.52, 1.51, 1.53, 1.49]


def test_own_baseline_passes_with_millisecond_plain_runs_and_a_torn_line(tmp_path,
                                                                         capsys) -> None:
    session, baseline = tmp_path / "s", tmp_path / "bl"
    _write(session, MS_PLAIN, COVALENT, 0.0005)
    assert _gate(capsys, "--in", session, "--baseline", baseline, "--refresh-baseline")[0] == 0
    code, out, err = _gate(capsys, "--in", session, "--baseline", baseline)
    assert code == 0, out + err
    # One torn line: the plain run of round 2 (runs.csv line 6). Its median was 3 ms, now
    # 2 ms: a "speed scale" of x1.5 once made this a +50 % orchestration REGRESSION.
    _tear_line(session / "runs.csv", 6)
    code, out, err = _gate(capsys, "--in", session, "--baseline", baseline)
    assert code == 0, out + err
    assert "REGRESSION" not in err
    assert "dropped 1 damaged line" in out
    assert ("note: c [local]: speed scale not applied: plain runs too short (median 0.002 s; "
            "the scale needs >= 1 s to stand for the machine's speed); orchestration compared "
            "unscaled") in out
    page = (session / "gate.md").read_text()
    assert "speed scale not applied: plain runs too short" in page
    assert "not applied: too short" in page  # the table's cell
    history = pd.read_csv(session / "history.csv")
    assert history["speed_scale"].tolist() == [1.0] * len(history)


def test_own_baseline_passes_after_a_torn_line_with_the_scale_applied(tmp_path,
                                                                      capsys) -> None:
    session, baseline = tmp_path / "s", tmp_path / "bl"
    plain = [10.0, 10.1, 10.2, 10.3, 10.4]
    _write(session, plain, [p + 4.0 for p in plain], plain)
    assert _gate(capsys, "--in", session, "--baseline", baseline, "--refresh-baseline")[0] == 0
    _tear_line(session / "runs.csv", 4)  # the plain run of round 1
    code, out, err = _gate(capsys, "--in", session, "--baseline", baseline)
    assert code == 0, out + err
    assert "speed scale not applied" not in out
    scale = pd.read_csv(session / "history.csv").set_index("metric")["speed_scale"]
    assert scale["orchestration_s"] == pytest.approx(1.0, abs=0.02)


def test_noisy_plain_runs_are_not_scaled(tmp_path, capsys) -> None:
    base, new = tmp_path / "b", tmp_path / "n"
    _write(base, [2.0, 2.02, 2.04, 2.06, 2.08], [4.0] * 5, 2.0)
    assert _gate(capsys, "--in", base, "--baseline", base / "bl", "--refresh-baseline")[0] == 0
    # Plain runs all over the place: the ratio of medians is x0.67, its CI far wider.
    _write(new, [2.0, 6.0, 3.0, 1.5, 4.5], [4.02, 4.03, 4.01, 4.04, 4.0], 2.0)
    code, out, err = _gate(capsys, "--in", new, "--baseline", base / "bl")
    assert code == 0, out + err
    assert "speed scale not applied: plain runs too noisy (x0.68, 95 % CI" in out
    assert "not applied: too noisy" in (new / "gate.md").read_text()


def test_the_speed_scale_is_applied_only_where_it_is_measured() -> None:
    from bench.analysis.gate import MAX_SCALE_CI_REL, MIN_SCALE_PLAIN_S, speed_scale

    steady = pd.Series([10.0, 10.1, 10.2, 10.3, 10.4])
    applied = speed_scale(steady * 1.4, steady)
    assert applied.applied and applied.value == pytest.approx(1 / 1.4, rel=1e-9)
    assert applied.ci[0] <= applied.estimate <= applied.ci[1]
    assert (applied.ci[1] - applied.ci[0]) / applied.estimate <= MAX_SCALE_CI_REL
    short = speed_scale(steady / 1000, steady / 2000)
    assert not short.applied and short.value == 1.0 and "too short" in short.reason
    assert f">= {MIN_SCALE_PLAIN_S:g} s" in short.reason
    noisy = speed_scale(pd.Series([2.0, 6.0, 3.0, 1.5, 4.5]), steady / 5)
    assert not noisy.applied and noisy.value == 1.0 and "too noisy" in noisy.reason
    empty = speed_scale(pd.Series(dtype=float), steady)
    assert not empty.applied and "no plain runs" in empty.reason


def test_torn_lines_leaving_too_few_rounds_are_exit_3(tmp_path, capsys) -> None:
    session, baseline = tmp_path / "s", tmp_path / "bl"
    _write(session, [10.0, 10.1, 10.2, 10.3, 10.4], [14.0] * 5, 10.0)
    assert _gate(capsys, "--in", session, "--baseline", baseline, "--refresh-baseline")[0] == 0
    for line in (3, 5, 7):  # three Covalent runs torn: two rounds left
        _tear_line(session / "runs.csv", line)
    code, out, err = _gate(capsys, "--in", session, "--baseline", baseline)
    assert code == 3
    assert err.startswith("error: cannot judge: too few rounds: c [local]: 2 measured rounds")
    assert err.endswith("(after dropping 3 damaged lines of its records)\n")
    assert err.count("\n") == 1


def test_records_with_every_covalent_run_torn_are_exit_3(tmp_path, capsys) -> None:
    session, baseline = tmp_path / "s", tmp_path / "bl"
    _write(session, [10.0, 10.1, 10.2, 10.3, 10.4], [14.0] * 5, 10.0)
    assert _gate(capsys, "--in", session, "--baseline", baseline, "--refresh-baseline")[0] == 0
    for line in (3, 5, 7, 9, 11):
        _tear_line(session / "runs.csv", line)
    code, out, err = _gate(capsys, "--in", session, "--baseline", baseline)
    assert code == 3
    assert err == ("error: cannot judge: the session's records are too damaged to judge: no "
                   "measured plain + Covalent round left (after dropping 5 damaged lines of "
                   "its records)\n")


# --- No phases.csv: total_overhead_pct judged alone, said so; no KeyError -------------------


def test_the_gate_without_phases_judges_relative_overhead_and_says_so(tmp_path, capsys) -> None:
    base, same, worse = tmp_path / "b", tmp_path / "same", tmp_path / "worse"
    _write(base, [10.0, 10.1, 10.2, 10.3, 10.4], [14.0, 14.1, 14.2, 14.3, 14.4], 10.0)
    assert _gate(capsys, "--in", base, "--baseline", base / "bl", "--refresh-baseline")[0] == 0
    _write(same, [10.0, 10.1, 10.2, 10.3, 10.4], [14.0, 14.1, 14.2, 14.3, 14.4], 10.0)
    (same / "phases.csv").unlink()
    code, out, err = _gate(capsys, "--in", same, "--baseline", base / "bl")
    assert code == 0, out + err
    assert ("note: orchestration_s not judged: phases.csv is missing (the tasks' own time "
            "comes from it); judging total_overhead_pct only") in out
    assert set(pd.read_csv(same / "history.csv")["metric"]) == {"total_overhead_pct"}
    assert "orchestration_s not judged" in (same / "gate.md").read_text()
    # Without phases a regression of the relative overhead still fails.
    _write(worse, [10.0, 10.1, 10.2, 10.3, 10.4], [20.0, 20.1, 20.2, 20.3, 20.4], 10.0)
    (worse / "phases.csv").unlink()
    code, out, err = _gate(capsys, "--in", worse, "--baseline", base / "bl")
    assert code == 1 and "REGRESSION" in err and "total_overhead_pct" in err


def test_same_session_environments_without_phases(tmp_path, capsys) -> None:
    _write(tmp_path, [10.0] * 6, [14.0, 14.1, 14.2, 14.0, 14.1, 14.2], 10.0,
           environments=("ref", "new"))
    (tmp_path / "phases.csv").unlink()
    code, out, err = _gate(capsys, "--in", tmp_path, "--baseline", tmp_path / "none")
    assert code == 0, out + err
    assert "orchestration_s not judged: phases.csv is missing" in out


def test_no_baseline_is_taken_without_phases(tmp_path, capsys) -> None:
    _write(tmp_path, [10.0] * 5, [14.0] * 5, 10.0)
    (tmp_path / "phases.csv").unlink()
    code, out, err = _gate(capsys, "--in", tmp_path, "--baseline", tmp_path / "bl",
                           "--refresh-baseline")
    assert code == 3
    assert err == (f"error: cannot judge: will not take a baseline without orchestration_s: "
                   f"{tmp_path}: phases.csv is missing; rerun the benchmark with its "
                   f"phases.csv kept\n")
    assert not (tmp_path / "bl").exists()


# --- A baseline from a session with failed runs: refused unless --allow-failed-runs ---------


FAILED_2_OF_5 = ["COMPLETED", "FAILED", "COMPLETED", "TIMEOUT", "COMPLETED"]


def test_a_baseline_with_failed_runs_is_refused(tmp_path, capsys) -> None:
    _write(tmp_path, [10.0, 10.1, 10.2, 10.3, 10.4], [14.0] * 5, 10.0, status=FAILED_2_OF_5)
    code, out, err = _gate(capsys, "--in", tmp_path, "--baseline", tmp_path / "bl",
                           "--refresh-baseline")
    assert code == 3
    assert err == ("error: cannot judge: will not take a baseline from a session with failed "
                   "runs: 2 of 5 covalent [local] runs failed (FAILED x1, TIMEOUT x1), of 10 "
                   "measured runs; rerun the benchmark, or take it anyway with "
                   "--allow-failed-runs (the baseline records how many failed)\n")
    assert not (tmp_path / "bl").exists()


def test_allow_failed_runs_takes_it_loudly_and_records_it(tmp_path, capsys) -> None:
    session, baseline = tmp_path / "s", tmp_path / "bl"
    # 3 completed rounds of 5: the fewest a baseline takes.
    _write(session, [10.0, 10.1, 10.2, 10.3, 10.4], [14.0] * 5, 10.0, status=FAILED_2_OF_5)
    code, out, err = _gate(capsys, "--in", session, "--baseline", baseline,
                           "--refresh-baseline", "--allow-failed-runs")
    assert code == 0, out + err
    assert err.startswith("WARNING: baseline taken from a session with failed runs: 2 of 5 "
                          "covalent [local] runs failed (FAILED x1, TIMEOUT x1), of 10 "
                          "measured runs, as --allow-failed-runs asked")
    env = json.loads((baseline / "environment.json").read_text())
    assert (env["failed_runs"], env["measured_runs"]) == (2, 10)
    new = tmp_path / "new"
    _write(new, [10.0, 10.1, 10.2, 10.3, 10.4], [14.0] * 5, 10.0)
    code, out, err = _gate(capsys, "--in", new, "--baseline", baseline)
    assert code == 0, out + err
    assert "note: the baseline was taken with 2 of 10 measured runs failed" in out


def test_a_clean_baseline_records_no_failures(tmp_path, capsys) -> None:
    _write(tmp_path, [10.0] * 5, [14.0] * 5, 10.0)
    assert _gate(capsys, "--in", tmp_path, "--baseline", tmp_path / "bl",
                 "--refresh-baseline")[0] == 0
    env = json.loads((tmp_path / "bl" / "environment.json").read_text())
    assert (env["failed_runs"], env["measured_runs"]) == (0, 10)


# --- The report: optional columns and phases.csv may be missing; required ones are named ----


def _report(in_dir: Path, capsys) -> tuple[int, str, str]:
    from bench.report import main as report_main

    capsys.readouterr()
    code = report_main(["--in", str(in_dir)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(("damage", "says"), [
    pytest.param(lambda d: _drop_columns(d / "runs.csv", ["submit_s", "server_s",
                                                          "concurrency"]),
                 "runs.csv lacks optional columns concurrency, submit_s, server_s (written "
                 "by an older version, or edited?): what needs them is left empty",
                 id="runs-optional-columns"),
    pytest.param(lambda d: (d / "phases.csv").unlink(),
                 "phases.csv is missing: no breakdown of where the time goes", id="no-phases"),
    pytest.param(lambda d: _keep_lines(d / "phases.csv", 5),
                 "phases.csv covers 4 of 10 measured runs (cut off, or rows lost?)",
                 id="partial-phases"),
    pytest.param(lambda d: _drop_columns(d / "phases.csv", ["task", "executor"]),
                 "phases.csv lacks optional columns executor, task", id="phases-columns"),
])
def test_the_report_degrades_with_a_note(tmp_path, capsys, damage, says) -> None:
    _write(tmp_path, [2.0, 2.01, 2.02, 2.03, 2.04], [3.0] * 5, 1.8)
    damage(tmp_path)
    code, out, err = _report(tmp_path, capsys)
    assert code == 0, out + err
    assert "Traceback" not in err
    assert says in (tmp_path / "README.md").read_text()


def test_the_report_names_a_missing_required_column_in_one_line(tmp_path, capsys) -> None:
    _write(tmp_path, [2.0] * 5, [3.0] * 5, 1.8)
    _drop_columns(tmp_path / "runs.csv", ["wall_s", "status"])
    code, out, err = _report(tmp_path, capsys)
    assert code == 2
    assert err.startswith(f"error: {tmp_path / 'runs.csv'} lacks columns: wall_s, status ")
    assert err.count("\n") == 1


def _drop_columns(path: Path, columns: list[str]) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.drop(columns=columns).to_csv(path, index=False)


def _keep_lines(path: Path, n: int) -> None:
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:n]))
