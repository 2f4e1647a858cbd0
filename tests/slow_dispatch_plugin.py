"""A pytest plugin (loaded with `-p slow_dispatch_plugin`, tests/ on PYTHONPATH) that plants
a slower Covalent dispatch path: every dispatch waits SLOW_DISPATCH_S first, on the client,
as a regression in the submit path would. Used to check that the gate catches it."""

from __future__ import annotations

import os
import time
from typing import Any

from bench.adapters import covalent_api

DELAY_S = float(os.environ.get("SLOW_DISPATCH_S", "3"))
_real_dispatch = covalent_api.dispatch


def _slow_dispatch(*args: Any, **kwargs: Any) -> str:
    time.sleep(DELAY_S)
    return _real_dispatch(*args, **kwargs)


covalent_api.dispatch = _slow_dispatch
