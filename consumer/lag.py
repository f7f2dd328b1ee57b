"""How far behind the consumer is, and whether the stream was trimmed past its offset.

Kept off the hot path: the worker calls these on its progress tick and after (re)connecting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from store.offsets import entry_id_key

LAG_COUNT_LIMIT = 10_000
"""Entries counted at most when Redis cannot say (before 7.0): the count is a range read."""


@dataclass(frozen=True)
class StreamView:
    """What XINFO STREAM says, with the fields older servers lack left as None."""

    length: int
    first_entry_id: str | None
    last_generated_id: str
    entries_added: int | None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def stream_view(client: redis.Redis, stream: str) -> StreamView | None:
    """XINFO STREAM, or None when the stream does not exist yet."""
    try:
        info: dict[str, Any] = client.xinfo_stream(stream)
    except redis.ResponseError as error:
        if "no such key" in str(error).lower():
            return None
        raise
    first = info.get("first-entry")
    added = info.get("entries-added")
    return StreamView(
        length=int(info["length"]),
        first_entry_id=_text(first[0]) if first else None,
        last_generated_id=_text(info["last-generated-id"]),
        entries_added=int(added) if added is not None else None,
    )


def lag(
    client: redis.Redis,
    stream: str,
    offset: str,
    now_ms: int,
    view: StreamView | None = None,
    entries_read: int | None = None,
) -> tuple[int, float]:
    """(entries after ``offset``, age in seconds of the oldest of them).

    Redis 7+ counts for free (``entries-added`` minus what this consumer has read, at most
    the stream's length); older servers get a range read of at most LAG_COUNT_LIMIT ids.
    """
    oldest = client.xrange(stream, min=f"({offset}", count=1)
    if not oldest:
        return 0, 0.0
    age = max(0.0, (now_ms - entry_id_key(_text(oldest[0][0]))[0]) / 1000)
    if view is not None and view.entries_added is not None and entries_read is not None:
        return max(1, min(view.entries_added - entries_read, view.length)), age
    return len(client.xrange(stream, min=f"({offset}", count=LAG_COUNT_LIMIT) or ()), age


@dataclass(frozen=True)
class Gap:
    """Entries after the offset were trimmed before this consumer read them."""

    first_entry_id: str
    skipped_estimate: int | None
    """Known when Redis (7+) reports entries-added; None on older servers."""


def find_gap(view: StreamView | None, offset: str, entries_read: int | None) -> Gap | None:
    """A gap exists when the offset is older than the first entry still in the stream.

    On Redis 7+, ``entries-added`` minus what this consumer read minus what remains
    estimates how many entries were lost; an estimate of 0 means everything trimmed had been
    read (no gap). A negative one means the stream was recreated: lost, count unknown.
    """
    if view is None or view.first_entry_id is None or offset == "0-0":
        return None  # a consumer that never read anything has lost nothing
    if entry_id_key(offset) >= entry_id_key(view.first_entry_id):
        return None
    estimate = None
    if view.entries_added is not None and entries_read is not None:
        estimate = view.entries_added - entries_read - view.length
        if estimate == 0:
            return None
        if estimate < 0:
            estimate = None
    return Gap(view.first_entry_id, estimate)
