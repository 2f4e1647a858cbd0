"""Any user's lattice as a workload: `--bench-workload MODULE:ATTR` (or `path/to/file.py:ATTR`).

Its keyword arguments are the workload's parameters (`--bench-arg KEY=VALUE` or a profile's
[params] table; matrix lists expand). Arguments TOML cannot express (a model, an array)
come from an inputs factory, `--bench-inputs MODULE:FUNC`, called with the parameters for
every run and returning the remaining keyword arguments, so that each run starts from
equal, fresh inputs. The same-work check compares digests of the return value
(bench.workloads.digest), or of what `--bench-digest MODULE:FUNC` makes of it.

A module only this client can import (a file beside the user's code) is shipped to the
server by value: Covalent would pickle its functions by reference, and the tasks would
fail with ModuleNotFoundError on the server.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.measure import covalent_api
from bench.workloads.base import Outcome, Workload, WorkloadError
from bench.workloads.digest import digest


def resolve(ref: str, what: str = "--bench-workload") -> tuple[ModuleType, Any]:
    """'pkg.module:attr' or 'path/to/file.py:attr' -> (module, the object)."""
    module_ref, sep, attr = ref.rpartition(":")
    if not sep or not module_ref or not attr:
        raise WorkloadError(f"{what} expects MODULE:ATTR (or path/to/file.py:ATTR), got {ref!r}")
    module = _import(module_ref, what)
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        names = ", ".join(n for n in dir(module) if not n.startswith("_"))
        raise WorkloadError(
            f"{what} {ref!r}: module {module.__name__!r} has no attribute {attr!r} "
            f"(it has: {names[:300]})"
        ) from None
    return module, obj


def _import(module_ref: str, what: str) -> ModuleType:
    try:
        if module_ref.endswith(".py"):
            path = Path(module_ref).resolve()
            if not path.is_file():
                raise FileNotFoundError(f"no such file: {path}")
            name = path.stem
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:  # as importlib does: no half-imported module stays behind
                sys.modules.pop(name, None)
                raise
            return module
        cwd = os.getcwd()
        if cwd not in sys.path:  # as `python -m` would: the user's own files come first
            sys.path.insert(0, cwd)
        return importlib.import_module(module_ref)
    except SystemExit as exc:  # a script's `sys.exit()` at import: not ours to exit on
        raise WorkloadError(
            f"{what}: cannot import {module_ref!r}: it called sys.exit({exc.code!r}) while "
            f"being imported; guard the module's script part with "
            f"`if __name__ == \"__main__\":`"
        ) from None
    except Exception as exc:
        raise WorkloadError(
            f"{what}: cannot import {module_ref!r}: {type(exc).__name__}: {exc}"
        ) from None


def _server_can_import(name: str) -> bool:
    """Whether a fresh interpreter, started outside the user's directory (as the server's
    tasks are), finds module `name`."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({name!r}) is None)"
    with tempfile.TemporaryDirectory() as cwd:
        try:
            done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, timeout=60,
                                  capture_output=True)
        except (OSError, subprocess.SubprocessError):
            return False
    return done.returncode == 0


class LatticeWorkload(Workload):
    """A user's ct.lattice, run plain and dispatched as it is."""

    def __init__(self, ref: str, inputs: str | None = None, digest_fn: str | None = None) -> None:
        module, lattice = resolve(ref)
        if not covalent_api.is_lattice(lattice):
            kind = "function" if callable(lattice) else type(lattice).__name__
            raise WorkloadError(
                f"--bench-workload {ref!r} is a {kind}, not a Covalent lattice; name an object "
                f"made with @ct.lattice (or ct.lattice(fn))"
            )
        self.lattice_ref, self._lattice = ref, lattice
        self._refs = (ref, inputs, digest_fn)
        self.name = ref.rpartition(":")[2]
        fn = covalent_api.lattice_function(lattice)
        self.description = (inspect.getdoc(fn) or "").split("\n")[0]
        self._signature = inspect.signature(fn)
        self._inputs: Callable[..., Mapping[str, Any]] | None = (
            resolve(inputs, "--bench-inputs")[1] if inputs else None)
        self._digest: Callable[[Any], Any] | None = (
            resolve(digest_fn, "--bench-digest")[1] if digest_fn else None)
        for option, fn_ in (("--bench-inputs", self._inputs), ("--bench-digest", self._digest)):
            if fn_ is not None and not callable(fn_):
                raise WorkloadError(f"{option} must name a function, got {type(fn_).__name__}")
        self.by_value = not _server_can_import(module.__name__.partition(".")[0])
        if self.by_value:
            covalent_api.pickle_by_value(module)
            # Lattices pickle their function when they are made, at import: made again now,
            # they (and the sublattices inside them) carry the module by value.
            module.__spec__.loader.exec_module(module)  # type: ignore[union-attr]
            self._lattice = resolve(ref)[1]

    def defaults(self) -> dict[str, Any]:
        return {name: (None if p.default is inspect.Parameter.empty else p.default)
                for name, p in self._signature.parameters.items()
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}

    @property
    def ref(self) -> tuple[str, str | None, str | None]:
        return self._refs

    def open_ended(self) -> bool:
        return any(p.kind is p.VAR_KEYWORD for p in self._signature.parameters.values())

    def check(self, params: Mapping[str, Any]) -> dict[str, Any]:
        full = super().check(params)
        if self._inputs is None:
            required = [name for name, p in self._signature.parameters.items()
                        if p.default is inspect.Parameter.empty and name not in params
                        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            if required:
                raise WorkloadError(
                    f"lattice {self.lattice_ref!r} needs {', '.join(required)}: give each with "
                    f"--bench-arg KEY=VALUE (a TOML value), or name a function that makes "
                    f"them with --bench-inputs MODULE:FUNC"
                )
        return full

    def lattice(self, params: Mapping[str, Any]) -> Any:
        return self._lattice

    def inputs(self, params: Mapping[str, Any]) -> tuple[tuple, dict]:
        kwargs = {k: v for k, v in params.items()
                  if not (v is None and self._signature.parameters[k].default
                          is inspect.Parameter.empty)} if not self.open_ended() else dict(params)
        if self._inputs is not None:
            kwargs.update(self._inputs(**params))
        return (), kwargs

    def outcome(self, value: Any, params: Mapping[str, Any]) -> Outcome:
        shown = value if self._digest is None else self._digest(value)
        metrics: dict[str, Any] = {}
        if isinstance(value, int | float | str | bool) or value is None:
            metrics["value"] = value
        return Outcome(shown if isinstance(shown, str) else digest(shown), metrics)
