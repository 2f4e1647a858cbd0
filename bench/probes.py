"""Time inside the tasks, from any executor, without touching task bodies or results.

`task_probe(log_dir, run_tag)` returns a wrapper for task functions. The wrapped task
runs unchanged and, as it ends, appends one JSON line to <log_dir>/<run_tag>.jsonl: its
own wall and process-CPU time, torch's thread count, pid and peak RSS. The wrapper is a
closure, so cloudpickle ships it by value to Covalent's workers (the task it wraps goes
by reference); they only need the same filesystem, which local and dask executors share.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnist_core.tasks import TaskWrapper


def task_probe(log_dir: str | os.PathLike, run_tag: str) -> TaskWrapper:
    log_path = str(Path(log_dir) / f"{run_tag}.jsonl")

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def probed(*args: Any, **kwargs: Any) -> Any:
            start, wall0, cpu0 = time.time(), time.perf_counter(), time.process_time()
            failed = True
            try:
                result = fn(*args, **kwargs)
                failed = False
                return result
            finally:
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                torch = sys.modules.get("torch")
                record = {
                    "run_tag": run_tag,
                    "task": fn.__name__,
                    "pid": os.getpid(),
                    "start": start,
                    "end": start + wall,
                    "wall_s": wall,
                    "cpu_s": cpu,
                    "threads": torch.get_num_threads() if torch else None,
                    "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                    "failed": failed,
                }
                with open(log_path, "a") as f:
                    f.write(json.dumps(record) + "\n")

        # Only the name: Covalent names the node after it. Copying __module__/__qualname__
        # (functools.wraps) would invite pickling by reference to the unwrapped task.
        probed.__name__ = fn.__name__
        probed.__doc__ = fn.__doc__
        return probed

    return wrap


def read_probes(log_dir: str | os.PathLike, run_tag: str) -> list[dict[str, Any]]:
    """The task records of one run, in the order the tasks ended."""
    path = Path(log_dir) / f"{run_tag}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
