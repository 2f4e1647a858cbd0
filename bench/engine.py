"""One benchmark session, whoever drives it: the pytest suite (`pytest bench --benchmark-only`)
and the Python API (`bench.run`) both plan their cases here, bring the places up here and
run every case through `Engine.run`, so a run measured from a notebook and one measured from
a terminal go through the same code and land in the same records.

    profile -> plan (cases: scenario x mode x executor x environment x round)
            -> Engine: the server, an external cluster, Covalent environments up
            -> Engine.run(case, round) -> rows appended to runs.csv / phases.csv at once
            -> Engine.finish() -> summary.csv (and precision.json)

A *place* is where the client side of a Covalent run happens: this interpreter (the session's
own server), or a Covalent environment's interpreter (`bench.run.client.RemoteClient`,
with its own server).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from bench.adapters import recorded
from bench.config.profiles import REFERENCE_PART, Profile, Scenario
from bench.precision import Precision
from bench.records import (
    ERROR,
    RUN_KEYS,
    CsvAppender,
    RunContext,
    RunRecord,
    hotspots_writer,
    phase_rows,
    phases_writer,
    record_environment,
    run_row,
    runs_writer,
    utc_now,
)
from bench.run.runner import (
    ServerUnavailableError,
    measure_covalent_batch,
    measure_plain_batch,
)
from bench.services.cluster import DaskCluster, cluster_for
from bench.services.processes import signals_deferred, sigterm_raises, watchdog
from bench.services.server import CovalentServer, client_dispatch_cache, server_for
from bench.workloads import WorkloadError

ORDERS = ("interleaved", "grouped")


class SetupError(Exception):
    """Input that makes the benchmark impossible; one line says what and how to fix it."""


class SessionEndedError(RuntimeError):
    """The session cannot go on (its own server is gone, its records cannot be written): it
    ends; every row written so far stays."""


class RecordsUnwritableError(SessionEndedError):
    """runs.csv or phases.csv cannot be appended to: measuring on would measure runs that no
    record keeps, so the session ends at once."""


class Reporter(Protocol):
    """What the engine tells whoever watches: the CLI's lines, the API's progress bar."""

    def run_done(self, config_id: str, label: str, round_: int, rounds: int, warmup: bool,
                 wall_s: float, status: str, elapsed_s: float) -> None: ...

    def skipped(self, label: str, runs: int = 1) -> None: ...

    def note(self, text: str) -> None: ...


@dataclass(frozen=True)
class Settings:
    """How a session runs, beside its profile: where records go, which server and cluster,
    and the precision rule. The CLI's options and the API's keywords both fill this."""

    out_dir: Path
    covalent_address: str | None = None
    covalent_workers: int | None = None
    covalent_threads_per_worker: int | None = None
    dask_scheduler: str | None = None
    external_workers: int = 2
    order: str = "interleaved"
    precision: float | None = None  # target half-width of orchestration's CI, seconds
    max_rounds: int = 30
    time_budget_s: float | None = None
    stacks: int = 0  # profiled rounds per mode (--bench-stacks), beside the timed ones
    stacks_rate: int = 50  # their samples per second per thread (--bench-stacks-rate)


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
    profiled: bool = False  # its stacks sampled (--bench-stacks): for the profiles only

    @property
    def label(self) -> str:
        where = f"{self.environment}:" if self.environment else ""
        return (where + (self.executor or self.mode) + ("" if self.probed else "-bare")
                + ("-stacks" if self.profiled else ""))

    @property
    def id(self) -> str:
        at = "" if self.round is None else f"-r{self.round}"
        return f"{self.scenario.id}{at}-{self.label}"


def plan(profile: Profile, settings: Settings) -> list[Case]:
    """Every case of the session, in the order they run. Interleaved (default): every round
    runs plain once, then each environment x executor, before the next round starts."""
    if settings.order not in ORDERS:
        raise SetupError(f"order must be one of {', '.join(ORDERS)}, got {settings.order!r}")
    grouped = settings.order == "grouped"
    precise = settings.precision is not None
    if precise and grouped:
        raise SetupError("--bench-precision adds rounds one at a time: it needs the "
                         "interleaved order, not --bench-order grouped")
    if settings.stacks and grouped:
        raise SetupError("--bench-stacks puts a profiled run beside the timed one of the "
                         "same round: it needs the interleaved order, not --bench-order "
                         "grouped")
    if settings.stacks < 0:
        raise SetupError(f"--bench-stacks takes a number of rounds >= 0, got "
                         f"{settings.stacks}")
    cases: list[Case] = []
    blocks: list[list[Case]] = []  # interleaved: each round of each scenario, in order
    references: list[list[Case]] = []  # ... and those of the reference graph
    for s in profile.scenarios:
        places = [e.name for e in s.environments] or [""]

        def modes(order: list[str], s: Scenario = s) -> list[tuple[str, str, str]]:
            return [("plain", "", "")] + [("covalent", executor, env) for env in order
                                          for executor in s.executors]

        probing = (True, False) if s.probes == "compare" else (True,)
        if grouped:
            cases += [Case(s, m, e, None, p, env) for m, e, env in modes(places)
                      for p in probing]
        else:
            rounds = range(s.warmup_rounds + (max(s.rounds, settings.max_rounds) if precise
                                              else s.rounds))
            # Environments take their order round by round from a Williams design: over
            # its rounds (2 for two environments, 6 for three) each runs in every position
            # and after every other one equally often, so order and carry-over effects
            # cancel (alternating a list of three kept the middle one always in the middle;
            # an identical environment there was once found different).
            # The first `stacks` measured rounds get a profiled twin of each mode, after
            # the round's timed runs: those run back to back as they would without
            # --bench-stacks, and what sampling leaves behind (its processes' exit, the
            # files written, the samples attributed) falls between rounds, not before a
            # timed run of the same round.
            profiling = range(s.warmup_rounds, s.warmup_rounds + settings.stacks)
            orders = [[places[i] for i in o] for o in balanced_orders(len(places))]
            for r in rounds:
                timed = [Case(s, m, e, r, p, env) for m, e, env in
                         modes(orders[r % len(orders)]) for p in probing]
                block = timed + ([replace(c, profiled=True) for c in timed if c.probed]
                                 if r in profiling else [])
                (references if s.part == REFERENCE_PART else blocks).append(block)
    return cases if grouped else _spread(blocks, references)


def _spread(blocks: list[list[Case]], references: list[list[Case]]) -> list[Case]:
    """The rounds in order, the reference graph's spread evenly among them: round j of the
    reference (its warm-ups first) before round j x len(blocks) / len(references) of the
    rest. Scaled by it, a prediction meets the host's speed of the same minutes as the
    measurement, not only of the session's end."""
    out: list[Case] = []
    j = 0
    for i, block in enumerate(blocks):
        while j < len(references) and j * len(blocks) // len(references) <= i:
            out += references[j]
            j += 1
        out += block
    return out + [c for block in references[j:] for c in block]


def balanced_orders(n: int) -> list[list[int]]:
    """A Williams design for n treatments: n orders (2n when n is odd) of range(n), the first
    range(n) itself, in which each treatment takes every position, and follows every other
    treatment, equally often."""
    first, low, high = [0], 1, n - 1
    while len(first) < n:
        first.append(low)
        low += 1
        if len(first) < n:
            first.append(high)
            high -= 1
    rename = {t: j for j, t in enumerate(first)}  # so that the first order is range(n)
    orders = [[rename[(t + i) % n] for t in first] for i in range(n)]
    return orders + [o[::-1] for o in orders] if n % 2 else orders


def planned_runs(cases: list[Case]) -> dict[str, int]:
    """Runs per label (mode or executor) over the whole plan, for progress and its ETA."""
    planned: dict[str, int] = {}
    for case in cases:
        runs = (1 if case.round is not None else case.scenario.rounds
                + case.scenario.warmup_rounds) * case.scenario.concurrency
        planned[case.label] = planned.get(case.label, 0) + runs
    return planned


def usable_out_dir(path: Path) -> Path:
    """The output directory, made and proven writable before anything is measured."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except FileExistsError:
        raise SetupError(f"the output directory (--bench-out, or out=) {path} is a file; "
                         f"name a directory") from None
    except OSError as exc:
        raise SetupError(f"the output directory (--bench-out, or out=) {path} is not usable "
                         f"({exc.strerror}); choose "
                         f"another directory") from None
    return path


def prepare(profile: Profile, out_dir: Path, settings: Settings | None = None) -> None:
    """What can be checked before a server starts: the output directory, the data each
    workload needs, and the server and Dask scheduler to attach to (they must answer now,
    not after a server of ours has started). Raises SetupError with one line."""
    usable_out_dir(out_dir)
    try:
        for scenario in profile.scenarios:
            scenario.workload.prepare(scenario.params)
    except WorkloadError as exc:
        raise SetupError(str(exc)) from None
    if settings is not None:
        _attachable(profile, settings)


def _attachable(profile: Profile, settings: Settings) -> None:
    """A server or scheduler named to attach to answers, or one line says what to do."""
    from bench.services.cluster import SCHEDULER_ENV, DaskClusterError, attached_cluster
    from bench.services.server import SERVER_ENV, CovalentServerError, attached_server

    server = settings.covalent_address or os.environ.get(SERVER_ENV)
    scheduler = settings.dask_scheduler or os.environ.get(SCHEDULER_ENV)
    uses_external = any("external" in s.executors for s in profile.scenarios)
    checks = [(server, attached_server, CovalentServerError)]
    if uses_external:
        checks.append((scheduler, attached_cluster, DaskClusterError))
    for address, attach, error in checks:
        if not address:
            continue
        try:
            with attach(address):
                pass
        except (error, ValueError) as exc:
            raise SetupError(" ".join(str(exc).split())) from None


@dataclass
class Place:
    """A Covalent environment up for the session: its server and the client that runs the
    client side of each Covalent run in its interpreter; or why it is not up."""

    name: str
    server: CovalentServer | None = None
    client: Any = None  # bench.run.client.RemoteClient
    covalent: str = ""
    failure: str = ""  # the build or start error, recorded in every row of this environment


class _Silent:
    def run_done(self, *args: Any, **kwargs: Any) -> None:
        pass

    def skipped(self, label: str, runs: int = 1) -> None:
        pass

    def note(self, text: str) -> None:
        pass


@dataclass
class Engine:
    """A session's places and records. Use as a context manager: entering starts the
    session's server (or attaches), an external Dask cluster if a scenario uses one, and every
    Covalent environment; leaving stops all of them, whatever happened."""

    profile: Profile
    settings: Settings
    reporter: Reporter = field(default_factory=_Silent)
    session_id: str = field(
        default_factory=lambda: utc_now().replace(":", "") + "-" + uuid.uuid4().hex[:6])
    rows: int = 0

    def __post_init__(self) -> None:
        self.out_dir = Path(self.settings.out_dir).resolve()
        self.server: CovalentServer | None = None
        self.cluster: DaskCluster | None = None
        self.cluster_failure = ""  # why the external cluster is out, once it is
        self.places: dict[str, Place] = {}
        self.precision: Precision | None = None if self.settings.precision is None else (
            Precision(self.settings.precision, self.settings.max_rounds,
                      self.settings.time_budget_s))
        self._stack = contextlib.ExitStack()
        self.writer: CsvAppender | None = None
        self.phases: CsvAppender | None = None
        self.probe_dir = Path()
        self.profiler: Any = None  # bench.run.profiling.Profiler, made by the first profiled run
        self._pending_hotspots: list[Any] = []  # the profiled batch's, until its rows are in
        # ramp = "until-knee": per (configuration, label) the measured batches so far, and
        # why its ramp stopped, once it has (bench.analysis.load.ramp_stop).
        self._ramps: dict[tuple[str, str], list[tuple[int, int, int, float]]] = {}
        self._ramp_stops: dict[tuple[str, str], str] = {}

    # --- places up and down

    def __enter__(self) -> Engine:
        prepare(self.profile, self.out_dir, self.settings)
        try:
            self._up()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        # A second Ctrl-C (or kill, or hang-up) while the places stop must not cut that short:
        # the services' own clean-up holds it and raises it when done; by then all is stopped.
        try:
            with signals_deferred(reraise=False):
                self._stack.close()
        except (KeyboardInterrupt, SystemExit):
            self.reporter.note("interrupted again while stopping; everything is stopped")

    def _up(self) -> None:
        s, stack = self.settings, self._stack
        stack.enter_context(sigterm_raises())  # an attached server installs none
        # Should this process die hard (kill -9), this removes our temporary directories.
        dog = stack.enter_context(watchdog())
        self.probe_dir = Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="covalent-bench-probes-")))
        dog.remove(self.probe_dir)
        self.writer, self.phases = runs_writer(self.out_dir), phases_writer(self.out_dir)
        # Up for plain runs too: they pay the idle server's tax, as a Covalent user's would.
        self.server = stack.enter_context(server_for(
            s.covalent_address, workers=s.covalent_workers,
            threads_per_worker=s.covalent_threads_per_worker))
        dog.remove(stack.enter_context(client_dispatch_cache()))  # ~110 KB per dispatch
        if any("external" in sc.executors for sc in self.profile.scenarios):
            self.cluster = stack.enter_context(cluster_for(s.dask_scheduler,
                                                           workers=s.external_workers))
        self._environments_up()

    def _environments_up(self) -> None:
        """Every environment of the profile: built (cached between sessions), its own isolated
        server started from its interpreter, its client process up. One that fails to build
        or start is kept with its reason: its runs become rows saying so, the others go on.

        They come up side by side, one thread each: a build or a server start mostly waits
        (on the installer, on the server's first answer), and three one after another took
        13-21 s each. Each thread owns its services until it is done; then the session's
        stack takes them over, interrupted or not, so nothing is left running."""
        wanted = {e.name: e for s in self.profile.scenarios for e in s.environments}
        if not wanted:
            return
        with ThreadPoolExecutor(max_workers=len(wanted), thread_name_prefix="env") as pool:
            futures = {name: pool.submit(self._environment_up, environment)
                       for name, environment in wanted.items()}
            try:
                wait(futures.values())
            finally:  # on Ctrl-C too: wait for the threads, then own what they started
                pool.shutdown(wait=True)
                for name, future in futures.items():
                    services, place, entry = future.result()
                    self._stack.enter_context(services)
                    self.places[name] = place
                    if place.failure:
                        self.reporter.note(f"environment {name} is not up: {place.failure}")
                    record_environment(self.out_dir, self.session_id, entry)

    def _environment_up(self, environment: Any) -> tuple[contextlib.ExitStack, Place,
                                                          dict[str, Any]]:
        """One environment up (in its own thread): its services, its Place, its record."""
        from bench.run.client import RemoteClient
        from bench.services.environments import build

        s, name = self.settings, environment.name
        entry: dict[str, Any] = {"name": name, "requirement": environment.requirement,
                                 "env": environment.env}
        services = contextlib.ExitStack()
        try:
            built = build(environment)
            entry.update(covalent=built.covalent_version, **recorded(built.covalent_version),
                         python=built.python, cache_dir=str(built.path), cached=built.cached,
                         build_s=round(built.build_s, 3))
            server = services.enter_context(server_for(
                None, workers=s.covalent_workers,
                threads_per_worker=s.covalent_threads_per_worker,
                env=environment.env, python=built.python,
                covalent_version=built.covalent_version))
            entry.update(server=server.address, server_startup_s=server.startup_s)
            client = services.enter_context(RemoteClient(built.python, environment.env))
            place = Place(name, server, client, built.covalent_version)
            entry["status"] = "up"
        except Exception as exc:  # recorded with its reason; the others go on
            services.close()  # a server up for a client that is not: stopped now
            reason = str(exc).splitlines()[0][:500]
            place = Place(name, failure=f"{type(exc).__name__}: {reason}")
            entry.update(status="failed", failure=place.failure)
        except BaseException:
            services.close()
            raise
        return services, place, entry

    # --- runs

    def skip_reason(self, case: Case) -> str | None:
        """Why this round need not run (its concurrency ramp has stopped, or the precision
        asked for is reached), or None."""
        stopped = self._ramp_stopped(case)
        if stopped:
            self.reporter.skipped(case.label, case.scenario.concurrency * (
                1 if case.round is not None else
                case.scenario.rounds + case.scenario.warmup_rounds))
            return stopped
        if self.precision is None or case.round is None:
            return None
        scenario = case.scenario
        labels = [Case(scenario, "covalent", e, None, True, env.name if env else "").label
                  for env in (scenario.environments or (None,)) for e in scenario.executors]
        reason = self.precision.skip_reason(scenario, case.round, labels,
                                            starts=case.mode == "plain" and case.probed)
        if reason:
            self.reporter.skipped(case.label, scenario.concurrency)
        return reason

    def _ramp_key(self, case: Case) -> tuple[str, str]:
        return case.scenario.workload.config_id(case.scenario.params), case.label

    def _ramp_stopped(self, case: Case) -> str | None:
        """Why a level of an `until-knee` ramp is not run: a lower level of the same
        configuration failed a run or the levels below passed the knee. A plain level stops
        with the last Covalent mode's ramp (it is there only to be compared with them)."""
        scenario = case.scenario
        if scenario.ramp != "until-knee" or scenario.concurrency == 1:
            return None
        if case.mode == "plain":
            modes = [replace(case, mode="covalent", executor=e,
                             environment=env.name if env else "")
                     for env in (scenario.environments or (None,)) for e in scenario.executors]
            stopped = all([self._ramp_stopped(m) for m in modes])  # each mode's note, once
            return "ramp stopped: every Covalent mode's ramp has" if stopped else None
        key = self._ramp_key(case)
        batches = self._ramps.get(key, [])
        if not batches or scenario.concurrency <= max(b[0] for b in batches):
            return None  # a level under way runs all its rounds
        if key not in self._ramp_stops:
            from bench.analysis.load import ramp_stop

            reason = ramp_stop(batches)
            if reason is None:
                return None
            self._ramp_stops[key] = reason
            self.reporter.note(f"{key[0]} [{key[1]}]: the ramp stops at "
                               f"{max(b[0] for b in batches)} in flight: {reason}")
        return f"ramp stopped: {self._ramp_stops[key]}"

    def run(self, case: Case, round_: int) -> list[dict[str, Any]]:
        """One run of the case (a batch of `concurrency` runs), its rows written the moment
        it ends: failed, timed-out and interrupted runs included. Returns the rows.
        Raises SessionEndedError if the session's own server is gone (its rows written)."""
        scenario = case.scenario
        place = self.places.get(case.environment) if case.environment else None
        server = place.server if place is not None else self.server
        started = time.monotonic()
        rows: list[dict[str, Any]] = []

        def write(records: list[RunRecord]) -> None:
            for record in records:
                rows.append(self._record(scenario, record, round_, server, case.environment,
                                         place.covalent if place is not None else ""))
                warmup = round_ < scenario.warmup_rounds
                if self.precision is not None:
                    self.precision.record(scenario.id, case.label, round_, warmup, record)
                self.reporter.run_done(
                    scenario.id, case.label, round_, scenario.warmup_rounds + (
                        scenario.rounds if self.precision is None
                        else self.precision.max_rounds),
                    warmup, record.wall_s, record.status, time.monotonic() - started)

        try:
            records = (self._profiled(case, place) if case.profiled
                       else self._measure(case, place))
        except ServerUnavailableError as exc:
            write(exc.records)
            if place is not None:  # one environment's server: that environment is out
                place.failure = f"its server is gone: {exc}"
                return rows
            raise SessionEndedError(
                f"the Covalent server is gone: {exc}; every earlier run is in "
                f"{self.writer.path if self.writer else self.out_dir}") from None
        except SetupError:
            raise
        except Exception as exc:  # unforeseen, in the harness: a row saying so; it goes on
            text = " ".join(f"{type(exc).__name__}: {exc}".split())[:2000]
            write([RunRecord(case.mode, case.executor, 0.0, status=ERROR, probed=case.probed,
                             error=f"harness: {text}")])
            return rows
        except BaseException as exc:  # Ctrl-C, SIGTERM: the interrupted runs get rows too
            with contextlib.suppress(Exception):  # and the interrupt goes on, whatever
                write(getattr(exc, "bench_records", []))
            raise
        write(records)
        if scenario.ramp == "until-knee" and case.mode == "covalent" \
                and round_ >= scenario.warmup_rounds:
            ok = sum(r.status == "COMPLETED" for r in records)
            self._ramps.setdefault(self._ramp_key(case), []).append(
                (scenario.concurrency, ok, len(records), time.monotonic() - started))
        return rows

    def _measure(self, case: Case, place: Place | None) -> list[RunRecord]:
        """The case's records, from the place that runs its client side: this interpreter
        (bench.run.runner) or a Covalent environment's client (RemoteClient), called alike."""
        scenario = case.scenario
        workload, params, n = scenario.workload, scenario.params, scenario.concurrency
        assert self.server is not None, "use the Engine as a context manager"
        if case.mode == "plain":
            return measure_plain_batch(workload, params, self.probe_dir, self.server, n,
                                       case.probed, scenario.timeout_s)
        if place is not None and place.failure:  # the row says why; the others go on
            return [RunRecord("covalent", case.executor, 0.0, status=ERROR,
                              error=f"environment {place.name}: {place.failure}",
                              probed=case.probed)]
        if place is not None and workload.ref[0] is None:
            raise SetupError(f"workload {workload.name!r} was defined in this process "
                             f"(a notebook cell, say): a Covalent environment's client "
                             f"cannot import it; put it in a module to measure it there")
        external = case.executor == "external" and self.cluster is not None
        if external and self.cluster_failure:  # the row says why; the other executors go on
            return [RunRecord("covalent", case.executor, 0.0, status=ERROR,
                              probed=case.probed, error=self.cluster_failure)
                    for _ in range(n)]
        server = place.server if place is not None else self.server
        assert server is not None
        measure = (place.client.measure_covalent_batch if place is not None
                   else measure_covalent_batch)
        stop = (self.cluster.stop_tasks if external and self.cluster else
                (lambda: server.stop_tasks(case.executor)))
        records = measure(
            workload, params, executor=case.executor, address=server.address,
            probe_dir=self.probe_dir, server=server, concurrency=n,
            timeout_s=scenario.timeout_s,
            dispatch_to=self.cluster.target() if external and self.cluster else None,
            health=server.check_alive, probe=case.probed, stop=stop)
        if external and self.cluster and any(r.status != "COMPLETED" for r in records):
            gone = self.cluster.check_alive()
            if gone:  # not the workflow's failure: say so, and leave that executor out
                self.cluster_failure = (f"{gone}; executor 'external' is left out for the "
                                        f"rest of the session (restart the cluster, or "
                                        f"drop 'external' from executors)")
                for record in records:
                    if record.status != "COMPLETED":
                        record.status = ERROR
                        record.error = f"{gone} (the run's own error: {record.error})"
                self.reporter.note(self.cluster_failure)
        return records

    def _profiled(self, case: Case, place: Place | None) -> list[RunRecord]:
        """The case's records with their stacks sampled; hotspots.csv gets their rows."""
        from bench.run.profiling import Profiler, roles_for

        if self.profiler is None:
            self.profiler = Profiler(self.out_dir, self.reporter.note,
                                     rate=self.settings.stacks_rate)
        server = place.server if place is not None else self.server
        client = (place.client.proc.pid if place is not None and place.client is not None
                  and place.client.proc is not None else os.getpid())
        external = case.executor == "external" and self.cluster is not None
        roles = roles_for(client, server if case.mode == "covalent" else None,
                          self.cluster.pids if external and self.cluster else ())
        records, hot = self.profiler.run(roles, lambda: self._measure(case, place))
        self._pending_hotspots = hot
        return records

    def _record(self, scenario: Scenario, record: RunRecord, round_: int,
                server: CovalentServer | None, environment: str = "",
                covalent: str = "") -> dict[str, Any]:
        """Append the run's row to runs.csv and its phases to phases.csv, now."""
        assert self.writer is not None and self.phases is not None
        context = RunContext(
            self.session_id, self.profile.name, scenario.workload.name, scenario.id,
            scenario.workload.dimensions(scenario.params), scenario.concurrency, round_,
            round_ < scenario.warmup_rounds,
            {} if server is None else {"server_startup_s": server.startup_s,
                                       "server_workers": server.workers,
                                       "server_threads_per_worker": server.threads_per_worker},
            environment, {"covalent": covalent or "?"} if environment else {},
        )
        row = run_row(context, record)
        try:
            self.writer.append(row)
        except OSError as exc:
            raise self._unwritable(exc, self.writer.path) from None
        self.rows += 1
        try:
            self.phases.append(*phase_rows(row, record))
            self._write_hotspots(row, record)
        except OSError as exc:
            raise self._unwritable(exc, self.phases.path) from None
        return row

    def _write_hotspots(self, row: dict[str, Any], record: RunRecord) -> None:
        """The run's hotspots (a profiled run's), keyed like its runs.csv row."""
        if not self._pending_hotspots:  # the usual case: an unprofiled run
            return
        mine = [h for h in self._pending_hotspots if len(h)
                and (h["run_id"] == record.run_id).all()]
        # Each run's frames are written once and then dropped: no stale state for later runs.
        self._pending_hotspots = [h for h in self._pending_hotspots
                                  if not any(h is m for m in mine)]
        if not mine:
            return
        keys = {k: row.get(k, "") for k in RUN_KEYS}
        writer = hotspots_writer(self.out_dir)
        for frame in mine:
            writer.append(*({**rec, **keys} for rec in frame.drop(
                columns=["run_id", "share", "coverage"], errors="ignore")
                            .to_dict("records")))

    def _unwritable(self, exc: OSError, path: Path) -> RecordsUnwritableError:
        assert self.writer is not None
        return RecordsUnwritableError(
            f"cannot write {exc.filename or path}: {exc.strerror or exc}; the session ends "
            f"here, every earlier run stays in {self.writer.path} ({self.rows} rows this "
            f"session); make it writable or choose another --bench-out")

    def finish(self) -> Any:
        """The session's summary (summary.csv, and precision.json with a precision target),
        from every record in the output directory; None if nothing was recorded."""
        if self.rows == 0:
            return None
        if self.precision is not None:
            self.precision.write(self.out_dir, self.session_id)
        from bench.report.tables import write_summary  # plotting stack: only when needed

        return write_summary(self.out_dir)[0]


def run_all(engine: Engine, cases: list[Case]) -> Iterator[tuple[Case, list[dict[str, Any]]]]:
    """Every case in order, once per round it stands for (all of them in grouped order),
    skipping rounds the precision rule does not need; yields each case with its rows."""
    for case in cases:
        if engine.skip_reason(case):
            continue
        rounds = ([case.round] if case.round is not None
                  else range(case.scenario.warmup_rounds + case.scenario.rounds))
        for round_ in rounds:
            yield case, engine.run(case, round_)
