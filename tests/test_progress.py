"""The progress lines a benchmark session prints: one per run, aligned, with an honest ETA."""

from __future__ import annotations

from types import SimpleNamespace

from bench.progress import Progress


class Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.width_of_current_line = 0

    def line(self, text: str = "") -> None:
        self.lines.append(text)


def progress(planned: dict[str, int]) -> tuple[Progress, Writer]:
    writer = Writer()
    reporter = SimpleNamespace(config=SimpleNamespace(get_terminal_writer=lambda: writer))
    return Progress(reporter, planned), writer


def test_one_line_per_run_with_labels_aligned_and_overhead_so_far() -> None:
    p, w = progress({"plain": 2, "0.240.0:local": 2, "old:dask": 2})
    p.announce(6, 1, "chain", at_most=True)
    assert w.lines[0].startswith("benchmark: at most 6 runs (2 plain, 2 0.240.0:local")
    p.run_done("c", "plain", 0, 2, False, 2.0, "COMPLETED", 2.0)
    p.run_done("c", "0.240.0:local", 0, 2, False, 5.0, "COMPLETED", 5.0)
    p.run_done("c", "old:dask", 0, 2, False, 4.0, "FAILED", 4.0)
    plain, local, dask = w.lines[1:]
    assert plain.index("wall") == local.index("wall") == dask.index("wall")
    assert "overhead so far +3.00 s (+150 %)" in local
    assert "FAILED" in dask and "overhead" not in dask  # a failed run is not a measurement
    assert plain.startswith("[1/6]") and dask.startswith("[3/6]")


def test_a_near_empty_plain_run_reads_as_a_ratio() -> None:
    p, w = progress({"plain": 1, "local": 1})
    p.run_done("chain", "plain", 0, 1, False, 0.002, "COMPLETED", 0.002)
    p.run_done("chain", "local", 0, 1, False, 2.5, "COMPLETED", 2.5)
    assert "overhead so far +2.50 s (1,249x plain)" in w.lines[-1]


def test_skipped_runs_leave_the_plan_and_the_eta() -> None:
    p, _ = progress({"plain": 10, "local": 10})
    p.run_done("c", "plain", 0, 10, False, 1.0, "COMPLETED", 1.0)
    p.run_done("c", "local", 0, 10, False, 3.0, "COMPLETED", 3.0)
    assert p.eta() == 9 * 1.0 + 9 * 3.0
    p.skipped("plain", 8)
    p.skipped("local", 8)
    assert p.total == 4 and p.eta() == 1.0 + 3.0
    p.skipped("local", 5)  # never below what already ran
    assert p.planned["local"] == 1


def test_one_huge_configuration_does_not_make_every_later_run_look_like_it() -> None:
    p, _ = progress({"local": 10})
    for config, seconds in [("n=1", 2.0), ("n=10", 6.0), ("n=100", 50.0), ("n=1000", 600.0),
                            ("chain=3", 2.0)]:
        p.run_done(config, "local", 0, 1, False, seconds, "COMPLETED", seconds)
    assert p.eta() == 5 * 6.0  # the median configuration's, not the mean run's 132 s
    p.run_done("n=1", "local", 1, 2, False, 4.0, "COMPLETED", 4.0)  # n=1 now 3 s a run
    assert p.eta() == 4 * 6.0
