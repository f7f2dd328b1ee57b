"""The shared backend: the tables in a PostgreSQL schema, written through psycopg 3."""

from store.postgres.connect import (
    answers,
    create_schema,
    is_postgres_url,
    redact_dsn,
    run_statement,
)
from store.postgres.open import open_postgres
from store.postgres.store import PostgresStore

__all__ = [
    "PostgresStore",
    "answers",
    "create_schema",
    "is_postgres_url",
    "open_postgres",
    "redact_dsn",
    "run_statement",
]
