"""Covalent older than 0.233 (checked: 0.232.0.post1; 0.220 and older do not build on
Python 3.11: they pin aiohttp 3.8.1)."""

from __future__ import annotations

from bench.adapters.family import Adapter, DispatchList

ADAPTER = Adapter(
    name="covalent_0_232",
    since="",
    releases="older than 0.233",
    checked="0.232.0.post1",
    # It imports pkg_resources (gone from setuptools 81) and pins PennyLane 0.32, which fails
    # at import with autoray 0.6.10 and newer (NumpyMimic was removed).
    pins=("setuptools<81", "autoray<0.6.10"),
    # No GET /api/v2/dispatches yet: the dispatch list is in the UI's API.
    dispatch_list=DispatchList("/api/v1/dispatches/list", (("count", 1),), "items"),
)
