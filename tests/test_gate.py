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


def _session(out: Path, plain_s: float, covalent_s: float, in_task_s: float) -> None:
    """A tiny session of 5 rounds in the real schema, built through the records writers."""
    from bench.records import phases_writer, runs_writer

    runs, phases = runs_writer(out), phases_writer(out)
    for rnd in range(5):
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
