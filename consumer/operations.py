"""Operator actions that touch both Redis and the store: health check, replay, outbox flush."""

from __future__ import annotations

import json
from pathlib import Path

import redis
import sqlite_utils

from consumer.lag import find_gap, stream_view
from consumer.models import ConsumerSettings
from consumer.redis_client import client_for, redact_url
from consumer.relay import OutboxRelay
from statemachine.errors import HealthFsmError
from store import SCHEMA_VERSION, dead_letters, offsets, open_database, schema_version
from store.database import immediate


class CheckFailed(HealthFsmError):
    """``healthfsm check`` found a problem; the message is the one-line reason."""


def check(settings: ConsumerSettings) -> str:
    """Redis answers, the database opens at the current schema, the offset is in the stream."""
    path = Path(settings.db_path)
    if not path.exists():
        raise CheckFailed(f"database {path} does not exist")
    db = open_database(path, create=False, upgrade=False)
    try:
        version = schema_version(db)
        if version != SCHEMA_VERSION:
            raise CheckFailed(
                f"database schema is version {version}, this healthfsm expects {SCHEMA_VERSION}"
                " (start 'healthfsm consume' once to migrate)"
            )
        offset = offsets.load(db.conn, settings.label) or offsets.START_ID
        read = offsets.entries_read(db.conn, settings.label)
    finally:
        db.close()
    client = client_for(settings)
    try:
        client.ping()
        view = stream_view(client, settings.stream)
    except redis.RedisError as error:
        raise CheckFailed(f"redis at {redact_url(settings.redis_url)}: {error}") from error
    finally:
        client.close()
    gap = find_gap(view, offset, read)
    if gap is not None:
        raise CheckFailed(
            f"stored offset {offset} is older than the first entry {gap.first_entry_id} of"
            f" {settings.stream}: the stream was trimmed past it"
        )
    length = view.length if view else 0
    return f"ok: redis answers, schema v{version}, offset {offset} ({length} entries in stream)"


def _replayable(row: dict[str, object]) -> dict[str, str] | None:
    """The original fields, or None when the kept copy is not faithful (cut or undecodable)."""
    try:
        fields = json.loads(str(row["fields"]))
    except ValueError:
        return None  # cut at RAW_FIELDS_LIMIT
    if not isinstance(fields, dict) or any("\\x" in k + v for k, v in fields.items()):
        return None  # bytes that were not UTF-8 were escaped: the copy is not the original
    return {str(k): str(v) for k, v in fields.items()}


def replay_dead_letters(
    db: sqlite_utils.Database,
    client: redis.Redis,
    stream: str,
    *,
    reason: str | None,
    ids: list[int],
    limit: int,
) -> tuple[int, list[str]]:
    """XADD selected dead letters back to ``stream`` as new entries, then forget them.

    Returns (replayed, skipped entry ids with why). Rows whose kept copy is not faithful are
    skipped and stay in the table.
    """
    rows = dead_letters.list_recent(db.conn, reason=reason, limit=limit if not ids else 100_000)
    if ids:
        rows = [row for row in rows if row["id"] in set(ids)]
    rows.sort(key=lambda row: int(str(row["id"])))
    skipped: list[str] = []
    replayed: list[int] = []
    pipe = client.pipeline(transaction=False)
    for row in rows:
        fields = _replayable(row)
        if fields is None:
            skipped.append(f"{row['entry_id']} (kept fields are cut or were not UTF-8)")
            continue
        pipe.xadd(stream, fields)  # type: ignore[arg-type]
        replayed.append(int(str(row["id"])))
    pipe.execute()
    with immediate(db) as conn:
        dead_letters.delete_ids(conn, replayed)
    return len(replayed), skipped


def flush_outbox(db: sqlite_utils.Database, client: redis.Redis, lobby_stream: str) -> int:
    """Publish every pending snapshot now (what the worker does on start)."""
    relay = OutboxRelay(db, client, lobby_stream)
    try:
        return relay.publish()
    finally:
        relay.close()
