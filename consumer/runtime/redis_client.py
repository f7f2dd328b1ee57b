"""Connecting to Redis: URL handling, timeouts, and a password that never reaches a log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.connection import Connection

from consumer.settings import ConsumerSettings
from store.stream_id import START_ID

CONNECT_TIMEOUT_S = 5.0
"""How long a TCP connect may take (never longer than a reply may)."""


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
    socket_timeout_s: float,
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
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": min(CONNECT_TIMEOUT_S, socket_timeout_s),
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
    client.set_response_callback("XRANGE", range_entries)
    return client


def skip_on_read(client: redis.Redis, keep: Keep | None) -> None:
    """Have this client's XRANGE and XREAD replies mark the entries ``keep`` refuses as
    ``SKIPPED`` (None: build every entry's fields again)."""
    if keep is None:
        client.set_response_callback("XREAD", entries_of)
        client.set_response_callback("XRANGE", range_entries)
        return
    client.set_response_callback("XREAD", lambda reply, **_: entries_of(reply, keep))
    client.set_response_callback("XRANGE", lambda reply, **_: range_entries(reply, keep))


def client_for(settings: ConsumerSettings) -> redis.Redis:
    """``connect()`` with everything the settings say: URL, timeouts, password, TLS files."""
    return connect(
        settings.redis_url,
        socket_timeout_s=settings.socket_timeout_s,
        password=(
            settings.redis_password.get_secret_value()
            if settings.redis_password is not None
            else None
        ),
        tls_ca=settings.tls_ca,
        tls_cert=settings.tls_cert,
        tls_key=settings.tls_key,
    )


Entries = list[tuple[bytes, dict[bytes, bytes]]]


def entries_of(reply: Any, keep: Keep | None = None, **_: Any) -> Entries:
    """XREAD's raw RESP2 reply ``[[stream, [[id, [k, v, ...]], ...]]]`` as (id, fields) pairs.

    Installed as the client's XREAD response callback: redis-py's generic parser builds the
    same dicts with several times the Python overhead, and XREAD is on the hot path.
    """
    if not reply:
        return []
    entries: Entries = []
    for _, stream_entries in reply:
        entries.extend(range_entries(stream_entries, keep))
    return entries


def range_entries(reply: Any, keep: Keep | None = None) -> Entries:
    """XRANGE's raw RESP2 reply ``[[id, [k, v, ...]], ...]`` as (id, fields) pairs.

    With ``keep`` (a worker holding some partitions), an entry whose raw ``game_id`` it
    refuses gets ``SKIPPED`` for fields: its dict is never built.
    """
    entries: Entries = []
    for entry_id, flat in reply or ():
        if keep is not None and not keep(raw_field(flat, GAME_ID)):
            entries.append((entry_id, SKIPPED))
            continue
        it = iter(flat or ())
        entries.append((entry_id, dict(zip(it, it, strict=False))))
    return entries


Keep = Callable[[bytes | None], bool]
"""Whether an entry with this raw ``game_id`` field (None: missing) is to be applied here."""

GAME_ID = b"game_id"

SKIPPED: dict[bytes, bytes] = {}
"""The fields of an entry read for its id only: another partition's (never mutated)."""


def raw_field(flat: Any, name: bytes) -> bytes | None:
    """The value of ``name`` in a flat ``[k, v, k, v, ...]`` reply, the last one if repeated
    (as a dict built from it would keep)."""
    if not flat:
        return None
    for index in range(len(flat) - 2, -1, -2):
        if flat[index] == name:
            value: bytes = flat[index + 1]
            return value
    return None


def range_command(stream: str, after_id: str, count: int) -> tuple[object, ...]:
    """The XRANGE that reads up to ``count`` entries after ``after_id`` *and* shows whether
    ``after_id``'s own entry is still there: it starts at that entry, inclusive."""
    if after_id == START_ID:
        return ("XRANGE", stream, "-", "+", "COUNT", count)
    return ("XRANGE", stream, after_id, "+", "COUNT", count + 1)


def split_at_offset(entries: Entries, after_id: str, count: int) -> tuple[Entries, bool]:
    """(entries after ``after_id``, whether the stream still held ``after_id`` itself).

    Trimming removes the oldest entries first, so while the offset's own entry survives
    nothing after it can have been trimmed: the batch continues the stream without a gap.
    When it is gone the batch may cross a gap, and the worker looks closer (once).
    """
    if after_id == START_ID:
        return entries, True
    if entries and entries[0][0] == after_id.encode():
        return entries[1:], True
    return entries[:count], False


def read_range(client: redis.Redis, stream: str, after_id: str, count: int) -> tuple[Entries, bool]:
    """Up to ``count`` entries after ``after_id`` without waiting, and ``split_at_offset``'s
    verdict on whether they continue from it."""
    reply: Any = client.execute_command(*range_command(stream, after_id, count))  # type: ignore[no-untyped-call]
    return split_at_offset(reply, after_id, count)


def read_blocking(
    client: redis.Redis, stream: str, after_id: str, count: int, block_ms: int
) -> Entries:
    """Wait up to ``block_ms`` for entries after ``after_id`` (called when none were there).

    What XREAD returns was added after the read began, so it continues the stream.
    """
    return list(client.xread({stream: after_id}, count=count, block=block_ms) or ())  # type: ignore[arg-type]


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
