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

import contextlib
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

from bench.adapters import covalent_api
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
            # As `python path/to/file.py` would: its directory first on sys.path, so that its
            # own imports of sibling modules and packages (`from helpers import scale`) work.
            folder = str(path.parent)
            if folder not in sys.path:
                sys.path.insert(0, folder)
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


def server_cannot_import(names: list[str]) -> list[str]:
    """Which of these top-level modules a fresh interpreter, started outside the user's
    directory and without their PYTHONPATH (as the server's tasks are), cannot find."""
    if not names:
        return []
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = ("import importlib.util, sys\n"
            "for n in sys.argv[1:]:\n"
            "    if importlib.util.find_spec(n) is None: print(n)")
    with tempfile.TemporaryDirectory() as cwd:
        try:
            done = subprocess.run([sys.executable, "-c", code, *names], cwd=cwd, env=env,
                                  timeout=60, capture_output=True, text=True)
        except (OSError, subprocess.SubprocessError):
            return list(names)
    return done.stdout.split() if done.returncode == 0 else list(names)


def _walk(root: Any, after: Callable[[Any, Any], None] | None = None) -> set[str]:
    """The modules that the lattice's code refers to: its function, its electrons', its
    sublattices', and what their globals name (functions, classes, modules; only globals the
    code uses are followed, nested code too). `after(lattice, fn)` is called for every lattice
    once the lattices its function `fn` names have been visited (innermost first)."""
    modules: set[str] = set()
    seen: set[int] = set()

    def names_of(code: Any) -> set[str]:
        out = set(code.co_names)
        for const in code.co_consts:
            if inspect.iscode(const):
                out |= names_of(const)
        return out

    def visit(obj: Any) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if covalent_api.is_lattice(obj):
            # Unpickled anew on every call: its globals hold copies of the sublattices, so
            # `after` must see this very function, the one whose globals were visited.
            fn = covalent_api.lattice_function(obj)
            visit(fn)
            if after is not None:
                after(obj, fn)
            return
        inner = covalent_api.electron_function(obj)
        if inner is not None:
            visit(inner)
            return
        if inspect.ismodule(obj):
            modules.add(obj.__name__)
            return
        module = getattr(obj, "__module__", None)
        if isinstance(module, str) and (inspect.isclass(obj) or callable(obj)):
            modules.add(module)
        if inspect.isfunction(obj):
            for name in names_of(obj.__code__):
                if name in obj.__globals__:
                    visit(obj.__globals__[name])
            for cell in obj.__closure__ or ():
                with contextlib.suppress(ValueError):  # an empty cell
                    visit(cell.cell_contents)

    visit(root)
    return modules


def ship_client_only_modules(lattice: Any) -> list[str]:
    """Make every module the lattice's tasks need, that the server's interpreter cannot
    import (a file beside the user's code, a package of theirs not installed), travel by
    value; then pickle the lattices again, innermost first, since a lattice pickles its
    function when it is made. Covalent would pickle those functions by reference, and the
    tasks would fail on the server (and on external Dask workers) with ModuleNotFoundError.
    Returns the modules shipped. A notebook's own cells (__main__) travel by value anyway."""
    modules = _walk(lattice)
    tops = sorted({m.partition(".")[0] for m in modules} - {"__main__", "builtins"}
                  - set(sys.builtin_module_names) - set(sys.stdlib_module_names))
    shipped = [n for n in server_cannot_import(tops) if n in sys.modules]
    for name in shipped:
        covalent_api.pickle_by_value(sys.modules[name])
    if shipped:
        _walk(lattice, after=covalent_api.reserialize)
    return shipped


def _ref_of(obj: Any) -> str | None:
    """MODULE:ATTR (or path/to/file.py:ATTR) under which another interpreter finds `obj`;
    None for what only this process has (a notebook cell's function)."""
    fn = covalent_api.lattice_function(obj) if covalent_api.is_lattice(obj) else obj
    module = inspect.getmodule(fn)
    if module is None or module.__name__ == "__main__":
        return None
    attr = next((k for k, v in vars(module).items() if v is obj), None)
    if attr is None:
        return None
    file = getattr(module, "__file__", None)
    try:  # importable by its name (from the cwd, as `python -m` would): the name says more
        spec = importlib.util.find_spec(module.__name__)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and (file is None or spec.origin == file):
        return f"{module.__name__}:{attr}"
    return f"{file}:{attr}" if file else None


class LatticeWorkload(Workload):
    """A user's ct.lattice, run plain and dispatched as it is: named (MODULE:ATTR,
    path/to/file.py:ATTR) or given as the object itself (from a notebook, say). `inputs` and
    `digest_fn` are functions, or their MODULE:FUNC names."""

    # Its plain runs record the graph's census, so that its report can set the envelope's
    # prediction beside what was measured (bench.report.envelope).
    takes_census = True

    def __init__(self, ref: str | Any, inputs: str | Callable[..., Any] | None = None,
                 digest_fn: str | Callable[[Any], Any] | None = None) -> None:
        if isinstance(ref, str):
            lattice = resolve(ref)[1]
            where = f"--bench-workload {ref!r}"
        else:
            lattice, where = ref, "the workflow"
        if not covalent_api.is_lattice(lattice):
            kind = "function" if callable(lattice) else type(lattice).__name__
            raise WorkloadError(
                f"{where} is a {kind}, not a Covalent lattice; name an object "
                f"made with @ct.lattice (or ct.lattice(fn))"
            )
        fn = covalent_api.lattice_function(lattice)
        self.lattice_ref = ref if isinstance(ref, str) else _ref_of(lattice)
        self.name = (ref.rpartition(":")[2] if isinstance(ref, str)
                     else getattr(fn, "__name__", "workflow"))
        self.description = (inspect.getdoc(fn) or "").split("\n")[0]
        self._signature = inspect.signature(fn)
        self._inputs: Callable[..., Any] | None = _function(inputs, "--bench-inputs")
        self._digest: Callable[[Any], Any] | None = _function(digest_fn, "--bench-digest")
        refs = [x if isinstance(x, str) or x is None else _ref_of(x)
                for x in (inputs, digest_fn)]
        # Another interpreter (an environment's client) loads the workload by these names;
        # None: it cannot (something defined only in this process).
        named = self.lattice_ref is not None and all(
            r is not None for r, x in zip(refs, (inputs, digest_fn), strict=True) if x)
        self._refs = (self.lattice_ref if named else None, refs[0], refs[1])
        self._lattice = lattice
        self.shipped = ship_client_only_modules(lattice)
        self.by_value = bool(self.shipped)

    @property
    def signature(self) -> inspect.Signature:
        """The lattice function's signature: its parameters are the workload's."""
        return self._signature

    def defaults(self) -> dict[str, Any]:
        return {name: (None if p.default is inspect.Parameter.empty else p.default)
                for name, p in self._signature.parameters.items()
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}

    @property
    def ref(self) -> tuple[str | None, str | None, str | None]:
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


def _function(given: str | Callable[..., Any] | None, option: str) -> Callable[..., Any] | None:
    fn = resolve(given, option)[1] if isinstance(given, str) else given
    if fn is not None and not callable(fn):
        raise WorkloadError(f"{option} must name a function, got {type(fn).__name__}")
    return fn
