"""Covalent 0.233 to 0.238 (checked: 0.238.0): the newest family's needs, less the cache
database that 0.239 brought."""

from __future__ import annotations

from bench.adapters.family import Adapter

ADAPTER = Adapter(
    name="covalent_0_238",
    since="0.233",
    releases="0.233 to 0.238",
    checked="0.238.0",
)
