"""Connecting to Redis: URL handling, timeouts, and a password that never reaches a log."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.connection import Connection

from consumer.models import ConsumerSettings

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


def connect(
    url: str,
    *,
    block_ms: int,
    password: str | None = None,
    tls_ca: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> redis.Redis:
    """A client that returns bytes (each field is decoded on its own) and speaks RESP2.

    ``password`` (from HEALTHFSM_REDIS_PASSWORD) applies when the URL carries none; the
    TLS files apply to ``rediss://`` URLs.
    """
    kwargs: dict[str, Any] = {
        "decode_responses": False,
        "protocol": 2,
        "socket_timeout": block_ms / 1000 + SOCKET_TIMEOUT_MARGIN_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
    }
    if password is not None and urlsplit(url).password is None:
        kwargs["password"] = password
    tls = {"ssl_ca_certs": tls_ca, "ssl_certfile": tls_cert, "ssl_keyfile": tls_key}
    if any(tls.values()):
        if not url.startswith("rediss://"):
            raise ValueError("--redis-ca/--redis-cert/--redis-key need a rediss:// URL")
        kwargs.update({k: v for k, v in tls.items() if v})
    client: redis.Redis = redis.Redis.from_url(url, **kwargs)
    client.set_response_callback("XREAD", entries_of)
    return client


def client_for(settings: ConsumerSettings) -> redis.Redis:
    """``connect()`` with everything the settings say: URL, timeouts, password, TLS files."""
    return connect(
        settings.redis_url,
        block_ms=settings.block_ms,
        password=settings.redis_password,
        tls_ca=settings.tls_ca,
        tls_cert=settings.tls_cert,
        tls_key=settings.tls_key,
    )


Entries = list[tuple[bytes, dict[bytes, bytes]]]


def entries_of(reply: Any, **_: Any) -> Entries:
    """XREAD's raw RESP2 reply ``[[stream, [[id, [k, v, ...]], ...]]]`` as (id, fields) pairs.

    Installed as the client's XREAD response callback: redis-py's generic parser builds the
    same dicts with several times the Python overhead, and XREAD is on the hot path.
    """
    if not reply:
        return []
    entries: Entries = []
    for _, stream_entries in reply:
        for entry_id, flat in stream_entries:
            it = iter(flat or ())
            entries.append((entry_id, dict(zip(it, it, strict=False))))
    return entries


def read_batch(
    client: redis.Redis, stream: str, after_id: str, count: int, block_ms: int | None
) -> Entries:
    """Up to ``count`` entries after ``after_id``; waits up to ``block_ms`` (None: no wait)."""
    reply: Any = client.xread({stream: after_id}, count=count, block=block_ms)
    if reply and isinstance(reply[0], list):  # a client without our callback: stock shape
        return [(eid, dict(fields or {})) for _, entries in reply for eid, fields in entries]
    return list(reply or ())


def last_entry_id(client: redis.Redis, stream: str) -> str | None:
    """The id of the newest entry in ``stream``, or None when it is empty or missing."""
    newest = client.xrevrange(stream, count=1)
    if not newest:
        return None
    raw = newest[0][0]
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class OwnConnection:
    """A connection taken from a client's pool for a pipeline of its own (read-ahead, relay).

    Its replies are read later than its commands are sent, so after any failure its state is
    unknown: it is dropped (a reply in flight goes with it), never reused.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._conn: Connection | None = None

    def get(self) -> Connection:
        """The connection, taken from the pool on first use."""
        if self._conn is None:
            self._conn = self._pool.get_connection()
        return self._conn

    def drop(self) -> None:
        """Close it and hand it back to the pool; the next ``get`` connects afresh."""
        if self._conn is not None:
            self._conn.disconnect()  # type: ignore[no-untyped-call]  # redis-py is untyped here
            self._pool.release(self._conn)
            self._conn = None
