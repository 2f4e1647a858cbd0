"""Covalent release families (bench.adapters): nothing outside the package knows a release,
each version string picks its family, and each family states what its server needs.
Fast: no server, no environment build."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import re
import sys
import threading
import tokenize
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from bench.adapters import FAMILIES, adapter_for, current, recorded
from bench.adapters.family import CACHE_DB_NAME
from bench.services import server

REPO = Path(__file__).resolve().parents[1]

# What only bench/adapters/ may hold. Scanned: code and string literals (a CLI snippet or a
# probe script run elsewhere imports as much as code does); not comments, which may name the
# releases a branch elsewhere was for. The version patterns: a release tuple `(0, 233`,
# `Version(` / `version.parse` / `parse_version`, and a comparison with a 0.2xx release
# (`< 0.233`; other packages' pins such as fastapi<0.132 are not Covalent's).
PRIVATE = re.compile(r"\bcovalent(_dispatcher)?\._(?!_)")  # not covalent.__file__
VERSIONED = re.compile(r"\(0,\s*2\d\d\b|\bVersion\(|\bversion\.parse\b|\bparse_version\b"
                       r"|[<>]=?\s*['\"]?0\.2\d\d\b")


def _without_comments(source: str) -> list[str]:
    """The file's lines with every comment blanked (strings and code kept)."""
    lines = source.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            row, col = token.start
            lines[row - 1] = lines[row - 1][:col]
    return lines


def test_nothing_outside_the_adapters_knows_a_covalent_release() -> None:
    found = []
    for path in sorted((REPO / "bench").rglob("*.py")):
        if (REPO / "bench" / "adapters") in path.parents:
            continue
        for number, line in enumerate(_without_comments(path.read_text()), 1):
            for pattern in (PRIVATE, VERSIONED):
                if pattern.search(line):
                    found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, "belongs in bench/adapters/:\n" + "\n".join(found)


# --- picking a family -----------------------------------------------------------------------


@pytest.mark.parametrize(("version", "family"), [
    ("0.232.0.post1", "covalent_0_232"),
    ("0.232.0", "covalent_0_232"),
    ("0.233.0", "covalent_0_238"),
    ("0.238.0", "covalent_0_238"),
    ("0.239.0", "covalent_0_240"),
    ("0.240.0", "covalent_0_240"),
    # A checkout of Covalent reports its version like a release (develop: 0.240.0rc0).
    ("0.240.0rc0", "covalent_0_240"),
    ("0.240.0+g1a2b3c4", "covalent_0_240"),
    ("0.240.1", "covalent_0_240"),
])
def test_each_release_picks_its_family(version: str, family: str) -> None:
    assert adapter_for(version).name == family
    assert adapter_for(version).note == ""  # a known release: nothing to warn about


def test_an_unknown_newer_release_gets_the_newest_family_with_a_note_on_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    adapter_for.cache_clear()  # the warning is logged once per version and process
    with caplog.at_level(logging.WARNING, logger="bench.adapters"):
        newer = adapter_for("0.250.0")
    assert newer.name == FAMILIES[-1].name == "covalent_0_240"
    assert "0.250.0 is newer than every release" in newer.note
    assert newer.note in caplog.text
    assert recorded("0.250.0") == {"adapter": "covalent_0_240", "adapter_note": newer.note}
    assert recorded("0.238.0") == {"adapter": "covalent_0_238"}
    # What it does is the newest family's; only the note differs.
    assert dataclasses.replace(newer, note="") == FAMILIES[-1]


def test_an_older_release_than_any_known_gets_the_oldest_family_with_a_note() -> None:
    older = adapter_for("0.220.1")
    assert older.name == "covalent_0_232" and "older than every release" in older.note


@pytest.mark.parametrize("garbage", ["garbage", "", "0.240.x", "latest"])
def test_a_string_that_is_no_version_is_a_clear_error(garbage: str) -> None:
    with pytest.raises(ValueError, match=f"not a Covalent version: {garbage!r}"):
        adapter_for(garbage)


def test_this_interpreter_has_the_pinned_release_and_records_its_family() -> None:
    assert current() is adapter_for("0.240.0")
    assert current().name == "covalent_0_240"
    current().check()  # what the harness uses of it imports


def test_families_are_in_order_and_each_is_checked_against_a_release_it_serves() -> None:
    assert [f.name for f in FAMILIES] == ["covalent_0_232", "covalent_0_238", "covalent_0_240"]
    for family in FAMILIES:
        assert adapter_for(family.checked) == family


# --- what each family's server needs --------------------------------------------------------


@pytest.mark.parametrize(("version", "pins", "cache_db", "listing"), [
    ("0.232.0.post1", ("setuptools<81", "autoray<0.6.10"), False,
     ("/api/v1/dispatches/list", "items")),
    ("0.238.0", (), False, ("/api/v2/dispatches", "dispatches")),
    ("0.240.0", (), True, ("/api/v2/dispatches", "dispatches")),
])
def test_each_family_states_what_its_server_needs(
    tmp_path: Path, version: str, pins: tuple[str, ...], cache_db: bool,
    listing: tuple[str, str],
) -> None:
    adapter = adapter_for(version)
    assert adapter.pins == pins
    assert (adapter.dispatch_list.path, adapter.dispatch_list.key) == listing
    assert adapter.client_dispatch_cache_dir
    assert adapter.cli_module in adapter.cli_snippet
    env = server._server_env(tmp_path, 1234, {"OMP_NUM_THREADS": "1"}, adapter)
    # The executors' cache directory, which their dask executor does not create.
    assert (Path(env["XDG_CACHE_HOME"]) / "covalent").is_dir()
    # The cache database of 0.239 and newer, beside the main one in the server's state.
    url = env.get("COVALENT_CACHE_DB_URL")
    assert (url == f"sqlite+pysqlite:///{tmp_path / 'db' / CACHE_DB_NAME}") is cache_db
    assert cache_db or url is None
    assert env["COVALENT_DATABASE"].startswith(str(tmp_path)) and env["OMP_NUM_THREADS"] == "1"
    assert server._adapter(sys.executable, version) == adapter


class _OldServer(BaseHTTPRequestHandler):
    """Answers as a covalent 0.232 server does: the dispatch list in the UI's API only."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        found = self.path.startswith("/api/v1/dispatches/list")
        body = json.dumps({"items": []} if found else {"detail": "Not Found"}).encode()
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_the_liveness_check_asks_the_family_or_every_family_when_unknown() -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _OldServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        address = f"http://127.0.0.1:{httpd.server_address[1]}"
        server._check_answers(address, adapter=adapter_for("0.232.0.post1"))
        server._check_answers(address)  # attached, release unknown: newest first, then older
        with pytest.raises(requests.HTTPError):
            server._check_answers(address, adapter=adapter_for("0.240.0"))
    finally:
        httpd.shutdown()
        httpd.server_close()
