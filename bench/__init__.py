"""What does Covalent cost your workflow? The harness: `pytest bench --benchmark-only` from a
terminal, `python -m bench report|gate`, and from Python (a notebook):

    from bench import measure, Session
    s = measure(workflow, model=NeuralNetwork(), executors=["local", "dask"], rounds=6)
"""

from __future__ import annotations

from typing import Any

__all__ = ["BenchError", "Interrupted", "Session", "measure"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `python -m bench.gate` and the pytest plugin need none of it.
    if name in __all__:
        from bench import api

        return getattr(api, name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
