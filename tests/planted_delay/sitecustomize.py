"""A planted regression for tests/test_environments_side_by_side.py: with this directory on
PYTHONPATH and PLANTED_DISPATCH_DELAY_S set, every Covalent dispatch from this interpreter
waits that long first, as a slower submit path in a Covalent release would. It patches
covalent's LocalDispatcher.register as the module is imported (an import hook), so nothing
else changes."""

import importlib.abc
import os
import sys
import time

DELAY_S = float(os.environ.get("PLANTED_DISPATCH_DELAY_S", "0") or 0)
TARGET = "covalent._dispatcher_plugins.local"


class _PlantDelay(importlib.abc.MetaPathFinder):
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
            register = module.LocalDispatcher.register

            def slow_register(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
                time.sleep(DELAY_S)
                return register(*args, **kwargs)

            module.LocalDispatcher.register = staticmethod(slow_register)

        spec.loader.exec_module = exec_module
        return spec


if DELAY_S > 0:
    sys.meta_path.insert(0, _PlantDelay())
