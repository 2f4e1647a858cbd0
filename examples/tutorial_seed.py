"""The Covalent MNIST tutorial's own code, as ../shared/seed/mnist-classifier-tutorial.md
gives it: the tutorial's definition cells (imports, NeuralNetwork, data_loader,
get_optimizer, train_over_one_epoch, test, train_model, workflow) and its cell that turns
them into electrons and the lattice, executed verbatim into this module at import time.

    pytest bench --benchmark-only --bench-workload examples.tutorial_seed:workflow \
        --bench-inputs examples.tutorial_seed:inputs

The markdown is found at <repo>/../shared/seed/mnist-classifier-tutorial.md, or wherever
the environment variable SEED_TUTORIAL_MD points. Cells that run or time things, print
results, install packages, or show `...` pseudo-code are left out: only cells made of
imports, class and function definitions, and `name = ct.electron(name)` /
`ct.lattice(...)` assignments are run.

Data: the tutorial's data_loader reads "~/data/mnist/" with download=True, which works
offline once the MNIST files are in ~/data/mnist/MNIST/raw; put them there first with

    python -c "from mnist_core.data import ensure_mnist; ensure_mnist('~/data/mnist')"

(this module does not fetch anything itself). The tutorial's train_model writes model.pth
and optimizer.pth to ~/data/mnist/results/.

Not deterministic between runs: training shuffles its DataLoader (and draws dropout) from
the global torch RNG of whichever process runs the task, which nothing seeds there
(`inputs` seeds only the model's initial weights, in the calling process), so the harness
reports the workload as non-deterministic rather than failing it.
"""

from __future__ import annotations

import ast
import os
import re
import sys
from pathlib import Path
from typing import Any

import cloudpickle

TUTORIAL_ENV = "SEED_TUTORIAL_MD"
DEFAULT_TUTORIAL = Path(__file__).resolve().parents[2] / "shared/seed/mnist-classifier-tutorial.md"

# Names the tutorial's definition cells must define, and what the electron cell makes of them.
TASKS = ("data_loader", "get_optimizer", "train_over_one_epoch", "train_model", "test")
DEFINED = ("NeuralNetwork", *TASKS, "workflow")

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


class SeedTutorialError(RuntimeError):
    """The tutorial markdown is missing or does not hold the code this module expects."""


def tutorial_path() -> Path:
    override = os.environ.get(TUTORIAL_ENV)
    path = Path(override).expanduser().resolve() if override else DEFAULT_TUTORIAL
    if not path.is_file():
        raise SeedTutorialError(
            f"Covalent MNIST tutorial markdown not found at {path}"
            + (f" (from ${TUTORIAL_ENV})" if override else
               f"; put it there (the repo's ../shared/seed/) or point ${TUTORIAL_ENV} at it")
        )
    return path


def _is_definition(node: ast.stmt) -> bool:
    """An import, a def/class, or `name = ct.electron(...)` / `name = ct.lattice(...)`."""
    if isinstance(node, ast.Import | ast.ImportFrom | ast.FunctionDef | ast.ClassDef):
        return True
    return (
        isinstance(node, ast.Assign)
        and all(isinstance(t, ast.Name) for t in node.targets)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Attribute)
        and isinstance(node.value.func.value, ast.Name)
        and node.value.func.value.id == "ct"
        and node.value.func.attr in ("electron", "lattice")
    )


def definition_cells(text: str) -> list[tuple[int, str]]:
    """(first line in the markdown, source) of each ```python cell that only defines things.

    A cell that does not parse (`def data_loader(...): ...` pseudo-code, `!covalent status`),
    is empty or all comments, or runs anything else (timing, dispatching, printing) is left
    out."""
    cells = []
    for match in _FENCE.finditer(text):
        source = match.group(1)
        first_line = text.count("\n", 0, match.start(1)) + 1
        try:
            body = ast.parse(source).body
        except SyntaxError:
            continue
        if body and all(_is_definition(node) for node in body):
            cells.append((first_line, source))
    return cells


def _load(namespace: dict[str, Any]) -> Path:
    """Run the tutorial's definition cells, in order, in `namespace` (this module's globals).

    Each cell is compiled under the markdown's path with its own line numbers, so tracebacks
    (and Covalent's task source view) point into the tutorial."""
    path = tutorial_path()
    text = path.read_text(encoding="utf-8")
    cells = definition_cells(text)
    # The tutorial's `workflow = ct.lattice(workflow, ...)` serializes `workflow` while the
    # name still holds the function, then rebinds the name to the Lattice. Pickled by
    # reference (module + name), the lattice's function would load as the Lattice itself
    # and building its graph would recurse forever. In the tutorial's notebook, __main__ is
    # pickled by value; do the same for this module before running its cells.
    cloudpickle.register_pickle_by_value(sys.modules[namespace["__name__"]])
    for first_line, source in cells:
        # dont_inherit: not this module's `from __future__ import annotations`.
        code = compile("\n" * (first_line - 1) + source, str(path), "exec", dont_inherit=True)
        exec(code, namespace)

    from covalent._workflow.electron import Electron
    from covalent._workflow.lattice import Lattice

    missing = [name for name in DEFINED if name not in namespace]
    # ct.electron(fn) is a wrapper function holding its Electron as `electron_object`.
    wrong = [name for name in TASKS if name in namespace
             and not isinstance(getattr(namespace[name], "electron_object", None), Electron)]
    if "workflow" in namespace and not isinstance(namespace["workflow"], Lattice):
        wrong.append("workflow")
    if missing or wrong:
        raise SeedTutorialError(
            f"{path}: its definition cells ({len(cells)} found) "
            + (f"do not define {', '.join(missing)}" if missing else "")
            + ("; " if missing and wrong else "")
            + (f"leave {', '.join(wrong)} not electron-ized / lattice-ized" if wrong else "")
            + " (is it the Covalent MNIST classifier tutorial?)"
        )
    return path


TUTORIAL_MD = _load(globals())


def inputs(seed: int = 0, **_ignored: Any) -> dict[str, Any]:
    """The tutorial's model argument, fresh for each run: `NeuralNetwork()` after
    `torch.manual_seed(seed)`, so every run starts from the same weights. Called by the
    harness (--bench-inputs) with the workload's parameters, which it ignores."""
    torch.manual_seed(seed)  # noqa: F821 - defined by the tutorial's import cell
    return {"model": NeuralNetwork()}  # noqa: F821 - defined by the tutorial's cell
