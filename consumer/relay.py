"""Publishing the outbox to ``gm:lobby_events``: pipelined XADDs, then delete what Redis took."""

from __future__ import annotations

import logging

import redis
import sqlite_utils

from consumer.codec import encode_snapshot
from consumer.faults import FaultPoint, hit
from store import outbox
from store.database import immediate

log = logging.getLogger(__name__)

PUBLISH_CHUNK = 1000
"""Outbox rows per pipeline round trip."""


def publish_outbox(
    db: sqlite_utils.Database, client: redis.Redis, stream: str, chunk: int = PUBLISH_CHUNK
) -> int:
    """Publish every pending snapshot in order; return how many were published.

    Rows are deleted only after the pipeline succeeded, so a failure leaves them for the next
    call: at-least-once, with ``source_entry_id`` for consumers to drop duplicates.
    """
    published = 0
    while rows := outbox.peek(db.conn, chunk):
        pipe = client.pipeline(transaction=False)
        for _, row in rows:
            pipe.xadd(stream, encode_snapshot(row))  # type: ignore[arg-type]
        pipe.execute()
        hit(FaultPoint.AFTER_PUBLISH)
        with immediate(db) as conn:
            outbox.delete_through(conn, rows[-1][0])
        published += len(rows)
        log.debug("published %d snapshots to %s", len(rows), stream)
    return published
