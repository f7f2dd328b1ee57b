"""Typed reads of a bytes Redis client for tests: redis-py types replies as bytes or str."""

from __future__ import annotations

from typing import cast

import redis

Fields = dict[bytes, bytes]
Entry = tuple[bytes, Fields]


def entries(
    client: redis.Redis, stream: str, min: str = "-", max: str = "+", count: int | None = None
) -> list[Entry]:
    """``XRANGE``: the entries of ``stream`` between ``min`` and ``max``, oldest first."""
    return cast(list[Entry], client.xrange(stream, min=min, max=max, count=count))


def newest_id(client: redis.Redis, stream: str, empty: str | None = None) -> str:
    """The id of the stream's newest entry; ``empty`` when it has none (given one)."""
    found = cast(list[Entry], client.xrevrange(stream, count=1))
    if not found and empty is not None:
        return empty
    return found[0][0].decode()


def oldest_id(client: redis.Redis, stream: str) -> str:
    """The id of the stream's oldest entry (the stream must have one)."""
    return entries(client, stream, count=1)[0][0].decode()


def as_id(reply: object) -> str:
    """An entry id as ``XADD`` replied it (bytes from a bytes client)."""
    return reply.decode() if isinstance(reply, bytes) else str(reply)
