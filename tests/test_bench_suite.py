"""The suite end to end: the smoke profile into a temporary reports dir, then the report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from bench.analysis.decompose import SUMMARY_COLUMNS
from bench.records import IN_TASK, PHASE_COLUMNS, RUN_COLUMNS, SUBMIT, load_runs
from bench.report import PLOTS
from bench.report import main as report_main

REPO = Path(__file__).resolve().parents[1]
# What the MNIST suite recorded per run before workloads became first-class.
MNIST_COLUMNS = ("epochs", "batch_size_train", "shape", "data_path", "models", "threads",
                 "accuracy", "accuracies", "test_loss", "weights_sha256", "torch_threads",
                 "resolved_device", "train_losses", "train_counter", "wall_s", "submit_s",
                 "server_s", "retrieve_s", "stock_wall_s", "server_cpu_s", "dispatch_id")


@pytest.mark.slow
def test_smoke_benchmark_then_report(synthetic_root, covalent_server, tmp_path) -> None:
    out = tmp_path / "reports"
    bench_json = tmp_path / "bench.json"
    cmd = [
        sys.executable, "-m", "pytest", "bench", "--benchmark-only", "-q", "-p",
        "no:cacheprovider", "--bench-profile", "smoke", "--bench-out", str(out),
        "--data-dir", str(synthetic_root), "--covalent-address", covalent_server.address,
        "--bench-set", "train_subset=256", "--bench-set", "test_subset=128",
        "--bench-set", "rounds=2", "--bench-set", "threads=1",
        f"--benchmark-json={bench_json}",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "Covalent overhead" in proc.stdout
    # One progress line per run, and pytest's own dots do not break them up.
    lines = proc.stdout.splitlines()
    assert sum(line.startswith("[") and "/9]" in line for line in lines) == 9, proc.stdout
    assert "." not in [line.strip() for line in lines], proc.stdout

    assert tuple(pd.read_csv(out / "runs.csv").columns) == RUN_COLUMNS
    runs = load_runs(out)  # each parameter and output a column of its own
    # The MNIST suite's columns are what they were before workloads became first-class.
    assert set(MNIST_COLUMNS) <= set(runs.columns), set(MNIST_COLUMNS) - set(runs.columns)
    # 1 warm-up + 2 measured rounds per mode, all completed, all the same work.
    for mode, executor in [("plain", ""), ("covalent", "local"), ("covalent", "dask")]:
        rows = runs[(runs["mode"] == mode) & (runs["executor"] == executor)]
        assert list(rows["warmup"]) == [True, False, False], (mode, executor)
        assert (rows["status"] == "COMPLETED").all()
        assert rows[["wall_s", "accuracy", "test_loss", "torch_threads"]].notna().all().all()
    assert runs["weights_sha256"].nunique() == 1
    assert (runs["output_digest"] == runs["weights_sha256"]).all()
    cov = runs[runs["mode"] == "covalent"]
    assert cov["dispatch_id"].notna().all() and (cov["submit_s"] > 0).all()
    assert (runs["covalent"] == "0.240.0").all() and runs["git_commit"].notna().all()

    phases = pd.read_csv(out / "phases.csv")
    assert tuple(phases.columns) == PHASE_COLUMNS
    in_task = phases[phases["phase"] == IN_TASK].groupby("run_id")["task"].apply(sorted)
    assert set(in_task.index) == set(runs["run_id"])
    assert all(t == ["data_loader", "data_loader", "test", "train_model"] for t in in_task)
    cov_ids = set(cov["run_id"])
    assert cov_ids <= set(phases[phases["phase"] == SUBMIT]["run_id"])
    assert (cov["tasks_probed"] == "4/4").all()

    summary = pd.read_csv(out / "summary.csv")
    assert tuple(summary.columns[:len(SUMMARY_COLUMNS)]) == SUMMARY_COLUMNS
    assert sorted(summary["executor"]) == ["dask", "local"]
    assert summary["same_output"].all() and summary["comparable"].all()
    assert summary["deterministic"].all()
    assert (summary["plain_accuracy"] == summary["covalent_accuracy"]).all()
    expected_overhead = summary["covalent_median_s"] - summary["plain_median_s"]
    assert (summary["overhead_s"] - expected_overhead).abs().max() < 1e-3
    assert summary[["orchestration_s", "compute_inflation_s"]].notna().all().all()

    # Interleaved (the default): round by round, each mode once per round.
    order = list(zip(runs["round"], runs["mode"] + runs["executor"], strict=True))
    assert order == [(r, m) for r in range(3) for m in ("plain", "covalentlocal",
                                                           "covalentdask")]
    benchmarks = json.loads(bench_json.read_text())["benchmarks"]
    assert len(benchmarks) == 9
    for bench in benchmarks:
        assert bench["stats"]["rounds"] == 1
        assert len(bench["extra_info"]["runs"]) == 1
        assert bench["extra_info"]["environment"]["covalent"] == "0.240.0"
    assert summary["total_overhead_s_ci_low"].le(summary["total_overhead_s"]).all()
    assert (summary["explained_pct"] > 0).all() and summary["cold_covalent_s"].notna().all()
    assert (summary["plain_server_cpu_s"] >= 0).all()

    assert report_main(["--in", str(out)]) == 0
    for file in PLOTS.values():
        assert (out / file).stat().st_size > 10_000, file
    page = (out / "README.md").read_text()
    assert "## Summary" in page and "overhead_s" in page and "0.240.0" in page
    assert "## Where the time goes" in page and "Per task (medians per call" in page
    assert page.startswith("# ") and "## Findings" in page and (out / "index.html").is_file()
    for file in PLOTS.values():
        assert f"]({file})" in page


MATRIX_PROFILE = """
description = "a small matrix on synthetic data"
rounds = 1
warmup_rounds = 0
executors = ["local"]
[params]
epochs = 1
test_subset = 128
threads = 1
log_interval = 4
learning_rate = 0.1
[[matrix]]
name = "shapes"
shape = ["tutorial", "lean"]
train_subset = [128, 256]
[[matrix]]
name = "sweep"
train_subset = 128
models = [1, 2]
executors = ["dask"]
[[matrix]]
name = "burst"
train_subset = 128
concurrency = 3
"""


@pytest.mark.slow
def test_matrix_profile_end_to_end(synthetic_root, covalent_server, tmp_path) -> None:
    """Shapes x sizes, a sweep and a burst of dispatches: all recorded, fitted, reported."""
    profile, out = tmp_path / "matrix.toml", tmp_path / "reports"
    profile.write_text(MATRIX_PROFILE)
    cmd = [
        sys.executable, "-m", "pytest", "bench", "--benchmark-only", "-q", "-p",
        "no:cacheprovider", "--bench-profile", str(profile), "--bench-out", str(out),
        "--data-dir", str(synthetic_root), "--covalent-address", covalent_server.address,
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    runs = load_runs(out)
    assert (runs["status"] == "COMPLETED").all()
    burst = runs[runs["concurrency"] == 3]
    # Every dispatch of the burst is accounted for: 3 plain + 3 Covalent, one row each.
    assert sorted(burst["slot"]) == [0, 0, 1, 1, 2, 2]
    cov_burst = burst[burst["mode"] == "covalent"]
    assert cov_burst["dispatch_id"].nunique() == 3
    assert (cov_burst["batch_wall_s"] >= cov_burst["wall_s"] - 1e-6).all()
    assert (cov_burst["latency_s"] <= cov_burst["batch_wall_s"] + 1e-6).all()
    # Plain and Covalent did the same work in every scenario, and every shape the same.
    for _, rows in runs.groupby("config_id"):
        assert rows["weights_sha256"].nunique() == 1
    single = runs[(runs["models"] == 1)]
    assert single.groupby("train_samples")["weights_sha256"].nunique().eq(1).all()
    sweep = runs[runs["models"] == 2]
    assert sweep["accuracies"].map(len).eq(2).all()

    summary = pd.read_csv(out / "summary.csv")
    row = summary[summary["concurrency"] == 3].iloc[0]
    assert (row["dispatches"], row["dispatches_ok"]) == (3, 3)
    assert row["covalent_per_min"] > 0 and row["covalent_latency_max_s"] > 0
    fits = pd.read_csv(out / "fits.csv")
    by_samples = fits[fits["x"] == "train_samples"]
    assert {f.split(", ")[0] for f in by_samples["family"]} >= {"epochs=1"}
    assert by_samples["family"].str.contains("shape=tutorial").any()
    assert by_samples["family"].str.contains("shape=lean").any()

    assert report_main(["--in", str(out)]) == 0
    page = (out / "README.md").read_text()
    assert "## Across the matrix" in page and "Fitted lines" in page
    assert "**Sweep on dask, " in page and "workflows at once on local" in page
    for file in ("matrix_scaling.png", "matrix_bytes.png", "matrix_sweep.png",
                 "matrix_concurrency.png"):
        assert (out / file).stat().st_size > 10_000, file
        assert f"]({file})" in page


def test_report_without_records_says_what_to_run(tmp_path, capsys) -> None:
    assert report_main(["--in", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no run records" in err and "pytest bench --benchmark-only" in err


def test_bad_profile_fails_at_collection(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "bench", "--benchmark-only", "--collect-only", "-q",
         "--bench-profile", "smoke", "--bench-set", "epoch=1", "--bench-out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert "unknown key 'epoch'" in proc.stdout + proc.stderr


def _server_processes(state_root: Path) -> list[psutil.Process]:
    """Live processes of Covalent servers whose isolated state lives under state_root."""
    found = []
    for proc in psutil.process_iter():
        try:
            config_dir = proc.environ().get("COVALENT_CONFIG_DIR", "")
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if config_dir.startswith(str(state_root)):
            found.append(proc)
    return found


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_interrupted_benchmark_keeps_records_and_stops_its_server(
    synthetic_root, tmp_path, sig: signal.Signals
) -> None:
    out, state = tmp_path / "reports", tmp_path / "state"
    state.mkdir()
    cmd = [
        sys.executable, "-m", "pytest", "bench", "--benchmark-only", "-q", "-p",
        "no:cacheprovider", "--bench-profile", "smoke", "--bench-out", str(out),
        "--data-dir", str(synthetic_root), "--bench-set", "train_subset=256",
        "--bench-set", "test_subset=128", "--bench-set", "rounds=50",
        "--bench-order", "grouped",
    ]
    # The harness puts its server's state under TMPDIR: that is how we find its processes.
    env = {**os.environ, "TMPDIR": str(state)}
    env.pop("COVALENT_BENCH_SERVER", None)
    # Ctrl-C must reach it even when this test runs in a background job, where the shell
    # starts commands with SIGINT ignored (and Python then installs no KeyboardInterrupt).
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    runs = out / "runs.csv"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if runs.exists() and len(runs.read_text().splitlines()) >= 3:  # header + 2 runs
            break
        time.sleep(0.5)
    server = _server_processes(state)
    assert proc.poll() is None and server, "the benchmark did not get going"
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=120)  # 50 more rounds if the signal did not stop it

    assert proc.returncode != 0
    assert "Interrupted" in output or "KeyboardInterrupt" in output, output[-3000:]
    psutil.wait_procs(server, timeout=10)
    assert not [p for p in server if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not _server_processes(state), output[-3000:]
    kept = pd.read_csv(runs)
    # Every finished run is kept; the run the signal cut short has a row saying so.
    assert (kept["status"] == "COMPLETED").sum() >= 2
    assert set(kept["status"]) <= {"COMPLETED", "INTERRUPTED"}
    assert (kept["status"] == "INTERRUPTED").sum() <= 1
