"""The shared backend: the tables in a PostgreSQL schema, written through psycopg 3."""

from store.postgres.connect import is_postgres_url, redact_dsn
from store.postgres.open import open_postgres
from store.postgres.store import PostgresStore

__all__ = ["PostgresStore", "is_postgres_url", "open_postgres", "redact_dsn"]
