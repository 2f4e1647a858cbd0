"""Benchmark profiles: named workloads read from bench/configs/<name>.toml.

A profile holds run settings (rounds, warm-up rounds, executors, concurrency), a
[workflow] table of WorkflowConfig values, and optional [[matrix]] tables: each expands
its lists into one scenario per combination, and the profile is the union of them (so a
sweep of K models need not be crossed with every data size). A matrix table may also set
run settings of its own, e.g. fewer rounds for its expensive part. `--bench-set key=value`
overrides one value everywhere.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from mnist_core.config import WorkflowConfig

CONFIG_DIR = Path(__file__).parent / "configs"
# Settings of how a workflow is run (not what it computes); `name` labels a matrix part.
RUN_KEYS = ("rounds", "warmup_rounds", "executors", "concurrency")
PROFILE_KEYS = ("description", *RUN_KEYS)
MATRIX_KEYS = ("name", *RUN_KEYS)
# The server's own executors, and `external`: a Dask cluster outside the server.
EXECUTORS = ("local", "dask", "external")
DEFAULTS: dict[str, Any] = {"rounds": 3, "warmup_rounds": 1, "executors": ["local", "dask"],
                            "concurrency": 1}


class ProfileError(ValueError):
    """A profile or override is invalid; the message lists what is valid."""


@dataclass(frozen=True)
class Scenario:
    """One configuration of the workflow and how to run it: the unit the suite measures."""

    config: WorkflowConfig
    executors: tuple[str, ...]
    rounds: int
    warmup_rounds: int
    concurrency: int = 1  # workflows run at once (Covalent) / one after another (plain)
    part: str = ""  # the matrix table it came from

    @property
    def id(self) -> str:
        """The configuration's id in CSV rows, benchmark names and plots."""
        return self.config.id + (f"-n{self.concurrency}" if self.concurrency > 1 else "")


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    scenarios: tuple[Scenario, ...]

    @property
    def configs(self) -> tuple[WorkflowConfig, ...]:
        return tuple(s.config for s in self.scenarios)


def available_profiles() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))


def parse_override(text: str) -> tuple[str, Any]:
    """'epochs=1' -> ('epochs', 1); values are TOML literals, bare words are strings."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ProfileError(f"--bench-set expects key=value, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip(), value


def _valid_keys() -> str:
    return ", ".join((*PROFILE_KEYS, *WorkflowConfig.fields()))


def load_profile(
    name: str, overrides: list[str] | tuple[str, ...] = (), data_dir: str = ""
) -> Profile:
    """A shipped profile by name, or any profile file by its path (ending in .toml)."""
    path = Path(name) if name.endswith(".toml") else CONFIG_DIR / f"{name}.toml"
    if not path.is_file():
        raise ProfileError(
            f"unknown profile {name!r}; available: {', '.join(available_profiles())} "
            f"(or the path of a .toml file)"
        )
    name = path.stem
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: invalid TOML: {exc}") from exc
    return profile_from_doc(name, doc, overrides, data_dir, where=str(path))


def profile_from_doc(
    name: str, doc: dict[str, Any], overrides: list[str] | tuple[str, ...] = (),
    data_dir: str = "", where: str = "",
) -> Profile:
    """A Profile from a parsed TOML document (what load_profile reads from a file)."""
    where = where or f"profile {name!r}"
    run = {k: v for k, v in doc.items() if k not in ("workflow", "matrix")}
    workflow = dict(doc.get("workflow", {}))
    matrices = doc.get("matrix", [{}])
    matrices = [dict(m) for m in (matrices if isinstance(matrices, list) else [matrices])]
    fields = WorkflowConfig.fields()

    unknown = (set(run) - set(PROFILE_KEYS)) | (set(workflow) - set(fields))
    for matrix in matrices:
        unknown |= set(matrix) - set(MATRIX_KEYS) - set(fields)
    if unknown:
        raise ProfileError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; valid keys: {_valid_keys()}"
        )
    for key, value in (parse_override(o) for o in overrides):
        if key in RUN_KEYS:
            run[key] = value
            for matrix in matrices:
                matrix.pop(key, None)
        elif key in fields:
            workflow[key] = value
            for matrix in matrices:  # a single value replaces a swept one
                matrix.pop(key, None)
        else:
            raise ProfileError(f"unknown key {key!r} in --bench-set; valid keys: {_valid_keys()}")
    if data_dir:
        workflow["data_dir"] = data_dir

    scenarios: dict[str, Scenario] = {}
    for matrix in matrices:
        part = str(matrix.pop("name", ""))
        settings = {**DEFAULTS, **run, **{k: matrix.pop(k) for k in RUN_KEYS if k in matrix}}
        rounds, warmup, executors = _run_settings(where, settings)
        keys = list(matrix)
        for values in itertools.product(
            *(_as_list(matrix[k]) for k in keys), _as_list(settings["concurrency"])
        ):
            *swept, concurrency = values
            try:
                config = WorkflowConfig(**{**workflow, **dict(zip(keys, swept, strict=True))})
            except (TypeError, ValueError) as exc:
                raise ProfileError(f"{where}: {exc}") from exc
            if not isinstance(concurrency, int) or isinstance(concurrency, bool) or (
                concurrency < 1
            ):
                raise ProfileError(
                    f"{where}: concurrency must be an integer >= 1, got {concurrency!r}"
                )
            scenario = Scenario(config, executors, rounds, warmup, concurrency, part)
            scenarios.setdefault(scenario.id, scenario)  # the same one in two parts runs once
    return Profile(name, str(run.get("description", "")), tuple(scenarios.values()))


def _run_settings(where: str, settings: dict[str, Any]) -> tuple[int, int, tuple[str, ...]]:
    rounds, warmup = settings["rounds"], settings["warmup_rounds"]
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise ProfileError(f"{where}: rounds must be an integer >= 1, got {rounds!r}")
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise ProfileError(f"{where}: warmup_rounds must be an integer >= 0, got {warmup!r}")
    executors = _as_list(settings["executors"])
    bad = [e for e in executors if e not in EXECUTORS]
    if bad or not executors:
        raise ProfileError(
            f"{where}: invalid executors {bad or executors}; valid: {', '.join(EXECUTORS)}"
        )
    return rounds, warmup, tuple(executors)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
