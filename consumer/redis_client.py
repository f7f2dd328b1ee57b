"""Connecting to Redis: URL handling, timeouts, and a password that never reaches a log."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

CONNECT_TIMEOUT_S = 5.0
SOCKET_TIMEOUT_MARGIN_S = 5.0
"""The socket timeout is the XREAD block time plus this, so a block never looks like a hang."""


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, safe to log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable redis url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{user}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def connect(url: str, *, block_ms: int, password: str | None = None) -> redis.Redis:
    """A client that returns bytes (each field is decoded on its own) and speaks RESP2."""
    kwargs: dict[str, Any] = {
        "decode_responses": False,
        "protocol": 2,
        "socket_timeout": block_ms / 1000 + SOCKET_TIMEOUT_MARGIN_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
    }
    if password is not None and urlsplit(url).password is None:
        kwargs["password"] = password
    client: redis.Redis = redis.Redis.from_url(url, **kwargs)
    return client


Entries = list[tuple[bytes, dict[bytes, bytes]]]


def _entries_of(reply: Any) -> Entries:
    """XREAD's RESP2 reply ``[[stream, [(id, fields), ...]]]`` as one list of entries."""
    if not reply:
        return []
    return [(entry_id, fields or {}) for _, stream in reply for entry_id, fields in stream]


def read_batch(
    client: redis.Redis, stream: str, after_id: str, count: int, block_ms: int | None
) -> Entries:
    """Up to ``count`` entries after ``after_id``; waits up to ``block_ms`` (None: no wait)."""
    reply = client.xread({stream: after_id}, count=count, block=block_ms)
    return _entries_of(reply)


def last_entry_id(client: redis.Redis, stream: str) -> str | None:
    """The id of the newest entry in ``stream``, or None when it is empty or missing."""
    newest = client.xrevrange(stream, count=1)
    if not newest:
        return None
    raw = newest[0][0]
    return raw.decode() if isinstance(raw, bytes) else str(raw)
