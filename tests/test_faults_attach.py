"""Addresses to attach to are checked before anything starts (issue 22, point 8): a dead
--covalent-address or --dask-scheduler is one line (pytest's usage error), not a server of
ours started first, nor hundreds of lines of tracebacks around the one helpful sentence."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _dead_port() -> int:
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(("option", "address", "words"), [
    ("--covalent-address", "http://127.0.0.1:{port}", "No Covalent server answers at"),
    ("--dask-scheduler", "tcp://127.0.0.1:{port}", "No Dask scheduler answers at"),
])
def test_a_dead_address_is_one_line_before_anything_starts(
    option: str, address: str, words: str, tmp_path: Path
) -> None:
    target = address.format(port=_dead_port())
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "bench", "--benchmark-only", "-q", "-p",
         "no:cacheprovider", "--bench-workload", "examples.fanout:fanout_workflow",
         "--bench-set", "executors=['local', 'external']", "--bench-out", str(tmp_path),
         option, target],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 4, out  # a usage error: nothing ran
    errors = [line for line in out.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and words in errors[0] and target in errors[0], out
    assert "What to do" in errors[0] and "Traceback" not in out, out
    assert len(out.splitlines()) < 10, out
    assert not (tmp_path / "runs.csv").exists()
