"""Connecting to PostgreSQL, and turning driver errors into the store's own.

What the worker does next depends on the kind of failure, not on the driver: a lock wait
past ``lock_timeout``, a deadlock or a serialization failure is ``StoreBusy`` (retry the
batch), a server that went away is ``StoreUnavailable`` (back off, reconnect), and a wrong
password or a missing database is a plain ``StoreError`` (one line, exit 1).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg.sql
from psycopg import errors as pg_errors

from store.errors import StoreBusy, StoreError, StoreUnavailable

SCHEMES = ("postgresql", "postgres")

CONNECT_TIMEOUT_S = 5
"""How long one connection attempt waits for the server."""

IDLE_IN_TRANSACTION_TIMEOUT_S = 5
"""The server ends a session that sits inside a transaction this long without a statement.

A worker frozen mid-batch (SIGSTOP, a VM pause) would otherwise keep its row locks, on the
lease and on the records, for as long as it is frozen: the standby could not take over and
other services could not update those games. A batch never pauses this long between
statements; a frozen one loses its session, and when it wakes it reconnects and is fenced.
"""

RETRYABLE = (
    pg_errors.LockNotAvailable,  # lock_timeout: another writer held a row past the bound
    pg_errors.SerializationFailure,
    pg_errors.DeadlockDetected,
)

_TRANSIENT_FATALS = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "sorry, too many clients already",
    "terminating connection due to administrator command",
)


def is_postgres_url(location: str) -> bool:
    """Whether ``--db`` names a PostgreSQL server (any libpq URI) rather than a file."""
    return urlsplit(location).scheme in SCHEMES


def redact_dsn(url: str) -> str:
    """The URL with its password replaced by ``***``; query options are kept."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def _first_line(error: BaseException) -> str:
    """libpq's message on one line: its detail, not the 'connection failed:' prefixes."""
    text = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
    for prefix in ("connection failed: ", "connection is bad: "):
        text = text.removeprefix(prefix)
    return text.replace("FATAL:  ", "").replace("FATAL: ", "")


def translate(error: psycopg.Error, location: str) -> StoreError:
    """The store error for a driver error (``raise translate(e, ...) from e``)."""
    message = f"database {location}: {_first_line(error)}"
    if isinstance(error, RETRYABLE):
        return StoreBusy(message)
    if isinstance(
        error,
        pg_errors.AdminShutdown
        | pg_errors.CannotConnectNow
        | pg_errors.IdleInTransactionSessionTimeout,
    ):
        return StoreUnavailable(message)
    if isinstance(error, psycopg.OperationalError) and error.sqlstate is None:
        text = str(error)
        if "FATAL" in text and not any(t in text for t in _TRANSIENT_FATALS):
            return StoreError(message)  # wrong password, no such role or database
        return StoreUnavailable(message)
    if isinstance(error, psycopg.InterfaceError):
        return StoreUnavailable(message)
    return StoreError(message)


@contextlib.contextmanager
def translated(location: str) -> Iterator[None]:
    """Raise driver errors from the block as the store's errors."""
    try:
        yield
    except psycopg.Error as error:
        raise translate(error, location) from error


def answers(url: str) -> bool:
    """Whether the server at ``url`` accepts a connection now (a starting server does not)."""
    try:
        psycopg.connect(url, connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


def run_statement(url: str, statement: str) -> None:
    """Run one statement outside a transaction, as the user of ``url`` (a private server's
    superuser: roles, grants, schemas)."""
    with translated(redact_dsn(url)), psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement.encode())


def create_schema(url: str, schema: str) -> None:
    """Create an empty schema ``schema`` (as the user of ``url``): the demo's and a trial's."""
    with translated(redact_dsn(url)), psycopg.connect(url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE SCHEMA {}").format(psycopg.sql.Identifier(schema)))


def connect(url: str, *, lock_timeout_s: float, read_only: bool = False) -> psycopg.Connection[Any]:
    """A connection in autocommit mode: transactions are explicit (``Connection.transaction``).

    ``lock_timeout`` bounds every wait for a row another transaction holds,
    ``idle_in_transaction_session_timeout`` frees what a frozen worker holds, and a
    read-only connection refuses writes in the server itself.
    """
    location = redact_dsn(url)
    with translated(location):
        conn = psycopg.connect(
            url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name="healthfsm",
        )
        try:
            conn.execute(f"SET lock_timeout = {max(1, int(lock_timeout_s * 1000))}")
            idle_ms = IDLE_IN_TRANSACTION_TIMEOUT_S * 1000
            conn.execute(f"SET idle_in_transaction_session_timeout = {idle_ms}")
            if read_only:
                conn.execute("SET default_transaction_read_only = on")
        except BaseException:
            conn.close()
            raise
    return conn
