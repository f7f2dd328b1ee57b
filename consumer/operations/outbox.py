"""Publishing the outbox by hand (``outbox flush``), as a worker does on start."""

from __future__ import annotations

import redis

from consumer.operations.offsets import refuse_while_leased
from consumer.runtime.relay import OutboxRelay
from store.backend import Store


def flush_outbox(db: Store, client: redis.Redis, lobby_stream: str, *, force: bool = False) -> int:
    """Publish every pending snapshot now (what the worker does on start).

    Refused while a worker holds a lease: it publishes the same rows, and two publishers
    repeat snapshots and can put an older one after a newer one.
    """
    refuse_while_leased(db, None, "refusing to flush the outbox", force)
    relay = OutboxRelay(db, client, lobby_stream)
    try:
        return relay.publish()
    finally:
        relay.close()
