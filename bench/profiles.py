"""Benchmark profiles: named workloads read from bench/configs/<name>.toml.

A profile file holds run settings (rounds, warm-up rounds, executors) and a [workflow]
table of WorkflowConfig values; an optional [matrix] table of lists expands into one
configuration per combination. `--bench-set key=value` overrides single values.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from mnist_core.config import WorkflowConfig

CONFIG_DIR = Path(__file__).parent / "configs"
RUN_KEYS = ("description", "rounds", "warmup_rounds", "executors")
EXECUTORS = ("local", "dask")


class ProfileError(ValueError):
    """A profile or override is invalid; the message lists what is valid."""


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    rounds: int
    warmup_rounds: int
    executors: tuple[str, ...]
    configs: tuple[WorkflowConfig, ...]


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
    return ", ".join((*RUN_KEYS, *WorkflowConfig.fields()))


def load_profile(
    name: str, overrides: list[str] | tuple[str, ...] = (), data_dir: str = ""
) -> Profile:
    path = CONFIG_DIR / f"{name}.toml"
    if not path.is_file():
        raise ProfileError(
            f"unknown profile {name!r}; available: {', '.join(available_profiles())}"
        )
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: invalid TOML: {exc}") from exc
    run = {k: v for k, v in doc.items() if k not in ("workflow", "matrix")}
    workflow = dict(doc.get("workflow", {}))
    matrix = dict(doc.get("matrix", {}))
    for key, value in (parse_override(o) for o in overrides):
        if key in RUN_KEYS:
            run[key] = value
        elif key in WorkflowConfig.fields():
            matrix.pop(key, None)  # a single value replaces a swept one
            workflow[key] = value
        else:
            raise ProfileError(f"unknown key {key!r} in --bench-set; valid keys: {_valid_keys()}")

    unknown = (set(run) - set(RUN_KEYS)) | (
        (set(workflow) | set(matrix)) - set(WorkflowConfig.fields())
    )
    if unknown:
        raise ProfileError(
            f"{path}: unknown key(s) {', '.join(sorted(unknown))}; valid keys: {_valid_keys()}"
        )
    if data_dir:
        workflow["data_dir"] = data_dir

    rounds, warmup = run.get("rounds", 3), run.get("warmup_rounds", 1)
    if not isinstance(rounds, int) or rounds < 1:
        raise ProfileError(f"profile {name!r}: rounds must be an integer >= 1, got {rounds!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ProfileError(f"profile {name!r}: warmup_rounds must be >= 0, got {warmup!r}")
    executors = run.get("executors", list(EXECUTORS))
    if isinstance(executors, str):
        executors = [executors]
    bad = [e for e in executors if e not in EXECUTORS]
    if bad or not executors:
        raise ProfileError(
            f"profile {name!r}: invalid executors {bad or executors}; valid: {', '.join(EXECUTORS)}"
        )

    configs = []
    keys = list(matrix)
    for values in itertools.product(*(_as_list(matrix[k]) for k in keys)):
        try:
            configs.append(WorkflowConfig(**{**workflow, **dict(zip(keys, values, strict=True))}))
        except (TypeError, ValueError) as exc:
            raise ProfileError(f"profile {name!r}: {exc}") from exc
    return Profile(
        name=name,
        description=str(run.get("description", "")),
        rounds=rounds,
        warmup_rounds=warmup,
        executors=tuple(executors),
        configs=tuple(configs),
    )


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
