"""pytest plumbing of the suite: options, the session's Engine (bench.engine) as a fixture,
the cases as parameters, and the summary when the session ends. Loaded with
`-p bench.suites.plugin` (see pyproject)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.config import options
from bench.config.profiles import Profile, ProfileError, load_profile
from bench.engine import ORDERS, Case, Engine, Settings, SetupError, plan, planned_runs, prepare
from bench.progress import Progress
from bench.services.processes import loopback_no_proxy, signals_deferred
from bench.services.server import CovalentServer, client_dispatch_cache, server_for
from bench.workloads import WorkloadError
from mnist_core.data import resolve_data_dir

# Our own HTTP calls to loopback servers never go through a proxy the environment names.
loopback_no_proxy(os.environ)

PROFILE_ENV = "BENCH_PROFILE"
OUT_ENV = "BENCH_OUT"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("covalent-bench", "Covalent overhead benchmark")
    group.addoption(
        "--bench-profile",
        default=os.environ.get(PROFILE_ENV),
        help="profile in bench/config/ (smoke, quick, tutorial (default), full, pertask, "
        "lattice (default with --bench-workload)) or the path of a .toml profile; "
        "env BENCH_PROFILE",
    )
    group.addoption(
        "--bench-workload",
        default=None,
        metavar="MODULE:ATTR",
        help="measure this lattice (an importable ct.lattice, or path/to/file.py:ATTR) instead "
        "of the profile's workload; built in: mnist, chain, fanout",
    )
    group.addoption(
        "--bench-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter of the workload (the lattice's keyword argument), a TOML value; "
        "a list expands into one configuration per element (repeatable)",
    )
    group.addoption("--bench-inputs", default=None, metavar="MODULE:FUNC",
                    help="function(**params) -> dict of further lattice arguments (objects TOML "
                    "cannot express), called fresh for every run")
    group.addoption("--bench-digest", default=None, metavar="MODULE:FUNC",
                    help="function(return value) -> what the same-work check compares "
                    "(default: a digest of the whole return value)")
    group.addoption(
        "--bench-env",
        action="append",
        default=[],
        metavar="NAME=REQUIREMENT",
        help="measure Covalent in this environment too (repeatable; the first is the "
        "reference): a pip requirement such as covalent==0.238.0 or a path to a Covalent "
        "checkout; replaces the profile's [[environments]]",
    )
    group.addoption(
        "--bench-env-var", action="append", default=[], metavar="NAME:VARIABLE=VALUE",
        help="set an environment variable for environment NAME's server and client "
        "(repeatable), e.g. old-dask:COVALENT_USE_OLD_DASK=1",
    )
    group.addoption(
        "--bench-reference", action="store_true", default=False,
        help="also run the envelope's reference graph (a 10-task fan-out) with the same "
        "settings, so the report's prediction from an envelope is scaled by how fast "
        "Covalent runs on this host now against the envelope's session")
    group.addoption(
        "--bench-precision", type=options.precision_seconds, default=None, metavar="SECONDS",
        help="keep adding interleaved rounds until the 95 %% CI half-width of orchestration is "
        "at most SECONDS for every executor (see --bench-max-rounds, --bench-time-budget)")
    group.addoption(
        "--bench-stacks", type=options.stack_rounds, default=0, metavar="N",
        help="add N profiled rounds per mode, each right after the timed run of its round: "
        "py-spy samples the stacks of the client, the server's processes and the workers "
        "(needs ptrace: root, or CAP_SYS_PTRACE); the profiled walls are recorded, flagged, "
        "and left out of every figure; hotspots.csv and stacks/<run_id>/ (trace.json, "
        "speedscope) hold the profiles")
    group.addoption(
        "--bench-stacks-rate", type=options.stacks_rate, default=50, metavar="HZ",
        help="with --bench-stacks: samples per second per thread (default 50; each sample "
        "reads every thread of every process: a lower rate costs the profiled runs less)")
    group.addoption("--bench-max-rounds", type=options.max_rounds, default=30,
                    help="with --bench-precision: the most measured rounds (default 30)")
    group.addoption("--bench-time-budget", type=options.time_budget_minutes, default=None,
                    metavar="MINUTES",
                    help="with --bench-precision: stop adding rounds after this many minutes")
    group.addoption(
        "--bench-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one profile value: a run setting (rounds, warmup_rounds, executors, "
        "concurrency, timeout_s, probes, ramp) or a parameter, e.g. epochs=1 (repeatable)",
    )
    group.addoption(
        "--bench-out",
        default=os.environ.get(OUT_ENV, "reports"),
        help="directory for runs.csv, phases.csv and summary.csv (default reports/; "
        "env BENCH_OUT)",
    )
    group.addoption(
        "--data-dir",
        default=None,
        help="MNIST root (default $MNIST_DATA_DIR or ~/data/mnist); fetched if missing",
    )
    group.addoption(
        "--covalent-address",
        default=None,
        help="attach to this running server (env COVALENT_BENCH_SERVER) instead of starting one",
    )
    group.addoption(
        "--bench-order",
        choices=ORDERS,
        default="interleaved",
        help="interleaved (default): round by round, plain then each executor, so machine "
        "drift hits all modes alike; grouped: all rounds of a mode in one pytest-benchmark "
        "test (its statistics and --benchmark-compare per mode)",
    )
    group.addoption(
        "--dask-scheduler",
        default=None,
        help="executor 'external': run the lattice's tasks on the Dask cluster at this "
        "scheduler address (env COVALENT_BENCH_DASK_SCHEDULER); without it the harness starts "
        "its own loopback cluster (scheduler + --external-workers workers) and stops it after",
    )
    group.addoption("--external-workers", type=options.worker_count, default=2,
                    help="workers of the harness's own external cluster (1 thread each)")
    group.addoption("--covalent-workers", type=options.worker_count, default=None,
                    help="Dask workers")
    group.addoption("--covalent-threads-per-worker", type=options.threads_per_worker,
                    default=None, help="threads per Dask worker")


@pytest.fixture(scope="session")
def covalent_server(request: pytest.FixtureRequest) -> Iterator[CovalentServer]:
    """A real Covalent server for tests: started isolated and stopped after, or attached.
    (A benchmark session's own server is the Engine's.)"""
    opt = request.config.getoption
    with server_for(
        opt("--covalent-address"),
        workers=opt("--covalent-workers"),
        threads_per_worker=opt("--covalent-threads-per-worker"),
    ) as server, client_dispatch_cache():  # the client's ~110 KB per dispatch, removed after
        yield server


_ENGINE = pytest.StashKey[Engine]()
_SUMMARY = pytest.StashKey[Any]()
_SUMMARY_ERROR = pytest.StashKey[str]()
_PROFILE = pytest.StashKey[Profile]()
_CASES = pytest.StashKey[list]()
_PREPARED = pytest.StashKey[bool]()


def profile_from(config: pytest.Config) -> Profile:
    """The session's profile, loaded once; a bad one is a usage error at collection."""
    if _PROFILE in config.stash:
        return config.stash[_PROFILE]
    opt = config.getoption
    try:
        profile = load_profile(
            opt("--bench-profile"), opt("--bench-set"), opt("--bench-arg"),
            workload=opt("--bench-workload"), inputs=opt("--bench-inputs"),
            digest=opt("--bench-digest"), data_dir=str(resolve_data_dir(opt("--data-dir"))),
            environments=opt("--bench-env"), env_vars=opt("--bench-env-var"),
            reference=opt("--bench-reference"),
        )
    except (ProfileError, WorkloadError) as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[_PROFILE] = profile
    return profile


def settings_from(config: pytest.Config) -> Settings:
    """The session's Settings, from the command line."""
    opt = config.getoption
    budget = opt("--bench-time-budget")
    return Settings(
        out_dir=Path(opt("--bench-out")).resolve(),
        covalent_address=opt("--covalent-address"),
        covalent_workers=opt("--covalent-workers"),
        covalent_threads_per_worker=opt("--covalent-threads-per-worker"),
        dask_scheduler=opt("--dask-scheduler"),
        external_workers=opt("--external-workers"),
        order=opt("--bench-order"),
        precision=opt("--bench-precision"),
        max_rounds=opt("--bench-max-rounds"),
        stacks=opt("--bench-stacks"),
        stacks_rate=opt("--bench-stacks-rate"),
        time_budget_s=None if budget is None else 60 * budget,
    )


def _will_benchmark(config: pytest.Config) -> bool:
    opt = config.getoption
    return bool(opt("benchmark_only", False) or any(
        opt(name) for name in ("--bench-profile", "--bench-workload", "--bench-arg",
                               "--bench-set", "--bench-inputs", "--bench-digest",
                               "--bench-env", "--bench-env-var", "--bench-precision",
                               "--bench-reference", "--bench-stacks")))


def pytest_configure(config: pytest.Config) -> None:
    """Everything that can be checked before a server starts is checked here: the profile,
    workload and arguments, the output directory, the data each workload needs. A mistake is
    one line (pytest's usage error, exit 4), not a traceback, and nothing has run yet."""
    if not _will_benchmark(config):
        return
    profile = profile_from(config)
    try:
        prepare(profile, settings_from(config).out_dir, settings_from(config))
    except SetupError as exc:
        raise pytest.UsageError(f"cannot run the benchmark: {exc}") from None
    config.stash[_PREPARED] = True


@pytest.fixture(scope="session")
def bench_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """The session's Engine, its places up: the server, a cluster, environments."""
    config = request.config
    profile = profile_from(config)
    settings = settings_from(config)
    if not config.stash.get(_PREPARED, False):  # run without --benchmark-only
        try:
            prepare(profile, settings.out_dir, settings)
        except SetupError as exc:
            pytest.exit(f"cannot run the benchmark: {exc}", returncode=4)
    cases = config.stash.get(_CASES, [])
    progress = Progress(config.pluginmanager.get_plugin("terminalreporter"),
                        planned_runs(cases), config.pluginmanager.get_plugin("capturemanager"))
    progress.announce(len(cases), len(profile.scenarios),
                      ", ".join(w.name for w in profile.workloads),
                      at_most=settings.precision is not None)
    with Engine(profile, settings, progress) as engine:
        config.stash[_ENGINE] = engine
        yield engine


@pytest.hookimpl(tryfirst=True)  # before pytest's teardown stops the servers: it may be cut
def pytest_sessionfinish(session: pytest.Session) -> None:
    engine = session.config.stash.get(_ENGINE, None)
    if engine is None:
        return
    try:
        with signals_deferred(reraise=False) as held:  # a second Ctrl-C: the summary first
            summary = engine.finish()
        if held:
            engine.reporter.note("interrupted again while writing the summary; it is written")
    except Exception as exc:  # the rows are written; say why the summary is not, in one line
        session.config.stash[_SUMMARY_ERROR] = (
            f"summary not written: {type(exc).__name__}: {exc}; the runs are in "
            f"{engine.out_dir}; python -m bench.report --in {engine.out_dir} retries")
        return
    if summary is not None:
        session.config.stash[_SUMMARY] = summary


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config
                             ) -> tuple[str, str, str] | None:
    """A passed benchmark case prints nothing: its progress line says it all (pytest's dot
    would re-print the module's path under every progress line)."""
    if (report.when == "call" and report.passed and config.stash.get(_ENGINE, None)
            and report.nodeid.split("::")[0].endswith("bench_workloads.py")):
        return "passed", "", ""
    return None


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    bench = config.stash.get(_ENGINE, None)
    summary = config.stash.get(_SUMMARY, None)
    if config.stash.get(_SUMMARY_ERROR, None):
        terminalreporter.write_line(config.stash[_SUMMARY_ERROR], red=True)
    if bench is None or summary is None:
        return
    cols = ["config_id", "executor", "plain_median_s", "covalent_median_s", "overhead_s",
            "overhead_pct", "orchestration_s", "compute_inflation_s", "same_output"]
    terminalreporter.section("Covalent overhead (median of measured rounds)")
    terminalreporter.write_line(summary[cols].to_markdown(index=False, floatfmt=".2f"))
    terminalreporter.write_line(
        f"{bench.rows} runs appended to {bench.writer.path}; summary in "
        f"{bench.out_dir / 'summary.csv'}. Report: python -m bench.report --in {bench.out_dir}"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" not in metafunc.fixturenames:
        return
    try:
        cases = plan(profile_from(metafunc.config), settings_from(metafunc.config))
    except SetupError as exc:
        raise pytest.UsageError(str(exc)) from None
    metafunc.config.stash[_CASES] = cases
    metafunc.parametrize("case", [pytest.param(c, id=c.id, marks=pytest.mark.timeout(
        backstop_s(c))) for c in cases])


# Beyond a case's own run timeouts: submitting, downloading, stopping a task, per run.
BACKSTOP_MARGIN_S = 600.0


def backstop_s(case: Case) -> float:
    """pytest-timeout's limit for a benchmark case: a last resort far above the harness's own
    per-run timeouts (timeout_s, which end a run with a TIMEOUT row), never in their way.
    pyproject's `timeout` stays the limit for the tests."""
    s = case.scenario
    rounds = 1 if case.round is not None else s.rounds + s.warmup_rounds
    return rounds * s.concurrency * (s.timeout_s + BACKSTOP_MARGIN_S)
