"""pytest plumbing of the suite: options, the Covalent server and cluster fixtures, the
session's records writers, and the summary written when the session ends. Loaded with
`-p bench.suites.plugin` (see pyproject)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bench.config.profiles import Profile, ProfileError, Scenario, load_profile
from bench.records import (
    CsvAppender,
    RunContext,
    RunRecord,
    phase_rows,
    phases_writer,
    record_environment,
    run_row,
    runs_writer,
    utc_now,
)
from bench.services.cluster import DaskCluster, cluster_for
from bench.services.processes import loopback_no_proxy
from bench.services.server import CovalentServer, client_dispatch_cache, server_for
from bench.suites.precision import Precision
from bench.suites.progress import Progress
from bench.workloads import WorkloadError
from mnist_core.data import resolve_data_dir

# Our own HTTP calls to loopback servers never go through a proxy the environment names.
loopback_no_proxy(os.environ)

PROFILE_ENV = "BENCH_PROFILE"
ORDERS = ("interleaved", "grouped")
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
        "--bench-precision", type=float, default=None, metavar="SECONDS",
        help="keep adding interleaved rounds until the 95 %% CI half-width of orchestration is "
        "at most SECONDS for every executor (see --bench-max-rounds, --bench-time-budget)")
    group.addoption("--bench-max-rounds", type=int, default=30,
                    help="with --bench-precision: the most measured rounds (default 30)")
    group.addoption("--bench-time-budget", type=float, default=None, metavar="MINUTES",
                    help="with --bench-precision: stop adding rounds after this many minutes")
    group.addoption(
        "--bench-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one profile value: a run setting (rounds, warmup_rounds, executors, "
        "concurrency, timeout_s) or a parameter, e.g. epochs=1 (repeatable)",
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
    group.addoption("--external-workers", type=int, default=2,
                    help="workers of the harness's own external cluster (1 thread each)")
    group.addoption("--covalent-workers", type=int, default=None, help="Dask workers")
    group.addoption(
        "--covalent-threads-per-worker", type=int, default=None, help="threads per Dask worker"
    )


@pytest.fixture(scope="session")
def covalent_server(request: pytest.FixtureRequest) -> Iterator[CovalentServer]:
    """A real Covalent server for the session: started isolated and stopped after, or attached."""
    opt = request.config.getoption
    with server_for(
        opt("--covalent-address"),
        workers=opt("--covalent-workers"),
        threads_per_worker=opt("--covalent-threads-per-worker"),
    ) as server, client_dispatch_cache():  # the client's ~110 KB per dispatch, removed after
        yield server


@pytest.fixture(scope="session")
def external_cluster(
    request: pytest.FixtureRequest, bench_session: BenchSession
) -> Iterator[DaskCluster | None]:
    """The Dask cluster behind executor 'external': started (or attached) only if a
    scenario of the profile uses it."""
    if not any("external" in s.executors for s in bench_session.profile.scenarios):
        yield None
        return
    opt = request.config.getoption
    with cluster_for(opt("--dask-scheduler"), workers=opt("--external-workers")) as cluster:
        yield cluster


@dataclass
class CovalentEnvironment:
    """One [[environments]] entry, up for the session: its server and the client that runs
    the client side of each Covalent run in its interpreter; or why it is not up."""

    name: str
    server: CovalentServer | None = None
    client: Any = None  # bench.measure.client.RemoteClient
    covalent: str = ""
    failure: str = ""  # the build or start error, recorded in every row of this environment


@pytest.fixture(scope="session")
def covalent_environments(
    request: pytest.FixtureRequest, bench_session: BenchSession
) -> Iterator[dict[str, CovalentEnvironment]]:
    """Every environment of the profile: built (cached between sessions), its own isolated
    server started from its interpreter, its client process up. One that fails to build or
    start is kept with its reason: its runs become rows saying so, and the others go on."""
    wanted = {e.name: e for s in bench_session.profile.scenarios for e in s.environments}
    if not wanted:
        yield {}
        return
    from bench.measure.client import RemoteClient
    from bench.services.environments import build

    opt = request.config.getoption
    up: dict[str, CovalentEnvironment] = {}
    with contextlib.ExitStack() as stack:
        for name, environment in wanted.items():
            entry: dict[str, Any] = {"name": name, "requirement": environment.requirement,
                                     "env": environment.env}
            try:
                built = build(environment)
                entry.update(covalent=built.covalent_version, python=built.python,
                             cache_dir=str(built.path), cached=built.cached,
                             build_s=round(built.build_s, 3))
                server = stack.enter_context(server_for(
                    None, workers=opt("--covalent-workers"),
                    threads_per_worker=opt("--covalent-threads-per-worker"),
                    env=environment.env, python=built.python))
                entry.update(server=server.address, server_startup_s=server.startup_s)
                client = stack.enter_context(RemoteClient(built.python, environment.env))
                up[name] = CovalentEnvironment(name, server, client, built.covalent_version)
                entry["status"] = "up"
            except Exception as exc:  # recorded with its reason; the others go on
                reason = str(exc).splitlines()[0][:500]
                up[name] = CovalentEnvironment(name, failure=f"{type(exc).__name__}: {reason}")
                entry.update(status="failed", failure=up[name].failure)
                _progress_note(bench_session, f"environment {name} is not up: {reason}")
            record_environment(bench_session.out_dir, bench_session.session_id, entry)
        yield up


def _progress_note(session: BenchSession, text: str) -> None:
    if session.progress is not None:
        session.progress.note(text)


@dataclass
class BenchSession:
    """What one pytest session of benchmarks shares: its profile, id and records writers."""

    profile: Profile
    out_dir: Path
    writer: CsvAppender
    phases: CsvAppender
    probe_dir: Path  # where task probes leave their per-run records
    progress: Progress | None = None
    precision: Precision | None = None
    session_id: str = field(
        default_factory=lambda: utc_now().replace(":", "") + "-" + uuid.uuid4().hex[:6]
    )
    rows: int = 0

    def record(self, scenario: Scenario, record: RunRecord, round: int,
               server: CovalentServer | None, environment: str = "",
               covalent: str = "") -> dict[str, Any]:
        """Append the run's row to runs.csv and its phases to phases.csv, now."""
        context = RunContext(
            self.session_id, self.profile.name, scenario.workload.name, scenario.id,
            scenario.workload.dimensions(scenario.params), scenario.concurrency, round,
            round < scenario.warmup_rounds,
            {} if server is None else {"server_startup_s": server.startup_s,
                                       "server_workers": server.workers,
                                       "server_threads_per_worker": server.threads_per_worker},
            environment, {"covalent": covalent or "?"} if environment else {},
        )
        row = run_row(context, record)
        self.writer.append(row)
        self.phases.append(*phase_rows(row, record))
        self.rows += 1
        return row


_SESSION = pytest.StashKey[BenchSession]()
_SUMMARY = pytest.StashKey[Any]()
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
        )
    except (ProfileError, WorkloadError) as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[_PROFILE] = profile
    return profile


def _will_benchmark(config: pytest.Config) -> bool:
    opt = config.getoption
    return bool(opt("benchmark_only", False) or any(
        opt(name) for name in ("--bench-profile", "--bench-workload", "--bench-arg",
                               "--bench-set", "--bench-inputs", "--bench-digest",
                               "--bench-env", "--bench-env-var", "--bench-precision")))


class SetupError(Exception):
    """Input that makes the benchmark impossible; one line says what and how to fix it."""


def pytest_configure(config: pytest.Config) -> None:
    """Everything that can be checked before a server starts is checked here: the profile,
    workload and arguments, the output directory, the data each workload needs. A mistake is
    one line (pytest's usage error, exit 4), not a traceback, and nothing has run yet."""
    if not _will_benchmark(config):
        return
    profile = profile_from(config)
    try:
        _usable_out_dir(Path(config.getoption("--bench-out")).resolve())
        for scenario in profile.scenarios:
            scenario.workload.prepare(scenario.params)
    except (SetupError, WorkloadError) as exc:
        raise pytest.UsageError(f"cannot run the benchmark: {exc}") from None
    config.stash[_PREPARED] = True


def _usable_out_dir(path: Path) -> Path:
    """The output directory, made and proven writable before anything is measured."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except FileExistsError:
        raise SetupError(f"--bench-out {path} is a file; name a directory") from None
    except OSError as exc:
        raise SetupError(f"--bench-out {path} is not usable ({exc.strerror}); choose "
                         f"another directory") from None
    return path


@pytest.fixture(scope="session")
def bench_session(request: pytest.FixtureRequest) -> Iterator[BenchSession]:
    config = request.config
    profile = profile_from(config)
    out_dir = Path(config.getoption("--bench-out")).resolve()
    if not config.stash.get(_PREPARED, False):  # run without --benchmark-only
        try:
            _usable_out_dir(out_dir)
            for scenario in profile.scenarios:
                scenario.workload.prepare(scenario.params)
        except (SetupError, WorkloadError) as exc:
            pytest.exit(f"cannot run the benchmark: {exc}", returncode=4)
    cases = config.stash.get(_CASES, [])
    planned: dict[str, int] = {}
    for case in cases:
        runs = (1 if case.round is not None else case.scenario.rounds
                + case.scenario.warmup_rounds) * case.scenario.concurrency
        planned[case.label] = planned.get(case.label, 0) + runs
    progress = Progress(config.pluginmanager.get_plugin("terminalreporter"), planned,
                        config.pluginmanager.get_plugin("capturemanager"))
    target = config.getoption("--bench-precision")
    progress.announce(len(cases), len(profile.scenarios),
                      ", ".join(w.name for w in profile.workloads), at_most=target is not None)
    precision = None if target is None else Precision(
        target, config.getoption("--bench-max-rounds"),
        None if config.getoption("--bench-time-budget") is None
        else 60 * config.getoption("--bench-time-budget"))
    with tempfile.TemporaryDirectory(prefix="covalent-bench-probes-") as probe_dir:
        session = BenchSession(
            profile, out_dir, runs_writer(out_dir), phases_writer(out_dir), Path(probe_dir),
            progress, precision,
        )
        config.stash[_SESSION] = session
        yield session


def pytest_sessionfinish(session: pytest.Session) -> None:
    bench = session.config.stash.get(_SESSION, None)
    if bench is None or bench.rows == 0:
        return
    if bench.precision is not None:
        bench.precision.write(bench.out_dir, bench.session_id)
    from bench.report.tables import write_summary  # plotting stack: only when needed

    session.config.stash[_SUMMARY] = write_summary(bench.out_dir)[0]


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config
                             ) -> tuple[str, str, str] | None:
    """A passed benchmark case prints nothing: its progress line says it all (pytest's dot
    would re-print the module's path under every progress line)."""
    if (report.when == "call" and report.passed and config.stash.get(_SESSION, None)
            and report.nodeid.split("::")[0].endswith("bench_workloads.py")):
        return "passed", "", ""
    return None


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    bench = config.stash.get(_SESSION, None)
    summary = config.stash.get(_SUMMARY, None)
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


@dataclass(frozen=True)
class Case:
    """One benchmark: a scenario in one mode (plain, or Covalent on an executor), probed or
    bare (a profile with probes = "compare" runs both, to measure the probes' cost)."""

    scenario: Scenario
    mode: str
    executor: str = ""
    round: int | None = None  # None: all rounds in this one benchmark (grouped order)
    probed: bool = True
    environment: str = ""  # a Covalent environment of the profile; "" = this interpreter

    @property
    def label(self) -> str:
        where = f"{self.environment}:" if self.environment else ""
        return where + (self.executor or self.mode) + ("" if self.probed else "-bare")

    @property
    def id(self) -> str:
        at = "" if self.round is None else f"-r{self.round}"
        return f"{self.scenario.id}{at}-{self.label}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" not in metafunc.fixturenames:
        return
    profile = profile_from(metafunc.config)
    grouped = metafunc.config.getoption("--bench-order") == "grouped"
    precise = metafunc.config.getoption("--bench-precision") is not None
    if precise and grouped:
        raise pytest.UsageError("--bench-precision adds rounds one at a time: it needs the "
                                "interleaved order, not --bench-order grouped")
    most = metafunc.config.getoption("--bench-max-rounds")
    cases = []
    for s in profile.scenarios:
        # Plain once per round, shared by every environment; then each environment x executor.
        places = [e.name for e in s.environments] or [""]

        def modes(order: list[str], s: Scenario = s) -> list[tuple[str, str, str]]:
            return [("plain", "", "")] + [("covalent", executor, env) for env in order
                                          for executor in s.executors]

        probing = (True, False) if s.probes == "compare" else (True,)
        if grouped:
            cases += [Case(s, m, e, None, p, env) for m, e, env in modes(places)
                      for p in probing]
        else:  # ABAB...: every round runs each mode once before the next round starts
            rounds = range(s.warmup_rounds + (max(s.rounds, most) if precise else s.rounds))
            # Environments alternate their order from round to round, so that none always
            # runs right after the plain run (or another environment): order effects cancel.
            cases += [Case(s, m, e, r, p, env) for r in rounds
                      for m, e, env in modes(places if r % 2 == 0 else places[::-1])
                      for p in probing]
    metafunc.config.stash[_CASES] = cases
    metafunc.parametrize("case", cases, ids=[c.id for c in cases])
