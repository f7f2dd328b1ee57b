"""The store interface the worker, the batch applier, the admin CAS and the CLI talk to.

Two backends implement it: ``store.sqlite`` (the embedded default, one file) and
``store.postgres`` (records shared with other services, a standby on another machine).
Callers never learn which one is behind it; the SQL that differs lives in ``store/``.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Protocol

from statemachine import RuntimeRecord
from store.sql import Dialect, Sql


class RecordLoader(Protocol):
    """How a batch loads the records it changes, inside its write transaction.

    SQLite keeps them in memory between batches (``RecordCache``); PostgreSQL locks them
    with ``SELECT ... FOR UPDATE``, because other services write the same rows.
    """

    def load(self, sql: Sql, game_ids: Iterable[str]) -> dict[str, RuntimeRecord]: ...

    def committed(self, touched: Iterable[RuntimeRecord]) -> None: ...

    def invalidate(self) -> None: ...


class Store(Protocol):
    """An open healthfsm store."""

    @property
    def dialect(self) -> Dialect: ...

    @property
    def location(self) -> str:
        """The file path, or the URL without its password: for messages and logs."""
        ...

    @property
    def conn(self) -> Sql:
        """The connection for reads outside a write transaction (each statement commits)."""
        ...

    def write(self) -> AbstractContextManager[Sql]:
        """One write transaction: everything in it commits together or not at all.

        Raises ``StoreBusy`` when another writer held a lock past the timeout (or, on
        PostgreSQL, on a deadlock or serialization failure: the caller retries the whole
        transaction) and ``StoreUnavailable`` when the server went away.
        """
        ...

    def schema_version(self) -> int:
        """The newest migration the store records (0 for a new one)."""
        ...

    def migrate(self) -> list[str]:
        """Apply every pending migration (``store.migrations``) in one write transaction;
        return the names applied."""
        ...

    def record_loader(self) -> RecordLoader: ...

    def background(self) -> AbstractContextManager[None]:
        """Housekeeping that runs beside a worker (SQLite's WAL checkpoints)."""
        ...

    def close(self) -> None: ...
