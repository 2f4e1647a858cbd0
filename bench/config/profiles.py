"""Benchmark profiles: what to run and how, read from bench/config/<name>.toml.

A profile names a workload (`workload = "mnist"`, `"chain"`, `"fanout"` or a lattice as
"MODULE:ATTR"; default mnist), run settings (rounds, warm-up rounds, executors,
concurrency, dispatch timeout), a [params] table of the workload's parameters, and
optional [[matrix]] tables: each expands its lists into one scenario per combination, and
the profile is the union of them (so a sweep of K models need not be crossed with every
data size). A matrix table may also set run settings of its own, e.g. fewer rounds for
its expensive part.

Overrides: `--bench-set key=value` sets a run setting or a parameter everywhere;
`--bench-arg key=value` sets a parameter, and a list value expands into one scenario per
element. `--bench-workload` replaces the profile's workload: its run settings still apply,
its parameters and matrix don't.
"""

from __future__ import annotations

import itertools
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.services.environments import Environment
from bench.workloads import Workload, WorkloadError, workload_for
from bench.workloads.tasks import GraphWorkload

CONFIG_DIR = Path(__file__).parent
# The profile used when --bench-workload names a lattice and no profile is given.
LATTICE_PROFILE = "lattice"
DEFAULT_PROFILE = "tutorial"
# Settings of how a workload is run (not what it computes); `name` labels a matrix part.
RUN_KEYS = ("rounds", "warmup_rounds", "executors", "concurrency", "timeout_s", "probes",
            "ramp")
# probes = "on": every task timed from inside (the decomposition needs it); "compare": each
# round also runs every mode bare, without probes, interleaved: what the probes cost.
PROBES = ("on", "compare")
# ramp = "full": every concurrency level listed runs; "until-knee": a level runs only while
# the ones below it neither failed a run nor passed the knee (bench.analysis.load.ramp_stop).
RAMPS = ("full", "until-knee")
WORKLOAD_KEYS = ("workload", "inputs", "digest")
# reference = true: the envelope's reference graph runs too (bench.workloads.tasks.GraphWorkload
# .reference), with the profile's run settings, to scale predictions by this host's speed.
PROFILE_KEYS = ("description", *WORKLOAD_KEYS, *RUN_KEYS, "reference")
REFERENCE_PART = "reference"  # the reference graph's scenario's part
# [[environments]]: Covalent releases or settings measured side by side, the first the
# reference (bench.services.environments). Without it, Covalent runs in this interpreter.
ENVIRONMENT_KEYS = ("name", "requirement", "env")
MATRIX_KEYS = ("name", "workload", *RUN_KEYS)
TABLES = ("params", "matrix", "environments")
# The server's own executors, and `external`: a Dask cluster outside the server.
EXECUTORS = ("local", "dask", "external")
# Upper bounds on what a profile may ask for; past them it is a typo (rounds=2000000 once built
# 4M cases, 11 GB, before anything ran), not a plan. MAX_ROUNDS measured rounds of one
# configuration take hours even at a Covalent dispatch's second or so, and 1000 rounds
# narrow a median's CI 18x more than the 3 the gate needs; MAX_CASES runs (every scenario
# x mode x round) keep the planned session in memory at about 150 MB and on the machine
# for at least 14 hours at a second a run.
MAX_ROUNDS = 1000
MAX_CASES = 50_000
DEFAULTS: dict[str, Any] = {"rounds": 3, "warmup_rounds": 1, "executors": ["local", "dask"],
                            "concurrency": 1, "timeout_s": 3600.0, "probes": "on",
                            "ramp": "full"}


class ProfileError(ValueError):
    """A profile or override is invalid; the message lists what is valid."""


@dataclass(frozen=True)
class Scenario:
    """One configuration of a workload and how to run it: the unit the suite measures."""

    workload: Workload
    params: Mapping[str, Any]
    executors: tuple[str, ...]
    rounds: int
    warmup_rounds: int
    concurrency: int = 1  # workflows run at once (Covalent) / one after another (plain)
    part: str = ""  # the matrix table it came from
    timeout_s: float = DEFAULTS["timeout_s"]
    probes: str = "on"  # see PROBES
    environments: tuple[Environment, ...] = ()  # the first is the reference
    ramp: str = "full"  # see RAMPS
    id: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        cid = self.workload.config_id(self.params)
        object.__setattr__(self, "id", cid + (f"-n{self.concurrency}"
                                              if self.concurrency > 1 else ""))


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    scenarios: tuple[Scenario, ...]

    @property
    def workloads(self) -> tuple[Workload, ...]:
        seen: dict[int, Workload] = {}
        for s in self.scenarios:
            seen.setdefault(id(s.workload), s.workload)
        return tuple(seen.values())


def available_profiles() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))


# A value that starts like a TOML array, inline table, string or number (a digit or a sign;
# not ".", which starts paths) is meant as one: if it does not parse, that is a typo to
# report (n=[1,2 once became the string "[1,2"), not a bare word.
_TOML_LIKE = re.compile(r"""[\[{"'0-9+\-]|(inf|nan)\b""")


def parse_override(text: str, option: str = "--bench-set") -> tuple[str, Any]:
    """'epochs=1' -> ('epochs', 1); values are TOML literals, bare words (shape=lean) are
    strings; text that starts like a TOML literal but does not parse is a ProfileError."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ProfileError(f"{option} expects KEY=VALUE, got {text!r}")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError as exc:
        if _TOML_LIKE.match(raw):
            raise ProfileError(
                f"{option} {text}: {raw!r} is not a valid TOML value "
                f"({re.sub(r' [(]at [^)]*[)]', '', str(exc))}); write a list "
                f"as [1, 2], a string with quotes as \"...\", or a bare word") from None
        value = raw
    return key.strip(), value


def profile_doc(name: str) -> tuple[str, dict[str, Any]]:
    """A shipped profile by name, or any profile file by its path (ending in .toml): its
    path and parsed TOML document."""
    path = Path(name) if name.endswith(".toml") else CONFIG_DIR / f"{name}.toml"
    if not path.is_file():
        raise ProfileError(
            f"unknown profile {name!r}; available: {', '.join(available_profiles())} "
            f"(or the path of a .toml file)"
        )
    try:
        return str(path), tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: invalid TOML: {exc}") from exc


def load_profile(
    name: str | None,
    overrides: Sequence[str] = (),
    args: Sequence[str] = (),
    workload: str | None = None,
    inputs: str | None = None,
    digest: str | None = None,
    data_dir: str = "",
    environments: Sequence[str] = (),
    env_vars: Sequence[str] = (),
    reference: bool = False,
) -> Profile:
    """A shipped profile by name, or any profile file by its path (ending in .toml).
    `environments`: NAME=REQUIREMENT (replace the profile's); `env_vars`: NAME:VAR=VALUE,
    a variable for the named environment's server and client."""
    path_text, doc = profile_doc(name or (LATTICE_PROFILE if workload else DEFAULT_PROFILE))
    path = Path(path_text)
    if workload:  # the profile's run settings, the user's lattice
        doc = {k: v for k, v in doc.items() if k in PROFILE_KEYS}
        doc.update(workload=workload, inputs=inputs, digest=digest)
        doc = {k: v for k, v in doc.items() if v is not None}
    elif inputs or digest:
        raise ProfileError("--bench-inputs and --bench-digest go with --bench-workload")
    if environments:  # --bench-env NAME=REQUIREMENT replaces the profile's list
        doc = {**doc, "environments": [_env_option(text) for text in environments]}
    if env_vars:
        doc = {**doc, "environments": _with_env_vars(doc.get("environments") or [], env_vars)}
    if reference:
        doc = {**doc, "reference": True}
    return profile_from_doc(path.stem, doc, overrides, args, data_dir, where=str(path))


def _env_option(text: str) -> dict[str, Any]:
    """'old=covalent==0.238.0' -> {'name': 'old', 'requirement': 'covalent==0.238.0'}."""
    name, sep, requirement = text.partition("=")
    if not sep or not name.strip() or not requirement.strip():
        raise ProfileError(f"--bench-env expects NAME=REQUIREMENT (e.g. "
                           f"old=covalent==0.238.0 or mine=/path/to/covalent), got {text!r}")
    return {"name": name.strip(), "requirement": requirement.strip()}


def _with_env_vars(tables: list[Any], texts: Sequence[str]) -> list[Any]:
    """The [[environments]] tables with 'old:COVALENT_USE_OLD_DASK=1' added to 'old'."""
    tables = [dict(t) if isinstance(t, dict) else t for t in tables]
    by_name = {t.get("name"): t for t in tables if isinstance(t, dict)}
    for text in texts:
        name, sep, assignment = text.partition(":")
        var, eq, value = assignment.partition("=")
        if not sep or not eq or not var.strip():
            raise ProfileError(f"--bench-env-var expects NAME:VARIABLE=VALUE (e.g. "
                               f"old-dask:COVALENT_USE_OLD_DASK=1), got {text!r}")
        if name not in by_name:
            raise ProfileError(f"--bench-env-var {text}: no environment named {name!r}; "
                               f"environments: {', '.join(map(str, by_name)) or '(none)'}")
        by_name[name]["env"] = {**(by_name[name].get("env") or {}), var.strip(): value}
    return tables


def _environments(doc: Mapping[str, Any], where: str) -> tuple[Environment, ...]:
    raw = doc.get("environments") or []
    if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
        raise ProfileError(f"{where}: [[environments]] entries must be tables with "
                           f"{', '.join(ENVIRONMENT_KEYS)}")
    out = []
    for table in raw:
        unknown = set(table) - set(ENVIRONMENT_KEYS)
        if unknown or "name" not in table:
            raise ProfileError(f"{where}: an [[environments]] table needs a name and takes "
                               f"{', '.join(ENVIRONMENT_KEYS)}; got {sorted(table)}")
        env = table.get("env", {})
        if not isinstance(env, dict):
            raise ProfileError(f"{where}: environment {table['name']!r}: env must be a table "
                               f"of VARIABLE = \"value\"")
        try:
            out.append(Environment(str(table["name"]), **(
                {"requirement": str(table["requirement"])} if "requirement" in table else {}),
                env={str(k): str(v) for k, v in env.items()}))
        except ValueError as exc:
            raise ProfileError(f"{where}: {exc}") from None
    names = [e.name for e in out]
    if len(set(names)) != len(names):
        raise ProfileError(f"{where}: environment names must differ, got {names}")
    return tuple(out)


def _table(doc: Mapping[str, Any], key: str, where: str) -> Any:
    value = doc.get(key)
    if key == "params" and value is not None and not isinstance(value, dict):
        raise ProfileError(f"{where}: [params] must be a table of parameter = value, "
                           f"got {type(value).__name__}")
    if key == "matrix" and value is not None:
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(m, dict) for m in items):
            raise ProfileError(f"{where}: [[matrix]] entries must be tables")
    return value


def profile_from_doc(
    name: str, doc: Mapping[str, Any], overrides: Sequence[str] = (), args: Sequence[str] = (),
    data_dir: str = "", where: str = "",
) -> Profile:
    """A Profile from a parsed TOML document (what load_profile reads from a file)."""
    where = where or f"profile {name!r}"
    unknown = set(doc) - set(PROFILE_KEYS) - set(TABLES)
    if unknown:
        raise ProfileError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; valid: "
                           f"{', '.join(PROFILE_KEYS)} and the tables [params], [[matrix]]")
    run = {k: doc[k] for k in RUN_KEYS if k in doc}
    environments = _environments(doc, where)
    params = dict(_table(doc, "params", where) or {})
    raw_matrices = _table(doc, "matrix", where) or [{}]
    matrices = [dict(m) for m in (raw_matrices if isinstance(raw_matrices, list)
                                  else [raw_matrices])]
    cache: dict[str, Workload] = {}

    def workload_named(name: Any) -> Workload:
        if isinstance(name, Workload):  # the API's: a lattice object made into a workload
            return name
        if name not in cache:
            try:
                cache[name] = workload_for(name, doc.get("inputs"), doc.get("digest"))
            except WorkloadError as exc:
                raise ProfileError(str(exc)) from exc
        return cache[name]

    main = doc.get("workload", "mnist")
    main = main if isinstance(main, Workload) else str(main)
    parts = [(workload_named(m.pop("workload", main)), m) for m in matrices]

    def check_param(w: Workload, key: str, origin: str) -> None:
        if key not in w.defaults() and not w.open_ended():
            raise ProfileError(
                f"{origin}: unknown key {key!r}; run settings: {', '.join(RUN_KEYS)}; "
                f"parameters of workload {w.name!r}: {', '.join(w.defaults()) or '(none)'}"
            )

    def check_everywhere(key: str, origin: str) -> None:
        for w in {id(w): w for w, _ in parts}.values():
            check_param(w, key, origin)

    for key in params:
        check_everywhere(key, f"{where} [params]")
    for w, matrix in parts:
        for key in set(matrix) - set(MATRIX_KEYS):
            check_param(w, key, f"{where} [[matrix]] {matrix.get('name', '')}".rstrip())
    for text in overrides:
        key, value = parse_override(text, "--bench-set")
        if key in RUN_KEYS:
            run[key] = value
            for _, matrix in parts:
                matrix.pop(key, None)
        else:
            check_everywhere(key, f"--bench-set {text}")
            params[key] = value
            for _, matrix in parts:  # a single value replaces a swept one
                matrix.pop(key, None)
    swept_args: dict[str, list[Any]] = {}
    for text in args:
        key, value = parse_override(text, "--bench-arg")
        check_everywhere(key, f"--bench-arg {text}")
        if isinstance(value, list):
            swept_args[key] = value
        else:
            params[key] = value
        for _, matrix in parts:
            matrix.pop(key, None)

    scenarios: dict[str, Scenario] = {}
    for workload, matrix in parts:
        matrix = {**matrix, **swept_args}
        base = {**params}
        if data_dir and "data_dir" in workload.defaults():
            base["data_dir"] = data_dir
        part = str(matrix.pop("name", ""))
        settings = {**DEFAULTS, **run, **{k: matrix.pop(k) for k in RUN_KEYS if k in matrix}}
        rounds, warmup, executors, timeout_s = _run_settings(where, settings)
        if settings["probes"] not in PROBES:
            raise ProfileError(f"{where}: probes must be one of {', '.join(PROBES)}, got "
                               f"{settings['probes']!r}")
        if settings["ramp"] not in RAMPS:
            raise ProfileError(f"{where}: ramp must be one of {', '.join(RAMPS)}, got "
                               f"{settings['ramp']!r}")
        keys = list(matrix)
        for values in itertools.product(
            *(_as_list(matrix[k]) for k in keys), _as_list(settings["concurrency"])
        ):
            *swept, concurrency = values
            try:
                full = workload.check({**base, **dict(zip(keys, swept, strict=True))})
            except WorkloadError as exc:
                raise ProfileError(f"{where}: {exc}") from exc
            if not isinstance(concurrency, int) or isinstance(concurrency, bool) or (
                concurrency < 1
            ):
                raise ProfileError(
                    f"{where}: concurrency must be an integer >= 1, got {concurrency!r}"
                )
            scenario = Scenario(workload, full, executors, rounds, warmup, concurrency, part,
                                timeout_s, settings["probes"], environments, settings["ramp"])
            scenarios.setdefault(scenario.id, scenario)  # the same one in two parts runs once
    reference = doc.get("reference", False)
    if not isinstance(reference, bool):
        raise ProfileError(f"{where}: reference must be true or false, got {reference!r}")
    if reference:
        graph = workload_for(GraphWorkload.name)  # the envelope's own, not the user's inputs
        rounds, warmup, executors, timeout_s = _run_settings(where, {**DEFAULTS, **run})
        scenario = Scenario(graph, graph.check(graph.reference), executors, rounds, warmup, 1,
                            REFERENCE_PART, timeout_s, "on", environments, "full")
        scenarios.setdefault(scenario.id, scenario)
    _check_cases(where, scenarios.values())
    workload = parts[0][0]
    description = str(doc.get("description", "")) or workload.description
    return Profile(name, description, tuple(scenarios.values()))


def _run_settings(where: str, settings: dict[str, Any]
                  ) -> tuple[int, int, tuple[str, ...], float]:
    rounds, warmup = settings["rounds"], settings["warmup_rounds"]
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise ProfileError(f"{where}: rounds must be an integer >= 1, got {rounds!r}")
    if rounds > MAX_ROUNDS:
        raise ProfileError(f"{where}: rounds must be at most {MAX_ROUNDS}, got {rounds}; for "
                           f"a precise median use --bench-precision instead")
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise ProfileError(f"{where}: warmup_rounds must be an integer >= 0, got {warmup!r}")
    if warmup > MAX_ROUNDS:
        raise ProfileError(f"{where}: warmup_rounds must be at most {MAX_ROUNDS}, got {warmup}")
    timeout_s = settings["timeout_s"]
    if (not isinstance(timeout_s, int | float) or isinstance(timeout_s, bool) or timeout_s <= 0
            or not math.isfinite(timeout_s)):  # nan passes `<= 0`; inf never times out
        raise ProfileError(f"{where}: timeout_s must be a finite number of seconds > 0, "
                           f"got {timeout_s!r}")
    executors = _as_list(settings["executors"])
    bad = [e for e in executors if e not in EXECUTORS]
    if bad or not executors:
        raise ProfileError(
            f"{where}: invalid executors {bad or executors}; valid: {', '.join(EXECUTORS)}"
        )
    return rounds, warmup, tuple(executors), float(timeout_s)


def planned_cases(scenario: Scenario) -> int:
    """The runs a scenario plans: (plain + each executor in each environment) x (2 with
    probes = "compare": each also bare) x (warm-up + measured rounds)."""
    modes = 1 + len(scenario.executors) * max(1, len(scenario.environments))
    return modes * (2 if scenario.probes == "compare" else 1) * (
        scenario.rounds + scenario.warmup_rounds)


def _check_cases(where: str, scenarios: Any) -> None:
    scenarios = list(scenarios)
    total = sum(planned_cases(s) for s in scenarios)
    if total > MAX_CASES:
        raise ProfileError(f"{where}: {len(scenarios)} scenario(s) plan {total} runs "
                           f"(scenarios x modes x rounds), more than the {MAX_CASES} a session "
                           f"may plan; fewer rounds, executors or swept values")


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
