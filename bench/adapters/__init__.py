"""Covalent release families: what depends on the Covalent release, in one package.

`covalent_api` is the private API every supported release shares (dispatching with probes,
plain runs, the result manager, graph walking); it imports covalent. Each `covalent_0_XXX`
module declares one family as data (bench.adapters.family.Adapter): the releases it serves,
its install pins, what its server needs (directories, variables), where its dispatch list
is, its CLI. `adapter_for(version)` picks a version's family, `current()` that of the
covalent this interpreter imports; neither imports covalent.

A release newer (or older) than every release a family was checked against gets the
nearest family, with a note on the adapter (`Adapter.note`, logged once, and recorded with
the environment) saying so. Nothing outside this package compares Covalent versions or
imports covalent's private modules (tests/test_adapters.py checks).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import replace
from importlib import metadata

from packaging.version import InvalidVersion, Version

from bench.adapters import covalent_0_232, covalent_0_238, covalent_0_240
from bench.adapters.family import Adapter, DispatchList

__all__ = ["FAMILIES", "Adapter", "DispatchList", "adapter_for", "current", "dispatch_lists",
           "recorded"]

log = logging.getLogger(__name__)

# Oldest first. Adding a release family: one module beside these, and its name here.
FAMILIES: tuple[Adapter, ...] = tuple(sorted(
    (covalent_0_232.ADAPTER, covalent_0_238.ADAPTER, covalent_0_240.ADAPTER),
    key=lambda a: Version(a.since or "0")))


def _minor(version: str) -> tuple[int, ...]:
    """(0, 240) of '0.240.0rc0', '0.240.0+g1a2b' or '0.240.1': pre-releases, local builds
    (a checkout's version) and patches belong to their release's family."""
    return (Version(version).release + (0,))[:2]


@functools.cache
def adapter_for(version: str) -> Adapter:
    """The family of Covalent `version` (as `importlib.metadata` reports it). Raises
    ValueError for a string that is no version."""
    try:
        minor = _minor(version)
    except InvalidVersion:
        raise ValueError(f"not a Covalent version: {version!r} (expected e.g. 0.240.0)") from None
    family = FAMILIES[0]
    for candidate in FAMILIES:
        if not candidate.since or minor >= _minor(candidate.since):
            family = candidate
    oldest, newest = _minor(FAMILIES[0].checked), _minor(FAMILIES[-1].checked)
    if oldest <= minor <= newest:
        return family
    side = "newer" if minor > newest else "older"
    note = (f"covalent {version} is {side} than every release the harness knows "
            f"({FAMILIES[0].checked} to {FAMILIES[-1].checked}); using the {family.name} "
            f"family ({family.releases}), checked against {family.checked}")
    log.warning(note)
    return replace(family, note=note)


def current() -> Adapter:
    """The family of the covalent this interpreter imports."""
    try:
        version = metadata.version("covalent")
    except metadata.PackageNotFoundError:
        raise RuntimeError("covalent is not installed in this interpreter") from None
    return adapter_for(version)


def recorded(version: str) -> dict[str, str]:
    """What goes on record about the family chosen for `version`: its name, and the note
    when it stands in for a release it does not know."""
    family = adapter_for(version)
    return {"adapter": family.name, **({"adapter_note": family.note} if family.note else {})}


def dispatch_lists() -> tuple[DispatchList, ...]:
    """Every family's dispatch list, newest first: for a server of unknown release."""
    return tuple(dict.fromkeys(f.dispatch_list for f in reversed(FAMILIES)))
