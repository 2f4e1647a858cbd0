"""The harness from a notebook: examples/tutorial.ipynb executed headless in a real Jupyter
kernel (nbclient + ipykernel) on synthetic MNIST-format data; a lattice defined in cells (with
a sublattice) measured with bench.measure against the same lattice from a file through the
CLI, records compared column for column; and a kernel interrupt mid-dispatch."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pandas as pd
import psutil
import pytest
from jupyter_client.manager import start_new_kernel
from nbclient import NotebookClient

from bench.records import RUN_COLUMNS
from mnist_core.data import write_synthetic_mnist

REPO = Path(__file__).resolve().parents[1]
TUTORIAL = REPO / "examples" / "tutorial.ipynb"
ROUNDS = 2  # measured rounds of the tutorial notebook's session in its test
CI = re.compile(r"\[[−+-]?\d[\d.,e−+-]*, [−+-]?\d[\d.,e−+-]*\]")  # "[+3.35, +4.60]"

# A lattice of the user's, as notebook cells define it: electrons, a sublattice, an object
# argument. The same source is also written to a file for the CLI.
FLOW = '''
import covalent as ct


@ct.electron
def square(x):
    return x * x


@ct.electron
def total(values):
    return sum(values)


@ct.lattice
def inner(k: int):
    return total([square(i) for i in range(k)])


@ct.lattice
def flow(n: int = 3):
    parts = [square(i) for i in range(n)]
    sub = ct.electron(inner)(n)
    return {"parts": parts, "sub": sub}
'''


def _kernel_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COVALENT_", "BENCH_"))}
    env.update(HOME=str(home), PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return env


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return [p for p in psutil.Process(pid).children(recursive=True) if p.is_running()
                and p.status() != psutil.STATUS_ZOMBIE]
    except psutil.NoSuchProcess:
        return []


def _run_cells(nb: nbformat.NotebookNode, cwd: Path, env: dict[str, str],
               check_after: int | None = None) -> list[psutil.Process]:
    """Execute every cell in one kernel; return the kernel's live descendants after cell
    `check_after` (the measuring one) finished, while the kernel still runs."""
    client = NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}})
    left: list[psutil.Process] = []
    with client.setup_kernel(env=env, cwd=str(cwd)):
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
            if index == check_after:
                left = _descendants(client.km.provisioner.pid)
    return left


def _outputs(cell: nbformat.NotebookNode) -> dict[str, str]:
    out: dict[str, str] = {}
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            out["stream"] = out.get("stream", "") + output["text"]
        for mime, value in output.get("data", {}).items():
            out[mime] = out.get(mime, "") + (value if isinstance(value, str) else str(value))
    return out


@pytest.fixture(scope="module")
def tutorial_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HOME whose ~/data/mnist holds a small MNIST-format set, where the tutorial's own
    data_loader looks (the server inherits HOME, so its tasks find it too)."""
    home = tmp_path_factory.mktemp("home")
    write_synthetic_mnist(home / "data" / "mnist", 512, 256, seed=0)
    return home


def test_the_notebook_holds_the_seed_tutorials_cells_verbatim(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(REPO))  # pytest puts tests/, not the repository, on it
    from examples.tutorial_seed import definition_cells, tutorial_path

    seed = [source.rstrip("\n") for _, source in definition_cells(tutorial_path().read_text())]
    code = [c.source for c in nbformat.read(TUTORIAL, as_version=4).cells
            if c.cell_type == "code"]
    start = code.index(seed[0])
    assert code[start:start + len(seed)] == seed  # in order, none edited (not even by a linter)
    assert "measure(workflow" in code[start + len(seed)]


@pytest.mark.slow
def test_the_tutorial_notebook_measures_its_workflow(tutorial_home: Path, tmp_path: Path
                                                      ) -> None:
    nb = nbformat.read(TUTORIAL, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        "examples/tutorial.ipynb is committed without outputs"
    measuring = next(i for i, c in enumerate(nb.cells) if "measure(" in c.source)
    # The notebook's own cell, with fewer rounds: the path is the same, 3 fewer minutes.
    assert "rounds=6" in nb.cells[measuring].source
    nb.cells[measuring].source = nb.cells[measuring].source.replace("rounds=6", f"rounds={ROUNDS}")
    left = _run_cells(nb, tmp_path, _kernel_env(tutorial_home), check_after=measuring)
    assert left == [], f"processes left after measure(): {[p.cmdline() for p in left]}"

    shown = _outputs(nb.cells[-1])
    html = shown.get("text/html", "")
    assert "Findings" in html and "data:image/png;base64," in html, html[:2000]
    text = re.sub(r"<[^>]+>", "", html)
    assert "Covalent `local` adds" in text or "Covalent local adds" in text, text[:2000]
    assert CI.search(text), text[:2000]
    # The same-work verdict: the tutorial trains with the unseeded global RNG of whichever
    # process runs the task, so it is told as not checkable (not failed, not claimed equal).
    assert "Same work could not be checked" in text or "same work" in text, text[:2000]
    # Its records, as the CLI writes them, one session under ./covalent-bench/.
    (records,) = (tmp_path / "covalent-bench").iterdir()
    runs = pd.read_csv(records / "runs.csv")
    assert tuple(runs.columns) == RUN_COLUMNS
    assert set(runs["executor"].fillna("")) == {"", "local", "dask"}
    assert (runs["status"] == "COMPLETED").all() and len(runs) == 3 * (1 + ROUNDS)  # warm-up
    assert (runs["tasks_probed"].dropna().astype(str).isin(["4/4"])).all()
    # The progress bar and its ETA went to the cell's output.
    assert "ETA" in _outputs(nb.cells[measuring]).get("stream", "")


@pytest.mark.slow
def test_a_lattice_from_cells_gives_what_the_cli_gives_from_a_file(
    covalent_server, tmp_path: Path
) -> None:
    nb_out, cli_out = tmp_path / "nb", tmp_path / "cli"
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(FLOW),
        nbformat.v4.new_code_cell(
            f"from bench import measure\n"
            f"s = measure(flow, n=3, executors=['local', 'dask'], rounds=2, warmup_rounds=0, "
            f"out={str(nb_out)!r}, address={covalent_server.address!r})"),
        nbformat.v4.new_code_cell("print(s.same_output)\nprint(s.findings)\ns.plot('wall_time')"),
    ])
    _run_cells(nb, tmp_path, _kernel_env(Path.home()))
    printed = _outputs(nb.cells[2])
    assert printed["stream"].startswith("True\n"), printed
    assert CI.search(printed["stream"]) and "image/png" in printed, printed.keys()

    flow_file = tmp_path / "user_flow.py"
    flow_file.write_text(textwrap.dedent(FLOW))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "bench", "--benchmark-only", "-q", "-p",
         "no:cacheprovider", "--bench-workload", f"{flow_file}:flow", "--bench-arg", "n=3",
         "--bench-set", "executors=['local', 'dask']", "--bench-set", "rounds=2",
         "--bench-set", "warmup_rounds=0", "--bench-out", str(cli_out),
         "--covalent-address", covalent_server.address],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    from bench import Session

    a, b = Session.load(nb_out), Session.load(cli_out)
    for name in ("runs.csv", "phases.csv", "summary.csv"):
        assert list(pd.read_csv(nb_out / name).columns) == list(
            pd.read_csv(cli_out / name).columns), name
    keys = ["workload", "config_id", "mode", "executor", "round", "status", "output_digest",
            "tasks_probed"]
    assert a.runs[keys].equals(b.runs[keys])
    assert a.same_output and b.same_output
    assert list(a.summary["executor"]) == list(b.summary["executor"])
    assert a.plots == b.plots
    # The 3 squares, the sublattice's 3 squares and its total were timed from inside.
    assert set(a.runs.loc[a.runs["mode"] == "covalent", "tasks_probed"]) == {"7/3+1 sublattice"}


INTERRUPTED_FLOW = '''
import os, time
from pathlib import Path
import covalent as ct

KERNEL = os.getpid()
MARK = Path({mark!r})


@ct.electron
def slow(x):
    # Dispatched (not in the kernel) and the first time only: a task to interrupt.
    if os.getpid() != KERNEL and not MARK.exists():
        MARK.write_text(str(os.getpid()))
        time.sleep(300)
    return x + 1


@ct.lattice
def flow(x: int = 1):
    return slow(x)
'''


def _execute(kc, code: str, timeout: float) -> dict:
    msg_id = kc.execute(code)
    while True:
        reply = kc.get_shell_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"]


@pytest.mark.slow
def test_interrupting_the_kernel_mid_dispatch(tmp_path: Path) -> None:
    mark, out, again = tmp_path / "running", tmp_path / "first", tmp_path / "second"
    km, kc = start_new_kernel(kernel_name="python3", env=_kernel_env(Path.home()),
                              cwd=str(tmp_path))
    try:
        assert _execute(kc, INTERRUPTED_FLOW.format(mark=str(mark)), 120)["status"] == "ok"
        msg_id = kc.execute(f"from bench import measure\ns = measure(flow, executors=['local'], "
                            f"rounds=1, warmup_rounds=0, out={str(out)!r})")
        task = None
        for _ in range(600):  # the task announces itself; wait for that event
            if mark.exists() and mark.read_text():
                task = int(mark.read_text())
                break
            try:  # an early failure would answer here instead
                reply = kc.get_shell_msg(timeout=0.5)
                if reply["parent_header"].get("msg_id") == msg_id:
                    pytest.fail(f"measure() ended before the task ran: {reply['content']}")
            except Exception as exc:  # queue.Empty: nothing yet
                if isinstance(exc, pytest.fail.Exception):
                    raise
        assert task is not None, "the dispatched task never started"
        km.interrupt_kernel()
        while True:
            reply = kc.get_shell_msg(timeout=180)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        assert reply["content"]["status"] == "error"
        # One line, not a traceback: where the rows are (a KeyboardInterrupt all the same).
        assert reply["content"]["ename"] == "Interrupted", reply["content"]
        assert reply["content"]["traceback"] == [
            f"Interrupted: {reply['content']['evalue']}"], reply["content"]["traceback"]
        assert f"2 run(s) recorded in {out}" in reply["content"]["evalue"]  # plain, local

        runs = pd.read_csv(out / "runs.csv")
        local = runs[runs["executor"] == "local"]
        assert list(local["status"]) == ["INTERRUPTED"], runs[["executor", "status", "error"]]
        assert local["dispatch_id"].notna().all()
        assert (runs.loc[runs["mode"] == "plain", "status"] == "COMPLETED").all()
        # The server, its pool and the interrupted task are gone; the kernel lives on.
        assert _descendants(km.provisioner.pid) == []
        assert not psutil.pid_exists(task) or psutil.Process(task).status() == "zombie"

        rerun = _execute(kc, f"s = measure(flow, executors=['local'], rounds=1, "
                             f"warmup_rounds=0, out={str(again)!r}, progress=False)\n"
                             f"print(s.same_output)", 300)
        assert rerun["status"] == "ok", rerun
        assert (pd.read_csv(again / "runs.csv")["status"] == "COMPLETED").all()
        assert _descendants(km.provisioner.pid) == []
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
