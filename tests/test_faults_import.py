"""A user's module that exits while being imported is a one-line WorkloadError, not pytest's
INTERNALERROR> SystemExit (issue 22, faults second sweep)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.workloads import WorkloadError, workload_for

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("call", "shown"), [
    ("sys.exit(3)", "sys.exit(3)"),
    ("sys.exit('no GPU here')", "sys.exit('no GPU here')"),
    ("sys.exit()", "sys.exit(None)"),
    ("raise SystemExit(0)", "sys.exit(0)"),
])
def test_sys_exit_at_import_is_a_workload_error(tmp_path, call: str, shown: str) -> None:
    path = tmp_path / "exits_wf.py"
    path.write_text(f"import sys\n{call}\n")
    with pytest.raises(WorkloadError) as raised:
        workload_for(f"{path}:wf")
    message = str(raised.value)
    assert message == (f"--bench-workload: cannot import '{path}': it called {shown} while "
                       f"being imported; guard the module's script part with "
                       f"`if __name__ == \"__main__\":`")
    assert "\n" not in message
    assert "exits_wf" not in sys.modules  # no half-imported module left behind


def test_sys_exit_in_a_module_imported_by_name(tmp_path, monkeypatch) -> None:
    (tmp_path / "exits_by_name.py").write_text("import sys\nsys.exit(2)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(WorkloadError, match=r"'exits_by_name': it called sys.exit\(2\) while"):
        workload_for("exits_by_name:wf")


def test_keyboard_interrupt_at_import_is_not_swallowed(tmp_path) -> None:
    path = tmp_path / "interrupted_wf.py"
    path.write_text("raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        workload_for(f"{path}:wf")


def test_sys_exit_at_import_is_one_error_line_at_collection(tmp_path) -> None:
    path = tmp_path / "exits_wf.py"
    path.write_text("import sys\nsys.exit(3)\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "bench", "--benchmark-only", "--collect-only", "-q",
         "-p", "no:cacheprovider", "--bench-out", str(tmp_path / "out"),
         "--bench-workload", f"{path}:wf"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert "INTERNALERROR" not in proc.stdout + proc.stderr
    assert proc.returncode == 4, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and "called sys.exit(3) while being imported" in errors[0]
