"""A digest of a workflow's return value: equal values, equal digests, whatever the process.

Pickles are no digest (their bytes depend on memo order and protocol), so values are walked:
numbers, strings, containers (dicts by sorted key; lists and tuples alike, as Covalent returns
a lattice's tuple as a list), numpy arrays and torch tensors (dtype,
shape and bytes), dataclasses, and objects with a state_dict (torch modules: their weights).
Anything else falls back to its repr without memory addresses, and then to its pickle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import pickle
import re
import sys
from typing import Any

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def digest(value: Any) -> str:
    """sha256 of a canonical encoding of `value`."""
    h = hashlib.sha256()
    _feed(h, value)
    return h.hexdigest()


def _feed(h: Any, value: Any) -> None:  # noqa: C901 - one branch per kind of value
    put = h.update
    if value is None or isinstance(value, bool):
        put(f"{value!r};".encode())
    elif isinstance(value, int):
        put(f"i{value};".encode())
    elif isinstance(value, float):
        put(("fnan;" if math.isnan(value) else f"f{value!r};").encode())
    elif isinstance(value, complex):
        put(f"c{value!r};".encode())
    elif isinstance(value, str):
        put(f"s{len(value)}:".encode() + value.encode() + b";")
    elif isinstance(value, bytes | bytearray):
        put(f"b{len(value)}:".encode() + bytes(value) + b";")
    elif isinstance(value, list | tuple):
        # One kind of sequence: a lattice that returns a tuple gets it back from Covalent as
        # a list (its postprocessing rebuilds containers), and that is the same work.
        put(f"seq{len(value)}[".encode())
        for item in value:
            _feed(h, item)
        put(b"]")
    elif isinstance(value, dict):
        put(f"d{len(value)}{{".encode())
        for key in sorted(value, key=repr):
            _feed(h, key)
            _feed(h, value[key])
        put(b"}")
    elif isinstance(value, set | frozenset):
        _feed(h, sorted(value, key=repr))
    elif _is_array(value):
        array = _as_numpy(value)
        put(f"a{array.dtype.str}{array.shape}:".encode() + array.tobytes() + b";")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        put(f"D{type(value).__qualname__}".encode())
        _feed(h, {f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    elif callable(getattr(value, "state_dict", None)):
        put(f"S{type(value).__qualname__}".encode())
        _feed(h, dict(value.state_dict()))
    else:
        text = _ADDRESS.sub("", repr(value))
        if text != repr(value) or "object>" in text:
            put(b"P" + pickle.dumps(value, protocol=4))
        else:
            put(f"r{type(value).__qualname__}:{text};".encode())


def _is_array(value: Any) -> bool:
    numpy = sys.modules.get("numpy")
    torch = sys.modules.get("torch")
    return bool((numpy and isinstance(value, numpy.ndarray | numpy.generic))
                or (torch and isinstance(value, torch.Tensor)))


def _as_numpy(value: Any) -> Any:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return value.detach().cpu().contiguous().numpy()
    import numpy

    return numpy.ascontiguousarray(value)
