"""Bring your own lattice: any importable ct.lattice, measured plain and on a real server."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from bench.records import load_phases, load_runs
from bench.workloads import WorkloadError, workload_for
from bench.workloads.digest import digest

REPO = Path(__file__).resolve().parents[1]

# A workflow in a file only this client can import: a fan-out, a sublattice, and a task
# that takes a function as its argument.
USER_WORKFLOW = '''
import covalent as ct


def double(x):
    return 2 * x


@ct.electron
def square(x):
    return x * x


@ct.electron
def apply(fn, values):
    return [fn(v) for v in values]


@ct.electron
def total(values):
    return sum(values)


@ct.lattice
def inner(k: int):
    return total([square(i) for i in range(k)])


@ct.lattice
def workflow(n: int = 4, k: int = 3):
    squares = [square(i) for i in range(n)]
    doubled = apply(double, squares)
    sub = ct.electron(inner)(k)
    return {"doubled": doubled, "sub": sub, "pair": (sub, n)}  # a tuple comes back a list


@ct.electron
def explode(x):
    raise ValueError(f"boom at {x}")


@ct.lattice
def failing(x: int = 1):
    return explode(square(x))


not_a_lattice = double
'''


@pytest.fixture
def user_module(tmp_path: Path) -> Path:
    path = tmp_path / "user_wf.py"
    path.write_text(textwrap.dedent(USER_WORKFLOW))
    return path


def _bench(out: Path, address: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "bench", "--benchmark-only", "-q", "-p",
           "no:cacheprovider", "--bench-out", str(out), "--covalent-address", address,
           "--bench-set", "rounds=2", "--bench-set", "warmup_rounds=0", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_user_lattice_with_sublattice_and_fanout_does_the_same_work(
    user_module: Path, covalent_server, tmp_path: Path
) -> None:
    out = tmp_path / "reports"
    proc = _bench(out, covalent_server.address, "--bench-workload", f"{user_module}:workflow",
                  "--bench-arg", "n=5", "--bench-set", "executors=['local', 'dask']")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    runs = load_runs(out)
    assert (runs["status"] == "COMPLETED").all()
    assert set(runs["config_id"]) == {"workflow-n=5"} and (runs["n"] == 5).all()
    expected = digest({"doubled": [0, 2, 8, 18, 32], "sub": 5, "pair": (5, 5)})
    assert set(runs["output_digest"]) == {expected}, "plain and Covalent returned the same"
    # Every task was timed from inside, the sublattice's own tasks included.
    cov = runs[runs["mode"] == "covalent"]
    # 5 squares + apply here; the sublattice: 3 squares + total.
    assert set(cov["tasks_probed"]) == {"10/6+1 sublattice"}
    phases = load_phases(out)
    tasks = phases[(phases["phase"] == "in_task") & phases["run_id"].isin(cov["run_id"])]
    assert sorted(tasks.groupby("run_id").size().unique()) == [10]
    summary = pd.read_csv(out / "summary.csv")
    assert summary["same_output"].all() and summary["deterministic"].all()
    assert summary[["orchestration_s", "compute_inflation_s"]].notna().all().all()


@pytest.mark.slow
def test_a_failing_task_is_a_failed_row_naming_it_and_the_session_goes_on(
    user_module: Path, covalent_server, tmp_path: Path
) -> None:
    out = tmp_path / "reports"
    proc = _bench(out, covalent_server.address, "--bench-workload", f"{user_module}:failing",
                  "--bench-set", "executors=['local']", "--bench-set", "rounds=1")
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "2 failed" in proc.stdout  # plain and local both ran and both failed
    runs = load_runs(out)
    plain = runs[runs["mode"] == "plain"].iloc[0]
    assert plain["status"] == "FAILED" and "ValueError: boom at 1" in plain["error"]
    cov = runs[runs["mode"] == "covalent"].iloc[0]
    assert cov["status"] == "FAILED" and cov["dispatch_id"]
    assert cov["error"].startswith("explode: ") and "boom at 1" in cov["error"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bench-workload", "no_such_module_x:wf"],
         "cannot import 'no_such_module_x': ModuleNotFoundError"),
        (["--bench-workload", "{module}:not_a_lattice"], "is a function, not a Covalent lattice"),
        (["--bench-workload", "{module}:missing"], "has no attribute 'missing'"),
        (["--bench-workload", "{module}:workflow", "--bench-arg", "m=1"],
         "unknown key 'm'.*parameters of workload 'workflow': n, k"),
        (["--bench-workload", "{module}:workflow", "--bench-arg", "n"], "expects KEY=VALUE"),
    ],
    ids=["no-module", "not-a-lattice", "no-attribute", "unknown-arg", "malformed-arg"],
)
def test_bad_workloads_are_one_line_errors_at_collection(
    user_module: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    args = [a.replace("{module}", str(user_module)) for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "bench", "--benchmark-only", "--collect-only", "-q",
         "-p", "no:cacheprovider", "--bench-out", str(tmp_path), *args],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 4, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and pytest.importorskip("re").search(message, errors[0]), proc.stderr
    assert "Traceback" not in proc.stderr


def test_required_arguments_and_inputs_factory(user_module: Path) -> None:
    module = user_module.with_name("needs_arg.py")
    module.write_text(textwrap.dedent('''
        import covalent as ct

        @ct.electron
        def scale(values, factor):
            return [v * factor for v in values]

        @ct.lattice
        def wf(values, factor: float = 2.0):
            return scale(values, factor)

        def inputs(**params):
            return {"values": [1.0, 2.0, 3.0]}
    '''))
    with pytest.raises(WorkloadError, match="needs values: give each with --bench-arg"):
        workload_for(f"{module}:wf").check({})
    workload = workload_for(f"{module}:wf", inputs=f"{module}:inputs")
    params = workload.check({"factor": 3.0})
    args, kwargs = workload.inputs(params)
    assert kwargs == {"factor": 3.0, "values": [1.0, 2.0, 3.0]}
    assert workload.config_id(params) == "wf-factor=3.0"


def test_digest_is_canonical() -> None:
    np = pytest.importorskip("numpy")
    assert digest({"a": 1, "b": [1.5, "x"]}) == digest({"b": [1.5, "x"], "a": 1})
    assert digest(np.arange(3)) == digest(np.arange(3)) != digest(np.arange(3.0))
    # Covalent hands a lattice's returned tuple back as a list: the same work.
    assert digest((1, 2)) == digest([1, 2]) != digest([2, 1])


def test_a_default_json_cannot_carry_stays_behind_for_the_other_client() -> None:
    """An environment's client gets the parameters as JSON: a function default (the
    tutorial's `loss_fn=F.nll_loss`) is left for its own copy of the workload to fill."""
    import covalent as ct

    from bench.run.client import RemoteClientError, _sendable
    from bench.workloads.lattice import LatticeWorkload

    @ct.lattice
    def scaled(x: int = 2, fn=abs) -> int:
        return fn(x)

    workload = LatticeWorkload(scaled)
    params = workload.check({"x": 3})
    assert _sendable(workload, params) == {"x": 3}
    assert workload.check(_sendable(workload, params)) == params  # the other side's view
    with pytest.raises(RemoteClientError, match=r"parameter fn=<built-in function max> "
                                                r"cannot be sent"):
        _sendable(workload, workload.check({"fn": max}))
