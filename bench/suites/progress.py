"""One line per finished run on the terminal: which run of how many, round, mode, wall
time, the overhead so far and an ETA for the session from the runs done so far.

Written through pytest's own terminal reporter, so the lines survive output capture and
sit between pytest's own; the tasks' own prints (the tutorial's loss lines) stay captured
unless pytest runs with `-s`."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections import defaultdict
from typing import Any


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Progress:
    """Counts runs against the plan and estimates what is left from what took how long."""

    def __init__(self, reporter: Any, planned: dict[str, int], capture: Any = None) -> None:
        """`planned`: runs per kind (mode or executor label), over the whole session;
        `capture`: pytest's capture manager, suspended while a line is written (a run ends
        inside a test, where pytest captures the terminal)."""
        self.reporter, self.capture = reporter, capture
        self.planned = dict(planned)
        self.total = sum(planned.values())
        self.done: dict[str, list[float]] = defaultdict(list)  # kind -> seconds per run
        self.walls: dict[tuple[str, str], list[float]] = defaultdict(list)  # measured only
        self.started = time.monotonic()

    def announce(self, cases: int, configurations: int, workloads: str) -> None:
        kinds = ", ".join(f"{n} {kind}" for kind, n in self.planned.items())
        self._line(f"benchmark: {self.total} runs ({kinds}) in {cases} cases over "
                   f"{configurations} configuration(s) of {workloads}")

    def run_done(self, config_id: str, label: str, round_: int, rounds: int, warmup: bool,
                 wall_s: float, status: str, elapsed_s: float) -> None:
        self.done[label].append(elapsed_s)
        if not warmup and status == "COMPLETED":
            self.walls[(config_id, label)].append(wall_s)
        finished = sum(len(v) for v in self.done.values())
        parts = [f"[{finished:>{len(str(self.total))}}/{self.total}]",
                 f"{f'round {round_ + 1}/{rounds}' + (' warm-up' if warmup else ''):<18}",
                 f"{label:<8}", f"wall {wall_s:7.2f} s"]
        if status != "COMPLETED":
            parts.append(status)
        overhead = self._overhead(config_id, label)
        if overhead:
            parts.append(overhead)
        parts.append(f"ETA {_duration(self.eta())}")
        self._line("  ".join(parts) + f"  {config_id}")

    def _overhead(self, config_id: str, label: str) -> str:
        plain = self.walls.get((config_id, "plain"))
        mine = self.walls.get((config_id, label))
        if label == "plain" or label.endswith("-bare") or not plain or not mine:
            return ""
        over = statistics.median(mine) - statistics.median(plain)
        pct = 100 * over / statistics.median(plain) if statistics.median(plain) else 0.0
        return f"overhead so far {over:+.2f} s ({pct:+.0f} %)"

    def eta(self) -> float:
        """Seconds left: for each kind, its runs left times its median duration so far (the
        session's median over all runs for a kind not seen yet)."""
        seen = [s for v in self.done.values() for s in v]
        if not seen:
            return 0.0
        fallback = statistics.median(seen)
        return sum((self.planned[k] - len(self.done.get(k, []))) *
                   (statistics.median(self.done[k]) if self.done.get(k) else fallback)
                   for k in self.planned)

    def note(self, text: str) -> None:
        """A line that is not a run (an environment that failed to come up, say)."""
        self._line(text)

    def _line(self, text: str) -> None:
        if self.reporter is None:
            return
        suspended = (self.capture.global_and_fixture_disabled() if self.capture is not None
                     else contextlib.nullcontext())
        with suspended:
            self.reporter.ensure_newline()
            self.reporter.write_line(text)
