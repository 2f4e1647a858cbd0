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


def duration(seconds: float) -> str:
    """'42 s', '3 min 05 s', '1 h 02 min'."""
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
        self.per_config: dict[str, dict[str, list[float]]] = defaultdict(
            lambda: defaultdict(list))  # kind -> configuration -> seconds per run
        self.walls: dict[tuple[str, str], list[float]] = defaultdict(list)  # measured only
        self.started = time.monotonic()
        self.label_width = max((len(k) for k in self.planned), default=8)

    def announce(self, cases: int, configurations: int, workloads: str,
                 at_most: bool = False) -> None:
        """`at_most`: rounds are added until a precision is reached, so fewer may run."""
        kinds = ", ".join(f"{n} {kind}" for kind, n in self.planned.items())
        self._line(f"benchmark: {'at most ' * at_most}{self.total} runs ({kinds}) in {cases} "
                   f"cases over {configurations} configuration(s) of {workloads}")

    def skipped(self, label: str, runs: int = 1) -> None:
        """Runs of the plan that will not happen (a precision already reached)."""
        self.planned[label] = max(self.planned.get(label, 0) - runs, self.runs_done(label))
        self.total = sum(self.planned.values())

    def run_done(self, config_id: str, label: str, round_: int, rounds: int, warmup: bool,
                 wall_s: float, status: str, elapsed_s: float) -> None:
        self.per_config[label][config_id].append(elapsed_s)
        if not warmup and status == "COMPLETED":
            self.walls[(config_id, label)].append(wall_s)
        finished = sum(map(self.runs_done, self.per_config))
        parts = [f"[{finished:>{len(str(self.total))}}/{self.total}]",
                 f"{f'round {round_ + 1}/{rounds}' + (' warm-up' if warmup else ''):<18}",
                 f"{label:<{self.label_width}}", f"wall {wall_s:7.2f} s"]
        if status != "COMPLETED":
            parts.append(status)
        overhead = self._overhead(config_id, label)
        if overhead:
            parts.append(overhead)
        parts.append(f"ETA {duration(self.eta())}")
        self._line("  ".join(parts) + f"  {config_id}")

    def _overhead(self, config_id: str, label: str) -> str:
        plain = self.walls.get((config_id, "plain"))
        mine = self.walls.get((config_id, label))
        if label == "plain" or label.endswith("-bare") or not plain or not mine:
            return ""
        base = statistics.median(plain)
        over = statistics.median(mine) - base
        text = f"overhead so far {over:+.2f} s"
        if base <= 0:
            return text
        if abs(over) >= 10 * base:  # a near-empty plain run: a ratio reads better than 10^5 %
            return f"{text} ({over / base:,.0f}x plain)"
        return f"{text} ({100 * over / base:+.0f} %)"

    def eta(self) -> float:
        """Seconds left: for each kind, its runs left times what a run of one of its
        configurations typically took: the median over the configurations run so far of
        each one's mean (the session's, over every kind, for a kind not seen yet). Not the
        mean over runs: in a sweep of growing graphs (the envelope) one 1,000-task graph
        would make every later run look like it, and promise hours for minutes; a
        configuration still to come that is larger than all before it is not foreseen."""
        def typical(configs: list[dict[str, list[float]]]) -> float:
            means = [statistics.fmean(v) for c in configs for v in c.values() if v]
            return statistics.median(means) if means else 0.0

        fallback = typical(list(self.per_config.values()))
        return sum((self.planned[k] - self.runs_done(k)) *
                   (typical([self.per_config[k]]) if self.runs_done(k) else fallback)
                   for k in self.planned)

    def runs_done(self, label: str) -> int:
        return sum(map(len, self.per_config.get(label, {}).values()))

    def note(self, text: str) -> None:
        """A line that is not a run (an environment that failed to come up, say)."""
        self._line(text)

    def _line(self, text: str) -> None:
        if self.reporter is None:
            return
        suspended = (self.capture.global_and_fixture_disabled() if self.capture is not None
                     else contextlib.nullcontext())
        # Straight to the terminal writer: the reporter's write_line would make pytest
        # re-print the module's path before the next case.
        writer = self.reporter.config.get_terminal_writer()
        with suspended:
            if writer.width_of_current_line:
                writer.line()
            writer.line(text)
