"""Covalent 0.239 and newer (checked: 0.240.0, and a checkout of its develop at 0.240.0rc0)."""

from __future__ import annotations

from bench.adapters.family import Adapter

ADAPTER = Adapter(
    name="covalent_0_240",
    since="0.239",
    releases="0.239 and newer",
    checked="0.240.0",
    # 0.239 keeps dispatcher state in a second SQLite database, by default a
    # NamedTemporaryFile in /tmp that a killed server leaves behind: the server puts it
    # beside its main database.
    cache_db_var="COVALENT_CACHE_DB_URL",
)
