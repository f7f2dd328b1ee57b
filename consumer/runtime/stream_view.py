"""Where the offset stands in the stream: how far behind, trimmed past it, or reset under it.

Kept off the hot path: the worker calls these at start, after a reconnect, when a read
comes back empty or does not start at the offset's own entry, and on its progress tick.

What each server generation gives:

- every version: ``last-generated-id`` (never decreases while the key lives), the first
  entry and the length;
- Redis 7+: ``entries-added``, the count of entries ever added to the key, which makes
  a lost-entry estimate possible and shows a stream that was deleted and recreated. (7.0
  does not update ``max-deleted-entry-id`` on XTRIM, so that field is not used.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from consumer.runtime.wording import counted
from store.stream_id import START_ID, entry_id_key

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

    resume_at: str | None
    """The first surviving entry (reading goes on from it), or None: nothing is left."""
    skipped_estimate: int | None
    """Known when Redis (7+) reports entries-added; None on older servers."""


def find_gap(
    view: StreamView | None, offset: str, entries_read: int | None, held_below_first: int = 0
) -> Gap | None:
    """A gap: unread entries after ``offset`` are gone.

    - The offset is older than the first entry still in the stream. On Redis 7+,
      ``entries-added`` minus what this consumer read minus what remains (minus
      ``held_below_first``: entries of a batch in hand that were trimmed after they were
      read) estimates the loss, and an estimate of 0 means only read entries were trimmed.
      Older servers cannot tell that case apart, so a gap is reported with no estimate.
    - The stream is empty but its last-generated id is past the offset: whatever came
      after the offset was trimmed away unread.
    """
    if view is None or offset == START_ID:
        return None  # a consumer that never read anything has lost nothing
    estimate = None
    if view.entries_added is not None and entries_read is not None:
        estimate = view.entries_added - entries_read - view.length - held_below_first
    if view.first_entry_id is None:
        if entry_id_key(view.last_generated_id) <= entry_id_key(offset):
            return None
        return Gap(None, max(estimate, 1) if estimate is not None else None)
    if entry_id_key(offset) >= entry_id_key(view.first_entry_id):
        return None
    if estimate is not None and estimate <= 0:
        return None
    return Gap(view.first_entry_id, estimate)


@dataclass(frozen=True)
class Reset:
    """The stream no longer continues from the offset: Redis lost or replaced its data."""

    last_generated_id: str
    why: str
    """One clause for the log and ``check``: which evidence showed it."""


def find_reset(view: StreamView | None, offset: str, entries_read: int | None) -> Reset | None:
    """A reset: the stream's ids went back behind ``offset``, or (Redis 7+) the key was
    recreated, so ``entries-added`` is below what this consumer has already read.

    A missing stream is a reset too (its last id is in effect 0-0 and nothing was added to
    it): Redis lost or deleted the stream the offset points into, and entries written to
    a new one would otherwise be read on from an offset that means nothing there.
    """
    if offset == START_ID:
        return None
    if view is None:
        return Reset(START_ID, "it does not exist any more (Redis lost or deleted it)")
    if entry_id_key(view.last_generated_id) < entry_id_key(offset):
        return Reset(
            view.last_generated_id,
            f"its last id {view.last_generated_id} is behind the stored offset {offset}",
        )
    added = view.entries_added
    if added is not None and entries_read is not None and added < entries_read:
        return Reset(
            view.last_generated_id,
            f"it was recreated: {counted(added, 'entry was', 'entries were')} ever added to it,"
            f" fewer than the {entries_read} this label has read",
        )
    return None
