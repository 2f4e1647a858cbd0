"""What one Covalent release family needs from the harness, as data (no covalent import).

The defaults are what the families share; each family's module states what differs for
its releases.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["CACHE_DB_NAME", "CLI_MODULE", "CLI_SNIPPET", "Adapter", "DispatchList"]

# The CLI as run by a given interpreter (`python -c CLI_SNIPPET start ...`), so the server it
# launches (`sys.executable app.py`) runs in that interpreter's environment.
CLI_MODULE = "covalent_dispatcher._cli.cli"
CLI_SNIPPET = f"import sys; from {CLI_MODULE} import cli; sys.exit(cli(prog_name='covalent'))"
CACHE_DB_NAME = "dispatcher_cache.sqlite"  # a family's cache database, beside the main one


@dataclass(frozen=True)
class DispatchList:
    """A cheap read-only request that a live server answers: its dispatch list."""

    path: str
    params: tuple[tuple[str, str | int | bool], ...]
    key: str  # in the JSON answer


V2_DISPATCHES = DispatchList("/api/v2/dispatches", (("count", 1), ("status_only", True)),
                             "dispatches")


@dataclass(frozen=True)
class Adapter:
    """One release family: the releases it serves and what they need."""

    name: str  # the module's name, as recorded: "covalent_0_240"
    since: str  # the first release it serves ("" for the oldest family)
    releases: str  # for people: "0.239 and newer"
    checked: str  # the release it was checked against
    # Installed beside the requirement and the pins every environment gets.
    pins: tuple[str, ...] = ()
    # Directories the server needs but does not create: (variable of its environment,
    # subdirectory of that variable's directory). The dask executor (0.232 to 0.240 at least)
    # writes its task files into $XDG_CACHE_HOME/covalent without creating it, and before
    # 0.240 the local executor does too: the task fails (dask) or hangs RUNNING forever
    # (local) otherwise.
    server_dirs: tuple[tuple[str, str], ...] = (("XDG_CACHE_HOME", "covalent"),)
    # The variable naming the dispatcher's second (cache) database, if the family has one.
    cache_db_var: str = ""
    dispatch_list: DispatchList = V2_DISPATCHES
    # The client writes dispatch manifests into a directory the harness can move.
    client_dispatch_cache_dir: bool = True
    cli_module: str = CLI_MODULE
    cli_snippet: str = CLI_SNIPPET
    note: str = ""  # set when this family stands in for a release it does not know

    def server_env(self, db_dir: Path) -> dict[str, str]:
        """Variables the server needs beside the harness's own, its databases in `db_dir`."""
        if not self.cache_db_var:
            return {}
        return {self.cache_db_var: f"sqlite+pysqlite:///{db_dir / CACHE_DB_NAME}"}

    def check(self) -> None:
        """Import what the harness uses of this Covalent (run inside an environment's
        interpreter, to check its build): the private API and the server's CLI."""
        import importlib

        importlib.import_module("bench.adapters.covalent_api")
        importlib.import_module(self.cli_module)
