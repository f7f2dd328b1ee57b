"""The health probe ``healthfsm check``: Redis, the schema, the offsets and the partitions."""

from __future__ import annotations

import redis

from consumer.contract.fence import fence_key
from consumer.errors import CheckFailed, ScriptingRefused
from consumer.operations.partitions import check_partitions, partition_rows
from consumer.runtime.clock import wall_clock_ms
from consumer.runtime.fence import fence_floor
from consumer.runtime.position import reset_remedy
from consumer.runtime.redis_client import client_for, redact_url
from consumer.runtime.stream_view import find_gap, find_reset, stream_view
from consumer.runtime.wording import counted
from consumer.settings import ConsumerSettings
from store import SCHEMA_VERSION, offsets, open_database, partitions


def check(settings: ConsumerSettings) -> str:
    """Redis answers, the database opens at the current schema, the offset is in the stream."""
    db = open_database(settings.db_path, read_only=True)
    try:
        offset = offsets.load(db.conn, settings.label) or offsets.START_ID
        read = offsets.entries_read(db.conn, settings.label)
        lease = partition_rows(db.conn, settings.label, wall_clock_ms())[0]["lease"]
        location = db.location
        client = client_for(settings)
        try:
            client.ping()
            view = stream_view(client, settings.stream)
            fence_floor(client, fence_key(settings.lobby_stream, settings.label))
        except ScriptingRefused as error:
            raise CheckFailed(str(error)) from error
        except redis.RedisError as error:
            raise CheckFailed(f"redis at {redact_url(settings.redis_url)}: {error}") from error
        finally:
            client.close()
        now = wall_clock_ms()
        ttl_ms = int(settings.lease_ttl_s * 1000)
        problems = check_partitions(db.conn, settings.label, view, now, ttl_ms)
        count = partitions.count(db.conn, settings.label)
        held = len(
            [p for p in partitions.read_leases(db.conn, settings.label).values() if p.live(now)]
        )
    finally:
        db.close()
    if problems:
        raise CheckFailed(
            problems[0] + (f" (and {len(problems) - 1} more)" if problems[1:] else "")
        )
    reset = find_reset(view, offset, read)
    if reset is not None:
        raise CheckFailed(
            f"stream {settings.stream} was reset: {reset.why};"
            f" {reset_remedy(settings.label, location)}"
        )
    gap = find_gap(view, offset, read)
    if gap is not None:
        where = (
            f"older than the first entry {gap.resume_at}"
            if gap.resume_at is not None
            else f"behind its last id {view.last_generated_id if view else '?'} with nothing"
            " left to read"
        )
        raise CheckFailed(
            f"stored offset {offset} is {where} of {settings.stream}: unread entries were"
            " trimmed (a running worker reports them and reads on)"
        )
    length = view.length if view else 0
    if count > 1:
        return (
            f"ok: redis answers, schema v{SCHEMA_VERSION}, offset {offset}"
            f" ({counted(length, 'entry', 'entries')} in stream), {count} partitions, {held} held,"
            " publish fenced at Redis"
        )
    return (
        f"ok: redis answers, schema v{SCHEMA_VERSION}, offset {offset}"
        f" ({counted(length, 'entry', 'entries')} in stream), lease {lease},"
        " publish fenced at Redis"
    )
