"""The one module on Covalent's private API, shared by every supported release family.

Everything the harness needs from Covalent beyond `ct.dispatch` / `ct.get_result` goes
through here: dispatching a lattice with its tasks probed (without editing them), running
a lattice as plain Python with the same probes, status names, the result manager and its
manifest (serialized sizes), node errors, graph walking and the client's dispatch cache.
What differs between releases is declared in the family modules beside it
(bench.adapters.covalent_0_XXX); a release that changes one of these functions gets a branch
here on its family (`bench.adapters.current()`), with a comment naming the releases.

Checked against covalent 0.232.0.post1, 0.238.0 and 0.240.0.
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cloudpickle
import covalent as ct
import networkx as nx
import requests
from covalent._dispatcher_plugins import local as _local_dispatcher
from covalent._results_manager.results_manager import ResultManager
from covalent._shared_files.context_managers import active_lattice_manager
from covalent._workflow.electron import Electron, _build_sublattice_graph
from covalent._workflow.lattice import Lattice
from covalent._workflow.transport import encode_metadata
from covalent._workflow.transportable_object import TransportableObject

__all__ = [
    "SERVER_EXECUTORS",
    "TERMINAL",
    "GraphCensus",
    "GraphNode",
    "cancel",
    "dispatch",
    "epoch",
    "executor_for",
    "fetch_result",
    "graph_nodes",
    "is_lattice",
    "node_runs",
    "output_sizes",
    "graph_census",
    "pickle_by_value",
    "run_plain",
    "status",
    "status_name",
    "stock_wait",
    "swap_dispatch_cache_dir",
    "task_errors",
]

TaskWrapper = Callable[[Callable[..., Any]], Callable[..., Any]]

# The server's own executors; an external Dask cluster is named by its scheduler address.
SERVER_EXECUTORS = ("local", "dask")
DASK_SCHEME = "tcp://"
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "POSTPROCESSING_FAILED"})
SUBLATTICE_PREFIX = ":sublattice:"


def is_lattice(obj: Any) -> bool:
    return isinstance(obj, Lattice)


def status_name(value: Any) -> str:
    """'COMPLETED', 'FAILED', ...: Covalent reports a Status or a StatusEnum depending on path."""
    return str(value).removeprefix("StatusEnum.")


def executor_for(executor: Any, cache_dir: str = "") -> Any:
    """'local' or 'dask' (the server's own), 'tcp://host:port' (that Dask scheduler, its
    task files staged in `cache_dir`: "" for Covalent's default), or a ready Covalent
    executor object, passed through."""
    if not isinstance(executor, str):
        return executor
    if executor in SERVER_EXECUTORS:
        return executor
    if executor.startswith(DASK_SCHEME) and executor.removeprefix(DASK_SCHEME):
        return ct.executor.DaskExecutor(scheduler_address=executor, cache_dir=cache_dir)
    raise ValueError(
        f"executor must be one of {', '.join(SERVER_EXECUTORS)} or a Dask scheduler address "
        f"{DASK_SCHEME}host:port, got {executor!r}"
    )


def epoch(moment: datetime | None) -> float | None:
    """A server timestamp as seconds since the epoch (Covalent stores UTC, sometimes naive)."""
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def pickle_by_value(module: Any) -> None:
    """Ship a module's functions by value: the server and workers cannot import a file only
    the client sees (cloudpickle pickles module functions by reference otherwise)."""
    cloudpickle.register_pickle_by_value(module)


def lattice_function(lattice: Lattice) -> Callable[..., Any]:
    """The plain function a lattice wraps."""
    return lattice.workflow_function.get_deserialized()


# --- every HTTP call to the server gets a timeout ---------------------------------------------
# Covalent's client calls requests without one: a server whose process died while a forked
# child keeps its port open would hold the client forever. The timeout applies to calls
# that pass none, in this process, set per thread by `http_timeout`.
CONNECT_TIMEOUT_S = 5.0
DEFAULT_READ_TIMEOUT_S = 120.0  # uploads and downloads of large assets
STATUS_READ_TIMEOUT_S = 10.0  # a status poll answers in milliseconds on a live server
_timeouts = threading.local()
_request = requests.Session.request


def _request_with_timeout(self: requests.Session, method: str, url: str, **kwargs: Any) -> Any:
    if kwargs.get("timeout") is None:
        kwargs["timeout"] = (CONNECT_TIMEOUT_S,
                             getattr(_timeouts, "read_s", DEFAULT_READ_TIMEOUT_S))
    return _request(self, method, url, **kwargs)


requests.Session.request = _request_with_timeout  # type: ignore[method-assign]


@contextlib.contextmanager
def http_timeout(read_s: float) -> Iterator[None]:
    """Calls made by this thread inside wait at most `read_s` for an answer."""
    previous = getattr(_timeouts, "read_s", DEFAULT_READ_TIMEOUT_S)
    _timeouts.read_s = read_s
    try:
        yield
    finally:
        _timeouts.read_s = previous


# --- building and probing graphs ------------------------------------------------------------


@contextlib.contextmanager
def _electron_calls(wrap: TaskWrapper | None,
                    run_sublattice: Callable[[Lattice, tuple, dict], Any] | None = None
                    ) -> Iterator[None]:
    """While active, electrons called outside a graph build run `wrap(fn)` (plain runs), and
    electrons called during a build get their metadata back afterwards. A sublattice called
    plain is run by `run_sublattice(sublattice, args, kwargs)`, which returns its value.

    Covalent writes the lattice's defaults (executor ...) into a module-level electron when
    a graph is built, so the next lattice would inherit the previous one's executor."""
    original = Electron.__call__
    inside = threading.local()  # within a probed task: its own electron calls are its body

    def call(self: Electron, *args: Any, **kwargs: Any) -> Any:
        if active_lattice_manager.get_active_lattice() is None:
            fn = self.function
            if isinstance(fn, Lattice) and run_sublattice is not None:
                return run_sublattice(fn, args, kwargs)
            # A sublattice: its electrons are probed. An electron called inside a task (the
            # tutorial's train_model calls train_over_one_epoch) is part of that task, as it
            # is on Covalent, where it runs as a plain call inside the task's process.
            if wrap is None or isinstance(fn, Lattice) or getattr(inside, "task", False):
                return fn(*args, **kwargs)
            inside.task = True
            try:
                return wrap(fn)(*args, **kwargs)
            finally:
                inside.task = False
        saved = copy.deepcopy(self.metadata)
        try:
            return original(self, *args, **kwargs)
        finally:
            self.metadata = saved

    Electron.__call__ = call  # type: ignore[method-assign]
    try:
        yield
    finally:
        Electron.__call__ = original  # type: ignore[method-assign]


class _ProbedLattice(Lattice):
    """A lattice whose graph, once built, has every task's function wrapped by `_bench_wrap`.

    A sublattice's build node gets a wrapper that makes the sublattice a _ProbedLattice
    too, so the tasks of the sub-dispatch it submits from the worker are probed as well."""

    _bench_wrap: TaskWrapper | None = None

    def build_graph(self, *args: Any, **kwargs: Any) -> None:
        with _electron_calls(None):
            super().build_graph(*args, **kwargs)
        wrap = self._bench_wrap
        if wrap is None:
            return
        graph = self.transport_graph
        for node_id in graph._graph.nodes:
            name = graph.get_node_value(node_id, "name")
            if _kind(name) not in ("task", "sublattice"):  # generated: not the user's work
                continue
            function = graph.get_node_value(node_id, "function")
            if function is None:
                continue
            fn = function.get_deserialized()
            if fn is _build_sublattice_graph:
                probed: Callable[..., Any] = _SublatticeBuild(wrap)
            else:
                probed = wrap(fn)
            graph.set_node_value(node_id, "function", TransportableObject(probed))


class _SublatticeBuild:
    """The sublattice build task, with the sublattice's own tasks probed by `wrap`."""

    __name__ = _build_sublattice_graph.__name__

    def __init__(self, wrap: TaskWrapper) -> None:
        self.wrap = wrap

    def __call__(self, sub: Lattice, *args: Any, **kwargs: Any) -> Any:
        return _build_sublattice_graph(_probed(sub, self.wrap), *args, **kwargs)


def _probed(lattice: Lattice, wrap: TaskWrapper | None, executor: Any = None) -> Lattice:
    probed = copy.deepcopy(lattice)
    probed.__class__ = _ProbedLattice
    # Pickled again now: a module registered by value after the lattice was made (at import)
    # must travel by value in the workflow function too.
    probed.workflow_function = TransportableObject(lattice_function(lattice))
    probed._bench_wrap = wrap
    if executor is not None:
        # The default for tasks that name no executor of their own, and for the workflow.
        target = executor_for(executor)
        probed.metadata.update(encode_metadata({"executor": target,
                                                "workflow_executor": target}))
    return probed


def dispatch(
    lattice: Lattice,
    executor: Any,
    address: str,
    args: tuple = (),
    kwargs: dict | None = None,
    wrap: TaskWrapper | None = None,
) -> str:
    """Build, upload and start `lattice(*args, **kwargs)` on the server at `address`, its
    tasks (and sublattices' tasks) wrapped by `wrap`; returns the dispatch id."""
    probed = _probed(lattice, wrap, executor)
    return ct.dispatch(probed, dispatcher_addr=address)(*args, **(kwargs or {}))


def run_plain(
    lattice: Lattice, args: tuple = (), kwargs: dict | None = None,
    wrap: TaskWrapper | None = None, census: GraphCensus | None = None,
) -> Any:
    """The lattice's own function called directly, its electrons as plain calls (as Covalent
    itself allows), each task wrapped by `wrap`. With `census`, the run is also the one the
    graph's census is read from (GraphCensus: it keeps references during the run and does
    its work after it)."""
    fn = lattice_function(lattice)
    kwargs = kwargs or {}
    if census is None:
        with _electron_calls(wrap):
            return fn(*args, **kwargs)
    with _electron_calls(census.counting(wrap), census.run_sublattice):
        return census.run(lattice, args, kwargs, lambda: fn(*args, **kwargs))


class GraphNode(dict):
    """One node of a built graph: id, name and kind (task, parameter, list, dict, unpack,
    postprocess, sublattice)."""


def _kind(name: str) -> str:
    for prefix, kind in ((":parameter:", "parameter"), (":electron_list:", "list"),
                         (":electron_dict:", "dict"), (":postprocess:", "postprocess"),
                         (SUBLATTICE_PREFIX, "sublattice")):
        if name.startswith(prefix):
            return kind
    return "unpack" if name.endswith("]") and "()[" in name else "task"


def graph_nodes(lattice: Lattice, *args: Any, **kwargs: Any) -> list[GraphNode]:
    """The nodes of the graph `lattice(*args, **kwargs)` builds on the client (no server)."""
    built = _probed(lattice, None)
    built.build_graph(*args, **kwargs)
    graph = built.transport_graph._graph
    return [GraphNode(id=n, name=d["name"], kind=_kind(d["name"]))
            for n, d in graph.nodes(data=True)]


def transport_graph(lattice: Lattice, *args: Any, **kwargs: Any) -> Any:
    """The networkx graph `lattice(*args, **kwargs)` builds on the client (no server)."""
    built = _probed(lattice, None)
    built.build_graph(*args, **kwargs)
    return built.transport_graph.get_internal_graph_copy()


class _LatticeRun:
    """One lattice's run within a plain run: what it was called with, its task and
    sublattice calls' values in call order (`tasks`: which of them are tasks) and its
    result."""

    def __init__(self, lattice: Lattice, args: tuple, kwargs: dict) -> None:
        self.lattice, self.args, self.kwargs = lattice, args, kwargs
        self.calls: list[Any] = []
        self.tasks: list[bool] = []
        self.returned: Any = None


class GraphCensus:
    """What Covalent will run for a lattice, read from one plain run of it (run_plain's
    `census`): the graphs it builds (the lattice's and every sublattice's, each built from
    the arguments the plain run passed it): their nodes and edges, the tasks called, the
    sublattices, the serialized bytes of every task's output (`output_bytes`), of every
    parameter node's value (`input_bytes`) and of the outputs of the nodes Covalent adds
    (`generated_bytes`: see `_generated_bytes`), and the depth: the most nodes that must run
    one after another (the longest path through the executed nodes, parameters left out, a
    sublattice node weighing its own graph's depth).

    During the run it only keeps a reference to each value (one list append a call, so the
    run can be a measured one); graphs are built and values serialized in census(), after
    the run's clock. A value a later task mutates in place is sized as it ends up (on
    Covalent each node's output is serialized when made)."""

    def __init__(self) -> None:
        self._runs: list[_LatticeRun] = []  # in call order: a sublattice after its parent
        self._running: list[_LatticeRun] = []

    def run(self, lattice: Lattice, args: tuple, kwargs: dict, run_it: Callable[[], Any]
            ) -> Any:
        """Run `lattice` (its function, by `run_it`), recording it."""
        run = _LatticeRun(lattice, args, kwargs)
        self._runs.append(run)
        self._running.append(run)
        try:
            run.returned = run_it()
        finally:
            self._running.pop()
        return run.returned

    def run_sublattice(self, sub: Lattice, args: tuple, kwargs: dict) -> Any:
        """A sublattice called plain: run it as a lattice of its own, a call of its parent."""
        parent = self._running[-1]
        value = self.run(sub, args, kwargs, lambda: sub(*args, **kwargs))
        parent.calls.append(value)
        parent.tasks.append(False)
        return value

    def counting(self, wrap: TaskWrapper | None) -> TaskWrapper:
        """The task wrapper of the run: `wrap` (the probes, if any) and the recording."""
        def wrapper(fn: Callable[..., Any]) -> Callable[..., Any]:
            inner = wrap(fn) if wrap is not None else fn

            def counted(*a: Any, **k: Any) -> Any:
                value = inner(*a, **k)
                run = self._running[-1]
                run.calls.append(value)
                run.tasks.append(True)
                return value
            return counted
        return wrapper

    def census(self) -> dict[str, int]:
        """The census of the recorded run (CENSUS_KEYS of bench.workloads.base)."""
        counts = dict.fromkeys(("nodes", "edges", "tasks", "sublattices", "output_bytes",
                                "input_bytes", "generated_bytes"), 0)
        graphs: list[tuple[str, Any]] = []  # (the lattice's name, its graph), in build order
        for run in self._runs:
            graph = transport_graph(run.lattice, *run.args, **run.kwargs)
            graphs.append((run.lattice.__name__, graph))
            parameters = _parameter_sizes(graph)
            sizes = [_size(value) for value in run.calls]
            counts["nodes"] += graph.number_of_nodes()
            counts["edges"] += graph.number_of_edges()
            counts["input_bytes"] += sum(parameters.values())
            counts["tasks"] += sum(run.tasks)
            counts["output_bytes"] += sum(s for s, task in zip(sizes, run.tasks, strict=True)
                                          if task)
            counts["generated_bytes"] += _generated_bytes(graph, parameters, sizes,
                                                          _size(run.returned))
        counts["sublattices"] = len(self._runs) - 1
        return {**counts, "depth": _depth(graphs)}


def graph_census(lattice: Lattice, args: tuple = (), kwargs: dict | None = None
                 ) -> dict[str, int]:
    """The GraphCensus of `lattice(*args, **kwargs)`, from a plain run of its own.

    Where the plain run fails (a task that needs the server's machine, say), the census is
    estimated from the lattice's own graph: its nodes, edges and parameters as built, its
    task and sublattice nodes as the tasks and sublattices, no output bytes, and
    `estimated` = 1 with the reason in `estimate_reason`."""
    kwargs = kwargs or {}
    census = GraphCensus()
    try:
        run_plain(lattice, args, kwargs, census=census)
    except Exception as exc:  # what the graph alone says
        graph = transport_graph(lattice, *args, **kwargs)
        kinds = [_kind(data["name"]) for _, data in graph.nodes(data=True)]
        return {"nodes": graph.number_of_nodes(), "edges": graph.number_of_edges(),
                "tasks": kinds.count("task"), "sublattices": kinds.count("sublattice"),
                "output_bytes": 0, "input_bytes": sum(_parameter_sizes(graph).values()),
                "generated_bytes": 0, "depth": _depth([(lattice.__name__, graph)]),
                "estimated": 1,
                "estimate_reason": f"the plain run failed: {type(exc).__name__}: {exc}"[:300]}
    return census.census()


def _parameter_sizes(graph: Any) -> dict[Any, int]:
    """The serialized size of each parameter node's value."""
    return {node: len(data["value"].serialize()) if "value" in data else 0
            for node, data in graph.nodes(data=True) if _kind(data["name"]) == "parameter"}


def _size(value: Any) -> int:
    """The serialized bytes Covalent stores for a node's output."""
    return len(TransportableObject(value).serialize())


def _generated_bytes(graph: Any, parameter_sizes: dict[Any, int], call_sizes: list[int],
                     result: int) -> int:
    """The output bytes of the nodes Covalent adds to a graph: an argument that is a list,
    tuple, set or dict becomes a collection node whose output (the collection of its
    parents' outputs) is stored again, as is each item unpacked from a task's output and
    the postprocess node's (the lattice's result); a sublattice's result is stored in its
    parent too. `parameter_sizes`: the graph's parameter nodes', read once by the census;
    `call_sizes`: the plain run's task and sublattice calls in call order, which is the
    order their nodes were built in. Where the two differ in number (a lattice whose
    calls depend on values), the collections are sized from the parameters alone."""
    order = sorted(n for n, data in graph.nodes(data=True)
                   if _kind(data["name"]) in ("task", "sublattice"))
    matched = len(order) == len(call_sizes)
    size: dict[Any, float] = {**parameter_sizes,
                              **(dict(zip(order, call_sizes, strict=True)) if matched else {})}
    generated = 0.0
    for node in nx.topological_sort(graph):
        kind = _kind(graph.nodes[node]["name"])
        if kind in ("list", "dict"):  # the collection of its parents' outputs
            size[node] = sum(size.get(p, 0) for p, _ in graph.in_edges(node))
        elif kind == "unpack":  # an item of its parent's output: an equal share of it
            parent = next((p for p in graph.predecessors(node)
                           if _kind(graph.nodes[p]["name"]) != "parameter"), None)  # not the index
            items = sum(_kind(graph.nodes[c]["name"]) == "unpack"
                        for c in graph.successors(parent)) if parent is not None else 1
            size[node] = size.get(parent, 0) / max(items, 1)
        elif kind == "postprocess":
            size[node] = result
        if kind in ("list", "dict", "unpack", "postprocess", "sublattice"):
            generated += size.get(node, 0)
    return int(generated)


def _depth(graphs: list[tuple[str, Any]]) -> int:
    """The first graph's longest path in executed nodes (parameters weigh 0, other nodes 1,
    a sublattice node the deepest graph built for a sublattice of its name, else 1).
    `graphs` in build order: a sublattice's graph comes after its parent's, so walking them
    backwards finds every sublattice's depth before the graph that runs it."""
    deepest: dict[str, int] = {}
    depth = 0
    for name, graph in reversed(graphs):
        longest: dict[Any, int] = {}
        for node in nx.topological_sort(graph):
            label = graph.nodes[node]["name"]
            kind = _kind(label)
            weight = (0 if kind == "parameter" else
                      deepest.get(label[len(SUBLATTICE_PREFIX):], 1) if kind == "sublattice"
                      else 1)
            longest[node] = weight + max((longest[p] for p in graph.predecessors(node)),
                                         default=0)
        depth = max(longest.values(), default=0)
        deepest[name] = max(deepest.get(name, 0), depth)
    return depth


# --- following a dispatch -------------------------------------------------------------------


def status(dispatch_id: str, address: str) -> str:
    with http_timeout(STATUS_READ_TIMEOUT_S):
        reply = ct.get_result(dispatch_id, status_only=True, dispatcher_addr=address)
    return status_name(reply["status"])


def cancel(dispatch_id: str, address: str) -> None:
    with http_timeout(STATUS_READ_TIMEOUT_S):
        ct.cancel(dispatch_id, dispatcher_addr=address)


def fetch_result(dispatch_id: str, address: str, results_dir: str) -> Any:
    """The finished Result: the workflow's output and node metadata, no node outputs."""
    return ct.get_result(dispatch_id, dispatcher_addr=address, results_dir=results_dir,
                         intermediate_outputs=False)


def stock_wait(dispatch_id: str, address: str, under: str | None = None) -> None:
    """What `ct.get_result(wait=True)` does before downloading: poll, sleep 1 s, repeat.
    `under`: where its scratch directory goes (the session's, which its watchdog removes
    even after kill -9)."""
    with tempfile.TemporaryDirectory(prefix="covalent-bench-stock-", dir=under) as results_dir:
        ResultManager.from_dispatch_id(dispatch_id, results_dir, wait=True,
                                       dispatcher_addr=address)


def output_sizes(dispatch_id: str, address: str, results_dir: str) -> dict[int, int]:
    """Serialized bytes of each node's output, from the dispatch manifest."""
    manager = ct.get_result_manager(dispatch_id, results_dir, dispatcher_addr=address)
    nodes = manager._manifest["lattice"]["transport_graph"]["nodes"]
    return {node["id"]: node["assets"]["output"].get("size") or 0 for node in nodes}


def node_runs(result: Any) -> list[dict[str, Any]]:
    """Each executed node of a Result: id, name, kind, status, start and end (epoch s),
    and the sub-dispatch id of a sublattice."""
    rows = []
    for node in result.get_all_node_results():
        rows.append({
            "id": node["node_id"], "name": node["node_name"], "kind": _kind(node["node_name"]),
            "status": status_name(node["status"]), "start": epoch(node["start_time"]),
            "end": epoch(node["end_time"]), "sub_dispatch_id": node.get("sub_dispatch_id"),
        })
    return rows


def task_errors(result: Any, address: str | None, results_dir: str | None) -> list[str]:
    """'name: error' for each failed task; errors are assets, fetched only when needed."""
    failed = [n for n in result.get_all_node_results() if status_name(n["status"]) == "FAILED"]
    manager = None
    if address and failed:
        manager = ct.get_result_manager(result.dispatch_id, results_dir, dispatcher_addr=address)
    lines = []
    for node in failed:
        # The local and dask executors leave the traceback in stderr, not in error.
        error = node.get("error") or node.get("stderr")
        if not error and manager is not None:
            graph = manager.result_object.lattice.transport_graph
            for key in ("error", "stderr"):
                manager.download_node_asset(node["node_id"], key)
                manager.load_node_asset(node["node_id"], key)
                error = error or graph.get_node_value(node["node_id"], key)
        last = (str(error or "").strip().splitlines() or ["no error text"])[-1]
        lines.append(f"{node['node_name']}: {last}")
    return lines


def result_value(result: Any) -> Any:
    return result.result


def result_times(result: Any) -> tuple[float | None, float | None]:
    """The server's RUNNING -> terminal span of a Result, as epoch seconds."""
    return epoch(result.start_time), epoch(result.end_time)


def result_error(result: Any) -> str:
    return str(result.error or "")


def electron_function(obj: Any) -> Callable[..., Any] | None:
    """The plain function behind `ct.electron(fn)` (a wrapper carrying its Electron), or None
    for anything else."""
    electron = getattr(obj, "electron_object", None)
    return getattr(electron, "function", None) if electron is not None else None


def reserialize(lattice: Lattice, fn: Callable[..., Any] | None = None) -> None:
    """Pickle the lattice's function (or `fn`, the same function unpickled) again: a lattice
    pickles it when it is made, so a module registered by value (pickle_by_value) after that
    is still referenced by name in it."""
    lattice.workflow_function = TransportableObject.make_transportable(
        fn if fn is not None else lattice_function(lattice))


def swap_dispatch_cache_dir(path: Path) -> Path:
    """Have this process's client write its dispatch manifests into `path`; returns the
    directory it used so far. Covalent reads the module attribute anew at every dispatch
    (it set it once, at `import covalent`, from the client's covalent.conf)."""
    previous = Path(_local_dispatcher.dispatch_cache_dir)
    _local_dispatcher.dispatch_cache_dir = path
    return previous
