"""One configuration in one mode -> one record (timings, metrics, ids).

The Covalent path times the client's own view of a run: the dispatch call, waiting for a
terminal status (polled every POLL_S, not the stock 1 s sleep, which would quantise wall
times to about a second), and downloading the result.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import covalent as ct

from mnist_core.config import WorkflowConfig
from mnist_core.workflow import WorkflowOutput, dispatch, output_of, run_plain, status_name

POLL_S = 0.05
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "POSTPROCESSING_FAILED"}


class DispatchTimeoutError(TimeoutError):
    pass


@dataclass
class RunRecord:
    """A measured run: what the records writer turns into a CSV row."""

    mode: str
    executor: str
    wall_s: float
    output: WorkflowOutput | None
    dispatch_id: str = ""
    status: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    error: str = ""

    def row(self) -> dict[str, Any]:
        out = self.output
        return {
            "mode": self.mode,
            "executor": self.executor,
            "wall_s": round(self.wall_s, 4),
            "accuracy": out.accuracy if out else None,
            "test_loss": out.test_loss if out else None,
            "weights_sha256": out.weights_sha256 if out else None,
            "torch_threads": out.threads if out else None,
            "resolved_device": out.device if out else None,
            "train_losses": out.train_losses if out else None,
            "train_counter": out.train_counter if out else None,
            "dispatch_id": self.dispatch_id,
            "status": self.status,
            "error": self.error,
            **{k: round(v, 4) for k, v in self.timings.items()},
        }


def measure_plain(config: WorkflowConfig) -> RunRecord:
    start = time.perf_counter()
    output = run_plain(config)
    return RunRecord("plain", "", time.perf_counter() - start, output, status="COMPLETED")


def measure_covalent(
    config: WorkflowConfig, executor: str, address: str, timeout_s: float = 3600.0
) -> RunRecord:
    """Dispatch, poll to a terminal status, download; a failed dispatch is recorded too."""
    start = time.perf_counter()
    dispatch_id = dispatch(config, executor, address)
    submitted = time.perf_counter()
    status = ""
    while status not in TERMINAL:
        if time.perf_counter() - submitted > timeout_s:
            raise DispatchTimeoutError(
                f"dispatch {dispatch_id} still {status} after {timeout_s:.0f} s on {address}"
            )
        time.sleep(POLL_S)
        reply = ct.get_result(dispatch_id, status_only=True, dispatcher_addr=address)
        status = status_name(reply["status"])
    done = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="covalent-bench-result-") as results_dir:
        result = ct.get_result(
            dispatch_id,
            dispatcher_addr=address,
            results_dir=results_dir,
            intermediate_outputs=False,
        )
        try:
            output = output_of(result, address, results_dir)
            error = ""
        except Exception as exc:  # recorded, then re-raised by the caller's check
            output, error = None, str(exc)
    end = time.perf_counter()
    server_s = None
    if result.start_time and result.end_time:
        server_s = (result.end_time - result.start_time).total_seconds()
    timings = {"submit_s": submitted - start, "retrieve_s": end - done}
    if server_s is not None:
        timings["server_s"] = server_s
    return RunRecord(
        "covalent", executor, end - start, output, dispatch_id, status, timings, error
    )
