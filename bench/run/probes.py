"""Time inside the tasks, from any executor, without touching task bodies or results.

`task_probe(log_dir, run_tag)` returns a wrapper for task functions. The wrapped task
runs unchanged and, as it ends, appends one JSON line to <log_dir>/<run_tag>.jsonl: its
own wall and process-CPU time (and of it, the kernel's share and the page faults: memory
allocator behaviour shows there), torch's thread count, pid, peak RSS and the environment
variables that change how fast the same code runs (ENV_KNOBS). The wrapper is a
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

# Set by Dask's nanny on every worker it spawns (distributed.nanny.pre-spawn-environ) and
# read by torch and glibc: the same task can run at another speed under another value.
ENV_KNOBS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_")
# Something that wraps a task function without editing it.
TaskWrapper = Callable[[Callable[..., Any]], Callable[..., Any]]


def task_probe(log_dir: str | os.PathLike, run_tag: str) -> TaskWrapper:
    log_path = str(Path(log_dir) / f"{run_tag}.jsonl")

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def probed(*args: Any, **kwargs: Any) -> Any:
            start, wall0, cpu0 = time.time(), time.perf_counter(), time.process_time()
            usage0 = resource.getrusage(resource.RUSAGE_SELF)
            failed = True
            try:
                result = fn(*args, **kwargs)
                failed = False
                return result
            finally:
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                usage = resource.getrusage(resource.RUSAGE_SELF)
                torch = sys.modules.get("torch")
                record = {
                    "run_tag": run_tag,
                    "task": getattr(fn, "__name__", type(fn).__name__),
                    "pid": os.getpid(),
                    "start": start,
                    "end": start + wall,
                    "wall_s": wall,
                    "cpu_s": cpu,
                    "sys_cpu_s": usage.ru_stime - usage0.ru_stime,
                    "page_faults": (usage.ru_minflt + usage.ru_majflt
                                    - usage0.ru_minflt - usage0.ru_majflt),
                    "env": {k: os.environ.get(k, "") for k in ENV_KNOBS},
                    "threads": torch.get_num_threads() if torch else None,
                    "maxrss_mb": usage.ru_maxrss / 1024,
                    "failed": failed,
                }
                with open(log_path, "a") as f:
                    f.write(json.dumps(record) + "\n")

        # Only the name: Covalent names the node after it. Copying __module__/__qualname__
        # (functools.wraps) would invite pickling by reference to the unwrapped task.
        probed.__name__ = getattr(fn, "__name__", type(fn).__name__)
        probed.__doc__ = getattr(fn, "__doc__", None)
        return probed

    return wrap


def read_probes(log_dir: str | os.PathLike, run_tag: str) -> list[dict[str, Any]]:
    """The task records of one run, in the order the tasks ended."""
    path = Path(log_dir) / f"{run_tag}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
