"""A planted regression for tests/test_environments_side_by_side.py: with this directory on
PYTHONPATH and PLANTED_SERVER_DELAY_S set, the Covalent server of that environment works that
long longer on every dispatch it registers, as a slower function on a release's server-side
dispatch path would. An import hook wraps covalent_dispatcher's manifest import (run while
the client's submit waits for the server's answer) so that `planted_slow_step` runs first,
busy for that long; nothing else changes. Python loads this module at start in every
process of the environment (the client too, where that module is never imported)."""

import importlib.abc
import os
import sys
import time

DELAY_S = float(os.environ.get("PLANTED_SERVER_DELAY_S", "0") or 0)
TARGET = "covalent_dispatcher._core.data_modules.importer"


def planted_slow_step(seconds: float) -> None:
    """Busy for `seconds` of wall time: a function that works, not one that waits."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class _PlantSlowStep(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # noqa: ANN001, ANN201
        if name != TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        load = spec.loader.exec_module

        def exec_module(module):  # noqa: ANN001, ANN202
            load(module)
            import_manifest = module._import_manifest

            def slow_import_manifest(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
                planted_slow_step(DELAY_S)
                return import_manifest(*args, **kwargs)

            module._import_manifest = slow_import_manifest

        spec.loader.exec_module = exec_module
        return spec


if DELAY_S > 0:
    sys.meta_path.insert(0, _PlantSlowStep())
