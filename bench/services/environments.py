"""Named Covalent environments: one virtual environment per Covalent requirement, built once
and cached between sessions.

An Environment is a name, a pip requirement for Covalent (a release, `covalent==0.238.0`, or
anything pip takes: a path to a local Covalent checkout, a VCS URL ...) and environment
variables for its server and client (`COVALENT_USE_OLD_DASK=1`, say). `build()` turns it into
a BuiltEnvironment: an interpreter whose `import covalent` is that Covalent, and that imports
this checkout's `bench` and `mnist_core` (installed editable, without dependencies), so that
a server started with it (bench.services.server, `python=`) and a client run in it
(bench.run.client) measure with the very same harness code.

Installed into each environment, in one resolution: the requirement, the pins the project
needs (PINS) and those of the requirement's release family (bench.adapters), and the light
packages the measuring side imports (MEASURE_DEPS). Covalent's own dependencies (pydantic,
numpy, dask, fastapi ...) are the environment's own, as that release resolves them.

torch and torchvision are not installed again (5 GB per environment). A `.pth` file in the
environment's site-packages (MAIN_PTH, named to sort last) appends the main environment's
site-packages to the END of sys.path. Every package the environment has wins (its covalent,
pydantic, numpy ...); what it lacks (torch, torchvision and their dependencies) comes from
the main environment, the same build as the plain runs use. A plain directory line of a
`.pth` file only extends sys.path: the main environment's own `.pth` files are not run.
The build checks the result: `import covalent, torch, torchvision, bench.run.runner` and
what the harness uses of that Covalent (its family's `Adapter.check`) work, covalent is
the environment's own and torch is the main one's version. The price of sharing: a
package missing from the environment is silently taken from the main one; with a Covalent
that pins an old numpy (0.232 pins 1.23.5) a main-environment package compiled against
numpy 2 would fail to import there (torch itself works with either).

Cache: `~/.cache/covalent-bench/envs/<requirement>-<hash>` ($COVALENT_BENCH_ENV_CACHE moves
the root). The hash covers what makes a build differ: the requirement (for a local directory
also its git commit and uncommitted changes), this interpreter, the main environment's torch
and torchvision versions and site-packages, this checkout's path and BUILD_VERSION (raise it
when what is installed changes); not the environment's name nor its variables, which apply
when it runs: environments of one requirement (a release under two settings, CI's reference
and `project` when they pin the same release) share one build.
Inside: `venv/` (the environment), `install.log` (every command and its output) and
`ready.json`, written last: a directory without it is a build that did not finish, and is
built again from scratch. Builds of one directory are serialized by a
lock file beside it, so two sessions never build the same environment at once.

The installer is uv (`uv venv --python <this interpreter>`, `uv pip install --python <env>`),
from this environment's `uv` package or PATH; without it, `python -m venv` and pip. uv does
not read pip's configuration: set UV_INDEX_URL / UV_EXTRA_INDEX_URL / UV_FIND_LINKS for a
private index, or pass installer="pip".
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.adapters import adapter_for

__all__ = [
    "BUILD_VERSION",
    "CACHE_ENV",
    "DEFAULT_REQUIREMENT",
    "BuiltEnvironment",
    "Environment",
    "EnvironmentBuildError",
    "build",
    "cache_root",
]

# Raise when what goes into an environment changes: every cached build is then rebuilt.
BUILD_VERSION = 1
CACHE_ENV = "COVALENT_BENCH_ENV_CACHE"
DEFAULT_REQUIREMENT = "covalent==0.240.0"
MARKER = "ready.json"
LOG_NAME = "install.log"
VENV_DIR = "venv"
MAIN_PTH = "zzz-covalent-bench-main-env.pth"  # .pth files are read in name order: last
REPO_ROOT = Path(__file__).resolve().parents[2]

# What every environment needs beside its requirement (../shared/notes/covalent-facts.md);
# a release family may need more (Adapter.pins).
PINS = ("fastapi<0.132", "sqlalchemy<2")
# What bench.run.runner, bench.adapters, bench.services and bench.workloads
# import beside covalent (no version floors: an old Covalent pins its own numpy). packaging
# came with covalent's dask in every build before it was listed here.
MEASURE_DEPS = ("psutil", "toml", "requests", "cloudpickle", "numpy", "packaging")

INSTALL_TIMEOUT_S = 1800.0
CHECK_TIMEOUT_S = 300.0
_TAIL_LINES = 25
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_EXACT_COVALENT = re.compile(r"\s*covalent\s*===?\s*([0-9][^\s;,]*)\s*", re.IGNORECASE)

# Run in the built environment: what it imports, and from where. Its own family (as that
# interpreter's covalent picks it) imports what the harness uses of that Covalent.
_CHECK = """\
import json, sys, importlib.metadata as md
import covalent, torch, torchvision
import bench, bench.adapters, bench.run.runner, bench.workloads.pertask
bench.adapters.current().check()
print(json.dumps({"covalent": md.version("covalent"), "covalent_file": covalent.__file__,
                  "torch": md.version("torch"), "torchvision": md.version("torchvision"),
                  "bench_file": bench.__file__, "prefix": sys.prefix}))
"""


class EnvironmentBuildError(RuntimeError):
    """An environment could not be built: a one-line reason, then the install log's tail."""

    def __init__(self, reason: str, log_path: Path | None = None, tail: str = "") -> None:
        text = reason if not tail else f"{reason}\n--- last lines of {log_path} ---\n{tail}"
        super().__init__(text)
        self.reason = reason
        self.log_path = log_path


@dataclass(frozen=True)
class Environment:
    """A named Covalent to measure: a pip requirement and environment variables for its
    server and client."""

    name: str
    requirement: str = DEFAULT_REQUIREMENT
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(
                f"environment name {self.name!r}: use letters, digits, '.', '_', '+', '-' "
                f"(up to 64, starting with a letter or digit)"
            )
        if not self.requirement.strip():
            raise ValueError(f"environment {self.name!r}: the requirement is empty")
        bad = [k for k, v in self.env.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise ValueError(f"environment {self.name!r}: env values must be strings: {bad}")


@dataclass(frozen=True)
class BuiltEnvironment:
    """An environment ready to run: its interpreter and what it holds."""

    environment: Environment
    path: Path  # the cache directory: venv/, install.log, ready.json
    python: str  # the environment's interpreter
    covalent_version: str
    build_s: float  # this call: the whole build, or the cache look-up
    cached: bool  # True: reused from an earlier build

    @property
    def name(self) -> str:
        return self.environment.name

    @property
    def env(self) -> dict[str, str]:
        """The environment variables its server and client run with (beside ours)."""
        return dict(self.environment.env)

    @property
    def log_path(self) -> Path:
        return self.path / LOG_NAME


def cache_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Where environments are cached: `root`, else $COVALENT_BENCH_ENV_CACHE, else
    ~/.cache/covalent-bench/envs."""
    if root is not None:
        return Path(root).expanduser().resolve()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return Path.home() / ".cache" / "covalent-bench" / "envs"


def build(
    environment: Environment,
    cache_root: str | os.PathLike[str] | None = None,
    installer: str | None = None,
) -> BuiltEnvironment:
    """The environment, from the cache if a finished build of it is there, else built now.

    `installer`: "uv" or "pip" (None: uv if there is one, else pip). Raises
    EnvironmentBuildError with the reason and the install log's tail; that log stays in the
    cache directory until the next attempt."""
    start = time.perf_counter()
    root = _resolve_root(cache_root)
    root.mkdir(parents=True, exist_ok=True)
    requirement = _absolute_requirement(environment.requirement)
    key = _key(requirement)
    path = root / _dir_name(requirement, key["hash"])
    with _locked(root / f"{path.name}.lock"):
        ready = _read_marker(path)
        if ready is not None:
            return BuiltEnvironment(environment, path, ready["python"],
                                    ready["covalent_version"], time.perf_counter() - start, True)
        if path.exists():  # an earlier build that did not finish
            shutil.rmtree(path)
        path.mkdir()
        built = _build(environment, requirement, path, installer)
        _write_marker(path, {
            "built_for": environment.name,  # the first of the environments that share it
            "requirement": environment.requirement,
            "python": built["python"],
            "covalent_version": built["covalent"],
            "torch": built["torch"],
            "torchvision": built["torchvision"],
            "installer": built["installer"],
            "build_s": round(time.perf_counter() - start, 2),
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "key": key,
        })
    return BuiltEnvironment(environment, path, built["python"], built["covalent"],
                            time.perf_counter() - start, False)


_resolve_root = cache_root  # `build`'s parameter of that name hides the function


# --- the cache key --------------------------------------------------------------------------


# The requirement "project" stands for the Covalent this checkout pins (pyproject.toml): in
# CI, this commit's Covalent against a reference release, in one session.
PROJECT = "project"


def project_requirement() -> str:
    """The covalent requirement of this checkout's pyproject.toml."""
    import tomllib

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    for dep in tomllib.loads(pyproject.read_text())["project"]["dependencies"]:
        if re.match(r"covalent\b", dep.strip()):
            return dep.split(";")[0].strip()
    raise EnvironmentBuildError(f"{pyproject} pins no covalent requirement")


def _absolute_requirement(requirement: str) -> str:
    """A requirement that is a local path, made absolute (the cache outlives the cwd);
    "project": this checkout's own covalent requirement."""
    text = requirement.strip()
    if text == PROJECT:
        return project_requirement()
    candidate = Path(text).expanduser()
    if (text.startswith((".", "/", "~")) or os.sep in text) and candidate.exists():
        return str(candidate.resolve())
    return text


def _dir_name(requirement: str, key_hash: str) -> str:
    """The cache directory of a build: the requirement, readable (a path's or URL's last
    part), then the key's hash."""
    stem = requirement.rstrip("/").rsplit("/", 1)[-1]
    return f"{re.sub(r'[^A-Za-z0-9._+]+', '-', stem).strip('-')[:48] or 'covalent'}-{key_hash}"


def _key(requirement: str) -> dict[str, Any]:
    """What a build depends on, and its hash."""
    parts: dict[str, Any] = {
        "build_version": BUILD_VERSION,
        "requirement": requirement,
        "source": _source_state(requirement),
        "python": sys.version,
        "base_python": os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
        "torch": _version("torch"),
        "torchvision": _version("torchvision"),
        "main_site": _main_site_dirs(),
        "checkout": str(REPO_ROOT),
    }
    blob = json.dumps(parts, sort_keys=True).encode()
    return {**parts, "hash": hashlib.sha256(blob).hexdigest()[:12]}


def _source_state(requirement: str) -> str:
    """For a local directory: its git commit and a digest of its uncommitted changes, so an
    edited checkout is built again ("" for anything else; "no-git" if it is no repository)."""
    path = Path(requirement)
    if not path.is_dir():
        return ""
    try:
        head = _git(path, "rev-parse", "HEAD").strip()
        changes = _git(path, "status", "--porcelain", "--untracked-files=all")
        diff = _git(path, "diff", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return "no-git"
    return f"{head}+{hashlib.sha256((changes + diff).encode()).hexdigest()[:12]}"


def _git(path: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True,
                          check=True, timeout=60).stdout


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _main_site_dirs() -> list[str]:
    """The main environment's site-packages (where torch and torchvision are), in order."""
    dirs: list[str] = []
    for name in ("torch", "torchvision"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            dirs.append(str(Path(spec.origin).resolve().parents[1]))
    paths = sysconfig.get_paths()
    dirs += [paths["purelib"], paths["platlib"]]
    return list(dict.fromkeys(os.path.realpath(d) for d in dirs))


# --- the marker -----------------------------------------------------------------------------


def _read_marker(path: Path) -> dict[str, Any] | None:
    """The finished build's record, or None if there is none (or it is unusable)."""
    try:
        ready = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(ready, dict) or not {"python", "covalent_version"} <= set(ready):
        return None
    if not os.access(ready["python"], os.X_OK):  # the base interpreter it links to is gone
        return None
    return ready


def _write_marker(path: Path, content: dict[str, Any]) -> None:
    tmp = path / f".{MARKER}.tmp"
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(tmp, path / MARKER)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- building -------------------------------------------------------------------------------


def _uv() -> str | None:
    with contextlib.suppress(ImportError, FileNotFoundError):
        from uv import find_uv_bin  # the `uv` package of this environment

        return str(find_uv_bin())
    return shutil.which("uv")


class _Log:
    """install.log: every command and its output; the error message quotes its tail."""

    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name = path, name

    def run(self, cmd: list[str], what: str, timeout: float = INSTALL_TIMEOUT_S) -> str:
        """Run `cmd`, its output appended to the log; EnvironmentBuildError if it fails."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "UV_PYTHON")}
        with open(self.path, "a") as log:
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            try:
                done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                                      text=True, timeout=timeout, env=env, cwd=self.path.parent)
            except subprocess.TimeoutExpired:
                log.write(f"(timed out after {timeout:g} s)\n")
                self.fail(f"{what} did not finish within {timeout:g} s")
            except OSError as exc:
                log.write(f"({exc})\n")
                self.fail(f"{what}: cannot run {cmd[0]}: {exc.strerror}")
            log.write(done.stdout + done.stderr + f"(exit {done.returncode})\n")
        if done.returncode != 0:
            self.fail(f"{what} failed ({Path(cmd[0]).name} exited with {done.returncode})")
        return done.stdout

    def fail(self, reason: str) -> None:
        raise EnvironmentBuildError(f"environment {self.name!r}: {reason}", self.path,
                                    self.tail())

    def tail(self) -> str:
        try:
            lines = self.path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-_TAIL_LINES:])


def _build(environment: Environment, requirement: str, path: Path,
           installer: str | None) -> dict[str, Any]:
    log = _Log(path / LOG_NAME, environment.name)
    venv = path / VENV_DIR
    uv = _uv() if installer in (None, "uv") else None
    if installer == "uv" and uv is None:
        log.fail("installer 'uv' asked for, but no uv is installed (pip install uv)")
    if installer not in (None, "uv", "pip"):
        raise ValueError(f"installer must be 'uv' or 'pip', got {installer!r}")
    python = str(venv / "bin" / "python")
    if uv is not None:
        log.run([uv, "venv", "--python", sys.executable, str(venv)], "creating the venv")

        def install(*args: str, what: str) -> None:
            log.run([uv, "pip", "install", "--python", python, *args], what)
    else:
        log.run([sys.executable, "-m", "venv", str(venv)], "creating the venv")

        def install(*args: str, what: str) -> None:
            log.run([python, "-m", "pip", "install", "--disable-pip-version-check", *args],
                    what)

    pinned = _family_pins(requirement)
    install(requirement, *PINS, *pinned, *MEASURE_DEPS, what=f"installing {requirement!r}")
    version = log.run([python, "-c", "import importlib.metadata as m; "
                                     "print(m.version('covalent'))"],
                      "reading the installed covalent version", CHECK_TIMEOUT_S).strip()
    # The family is learnt only now for a path, a range ...: its pins, if they are new.
    missing = [pin for pin in adapter_for(version).pins if pin not in pinned]
    if missing:
        install(*missing, what=f"pinning {', '.join(missing)} for covalent {version}")
    install("--no-deps", "-e", str(REPO_ROOT), what=f"installing this checkout ({REPO_ROOT})")
    site_dir = log.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       "finding the venv's site-packages", CHECK_TIMEOUT_S).strip()
    (Path(site_dir) / MAIN_PTH).write_text("\n".join(_main_site_dirs()) + "\n")

    out = log.run([python, "-c", _CHECK], "checking the environment's imports", CHECK_TIMEOUT_S)
    try:
        found = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        log.fail("checking the environment's imports printed no result")
    problems = []
    if not Path(found["covalent_file"]).resolve().is_relative_to(venv.resolve()):
        problems.append(f"covalent comes from {found['covalent_file']}, not the environment")
    if not Path(found["bench_file"]).resolve().is_relative_to(REPO_ROOT):
        problems.append(f"bench comes from {found['bench_file']}, not {REPO_ROOT}")
    for dist in ("torch", "torchvision"):
        if found[dist] != _version(dist):
            problems.append(f"{dist} is {found[dist]}, the main environment's {_version(dist)}")
    if problems:
        log.fail("; ".join(problems))
    return {"python": python, "covalent": found["covalent"], "torch": found["torch"],
            "torchvision": found["torchvision"], "installer": "uv" if uv else "pip"}


def _family_pins(requirement: str) -> tuple[str, ...]:
    """The pins of the release family of `covalent==X` (none for any other requirement, or
    for an X that is no version: pip says what is wrong with it)."""
    exact = _EXACT_COVALENT.fullmatch(requirement)
    if exact is None:
        return ()
    try:
        return adapter_for(exact.group(1)).pins
    except ValueError:
        return ()
