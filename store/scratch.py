"""Throwaway stores for the benchmark: a file in a temp folder, or a schema of their own.

On PostgreSQL a scratch store is a new schema in the database ``--db`` names (the role
needs CREATE there), reached through the URL's ``search_path``, and dropped afterwards.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg

from store.postgres import is_postgres_url
from store.postgres.connect import redact_dsn, translated


def with_schema(url: str, schema: str) -> str:
    """``url`` with its connections' ``search_path`` set to ``schema`` (other options kept)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    options = dict(parse_qsl(parts.query)).get("options", "")
    options = f"{options} -csearch_path={schema}".strip()
    return urlunsplit(parts._replace(query=urlencode([*query, ("options", options)])))


@contextlib.contextmanager
def scratch_stores(base: str | None, folder: Path) -> Iterator[ScratchStores]:
    """Name new stores with ``.new(name)``; all of them are removed on exit."""
    stores = ScratchStores(base, folder)
    try:
        yield stores
    finally:
        stores.remove_all()


class ScratchStores:
    """Locations of throwaway stores under ``base`` (a PostgreSQL URL) or in ``folder``."""

    def __init__(self, base: str | None, folder: Path) -> None:
        self.base = base if base is not None and is_postgres_url(base) else None
        self.folder = folder
        self._schemas: list[str] = []
        self._tag = uuid.uuid4().hex[:8]

    @property
    def backend(self) -> str:
        return "postgres" if self.base else "sqlite"

    def new(self, name: str) -> str:
        """A location with nothing in it yet (``open_database(..., create=True)`` fills it)."""
        if self.base is None:
            path = self.folder / f"{name}.db"
            self._remove_file(path)
            return str(path)
        schema = f"healthfsm_bench_{self._tag}_{name}"
        self._run(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE; CREATE SCHEMA "{schema}"')
        self._schemas.append(schema)
        return with_schema(self.base, schema)

    def remove(self, location: str) -> None:
        if self.base is None:
            self._remove_file(Path(location))

    def remove_all(self) -> None:
        for schema in self._schemas:
            with contextlib.suppress(psycopg.Error):
                self._run(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        self._schemas.clear()

    def _run(self, sql: str) -> None:
        assert self.base is not None
        with translated(redact_dsn(self.base)), psycopg.connect(self.base, autocommit=True) as conn:
            conn.execute(sql.encode())

    @staticmethod
    def _remove_file(path: Path) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
