"""The tests' PostgreSQL 16 server: ``consumer.devtools.embedded_pg`` with a known password.

The product module starts it, as ``healthfsm demo --postgres`` does: the ``pgserver``
wheel's binaries run directly (never through ``pgserver``'s own manager), as ``nobody``
under root, with that user's group and no other, so the suite adds no user or group to the
machine (``test_embedded_servers`` compares /etc/passwd and /etc/group before and after),
in a temp folder open to that user only, which ``stop()`` removes. The tests add a fixed
superuser password (they log in over TCP with it and check that no output shows it) and
take the port here, so that a test can hand the server one that is already taken.
"""

from __future__ import annotations

from consumer.devtools import embedded_pg
from consumer.devtools.embedded import free_port
from consumer.devtools.embedded_pg import SUPERUSER, SYSTEM_USER, EmbeddedPostgres, RunAs
from consumer.devtools.embedded_pg import bin_dir as _bin_dir
from consumer.errors import PostgresNotAvailable

__all__ = [
    "SUPERUSER",
    "SUPERUSER_PASSWORD",
    "SYSTEM_USER",
    "EmbeddedPostgres",
    "PostgresNotAvailable",
    "RunAs",
    "_bin_dir",
    "free_port",
    "start",
]

SUPERUSER_PASSWORD = "healthfsm-test"
"""The throwaway server's superuser password; it listens on 127.0.0.1 only, for one run."""


def start(*, durable: bool = False) -> EmbeddedPostgres:
    """initdb a throwaway cluster in a new temp folder and start it on a free port (see
    ``embedded_pg.start``); the superuser logs in over TCP with ``SUPERUSER_PASSWORD``."""
    return embedded_pg.start(durable=durable, password=SUPERUSER_PASSWORD, port=free_port())
