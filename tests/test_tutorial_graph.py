"""The harness's tutorial shape builds the seed tutorial's graph: the same tasks, and no more
nodes of any kind Covalent generates around them. Client side only: no server."""

from __future__ import annotations

import ast
import importlib
import re
import types
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bench.adapters import covalent_api
from mnist_core.config import WorkflowConfig
from mnist_core.model import new_model
from mnist_core.workflow import build_lattice

REPO = Path(__file__).resolve().parents[1]
TUTORIAL_MD = REPO.parent / "shared/seed/mnist-classifier-tutorial.md"
# Kinds of node Covalent generates around the tasks (bench.adapters.covalent_api.graph_nodes).
GENERATED = ("parameter", "list", "dict", "unpack", "postprocess")
TASKS = {"data_loader": 2, "train_model": 1, "test": 1}

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_WANTED = ("NeuralNetwork", "data_loader", "get_optimizer", "train_over_one_epoch", "test",
           "train_model", "workflow")


def _is_definition(node: ast.stmt) -> bool:
    """An import, a def/class, or `name = ct.electron(...)` / `name = ct.lattice(...)`."""
    if isinstance(node, ast.Import | ast.ImportFrom | ast.FunctionDef | ast.ClassDef):
        return True
    return (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute)
            and isinstance(node.value.func.value, ast.Name) and node.value.func.value.id == "ct"
            and node.value.func.attr in ("electron", "lattice"))


def _extracted_tutorial() -> tuple[Any, type]:
    """The tutorial's lattice and NeuralNetwork from its markdown: its ```python cells that
    only define things (imports, NeuralNetwork, the tasks, workflow, and the cell making them
    electrons and the lattice), run in order in a fresh module, which cloudpickle then ships
    by value (it is in no sys.modules), as the tutorial's notebook __main__ would be."""
    if not TUTORIAL_MD.is_file():
        pytest.skip(f"seed tutorial not found at {TUTORIAL_MD}")
    text = TUTORIAL_MD.read_text(encoding="utf-8")
    module = types.ModuleType("seed_tutorial_cells")
    for match in _FENCE.finditer(text):
        try:
            body = ast.parse(match.group(1)).body
        except SyntaxError:  # `def data_loader(...): ...` pseudo-code, `!covalent status`
            continue
        if body and all(_is_definition(node) for node in body):
            exec(compile(match.group(1), str(TUTORIAL_MD), "exec", dont_inherit=True),
                 module.__dict__)
    missing = [name for name in _WANTED if name not in module.__dict__]
    assert not missing, f"{TUTORIAL_MD} defines no {missing}"
    assert covalent_api.is_lattice(module.workflow), "the tutorial's workflow is no lattice"
    return module.workflow, module.NeuralNetwork


def _seed_tutorial(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, type, str]:
    """examples.tutorial_seed (the tutorial's own cells as a module) if there is one, else
    the same cells extracted here; and which of the two it is."""
    if not (REPO / "examples" / "tutorial_seed.py").is_file():
        return (*_extracted_tutorial(), "extracted from the markdown (no examples.tutorial_seed)")
    monkeypatch.syspath_prepend(str(REPO))  # pytest puts tests/, not the repository, on it
    tutorial_seed = importlib.import_module("examples.tutorial_seed")
    return tutorial_seed.workflow, tutorial_seed.NeuralNetwork, "examples.tutorial_seed"


def _counts(nodes: list[dict]) -> tuple[Counter, Counter]:
    """Nodes by kind, and task nodes by name."""
    kinds = Counter(n["kind"] for n in nodes)
    tasks = Counter(n["name"] for n in nodes if n["kind"] == "task")
    return kinds, tasks


@pytest.mark.parametrize("source", ["examples", "markdown"])
def test_tutorial_shape_has_the_seed_tutorials_graph(
    source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if source == "examples":
        workflow, network, source = _seed_tutorial(monkeypatch)
    else:
        workflow, network = _extracted_tutorial()
    seed_kinds, seed_tasks = _counts(covalent_api.graph_nodes(workflow, model=network()))
    config = WorkflowConfig(data_dir="/nonexistent/mnist")  # building reads no data
    assert config.shape == "tutorial" and config.models == 1
    ours_kinds, ours_tasks = _counts(covalent_api.graph_nodes(build_lattice(), new_model(0),
                                                              config))
    message = (f"seed tutorial ({source}): {dict(sorted(seed_kinds.items()))}, tasks "
               f"{dict(sorted(seed_tasks.items()))}; tutorial shape: "
               f"{dict(sorted(ours_kinds.items()))}, tasks {dict(sorted(ours_tasks.items()))}")
    print(message)
    # The same tasks, as many of each: the seed's graph, not a variant of it.
    assert seed_tasks == TASKS, message
    assert ours_tasks == seed_tasks, message
    # Covalent's generated nodes: none that the seed's own graph does not have as well.
    assert set(ours_kinds) <= {"task", *GENERATED}, message
    for kind in GENERATED:
        assert ours_kinds[kind] <= seed_kinds[kind], f"more {kind} nodes: {message}"
