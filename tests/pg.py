"""The session's PostgreSQL server (from the pgserver wheel), started on first use.

Each test gets a schema of its own on the one server (a schema costs milliseconds, a
database a few hundred), reached through the URL's ``search_path`` option, which is also
how operators choose the schema. When the server cannot start, the tests that need it
fail with the reason: they never skip.
"""

from __future__ import annotations

import atexit
import itertools
import os

from tests import pg_server as embedded_pg

_server: embedded_pg.EmbeddedPostgres | None = None
_names = itertools.count(1)
CREATED: list[str] = []
"""Every schema made this session, in order (tests/edges.py reads a test's own)."""


def server() -> embedded_pg.EmbeddedPostgres:
    """The shared server, started the first time a test asks."""
    global _server
    if _server is None:
        _server = embedded_pg.start()
        atexit.register(_server.stop)
    return _server


def new_schema_url(prefix: str = "t", *, tcp: bool = False) -> str:
    """A URL whose default schema is a new, empty one: over the Unix socket (``?host=``),
    or with ``tcp`` over 127.0.0.1 with the superuser's password."""
    name = f"{prefix}{os.getpid()}_{next(_names)}"
    pg = server()
    pg.admin(f"CREATE SCHEMA {name}")
    CREATED.append(name)
    return pg.url(name) if tcp else pg.socket_url(name)
