"""Watching the offset's place in the stream: gaps (entries trimmed unread) and resets.

The worker asks at start, after a reconnect, when a read comes back empty and when a batch
does not start at the offset's own entry (``redis_client.split_at_offset``), so a gap is
reported by the batch that crosses it. Each finding is logged as one ERROR and counted
once, then acted on: a gap is accounted and reading goes on, a reset stops the worker or
rewinds it, as ``--on-stream-reset`` says.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import redis

from consumer.errors import StreamReset
from consumer.runtime.metrics import Metrics
from consumer.runtime.offset_book import HeldOffsets
from consumer.runtime.redis_client import Entries
from consumer.runtime.stream_view import Gap, Reset, find_gap, find_reset, stream_view
from consumer.runtime.wording import counted
from consumer.settings import ConsumerSettings
from store.backend import Store
from store.sql import Sql
from store.stream_id import START_ID, entry_id_key

log = logging.getLogger(__name__)


def reset_remedy(label: str, db: str) -> str:
    """What an operator runs to read a reset stream from its start."""
    return (
        f"to read it as it is now from its start, run 'healthfsm offsets set {label} 0-0 --yes"
        f" --db {db}' or start with --on-stream-reset rewind"
    )


def _held_below(entries: Sequence[tuple[bytes, object]], first_entry_id: str | None) -> int:
    """Entries in hand that are older than the stream's first entry (trimmed after reading)."""
    if first_entry_id is None or not entries:
        return len(entries) if first_entry_id is None else 0
    first = entry_id_key(first_entry_id)
    return sum(1 for raw_id, _ in entries if entry_id_key(raw_id.decode()) < first)


class PositionWatch:
    """Finds gaps and resets behind an offset, reports each one once, and acts on it."""

    def __init__(
        self,
        client: redis.Redis,
        settings: ConsumerSettings,
        metrics: Metrics,
        db: Store,
        fenced: Callable[[], AbstractContextManager[Sql]],
        clock: Callable[[], int],
        book: HeldOffsets,
    ) -> None:
        """``fenced`` opens a write transaction that holds only while the lease is ours
        (``PartitionKeeper.fenced``): moving the offset is a write like a batch's. ``book``
        keeps the offsets of the partitions held."""
        self.client = client
        self.settings = settings
        self.stream = settings.stream
        self.metrics = metrics
        self.db = db
        self.fenced = fenced
        self.clock = clock
        self.book = book
        self._reported: set[tuple[str, str | None]] = set()

    def settle(self, offset: str, held: Entries | None = None) -> tuple[str, bool] | None:
        """Look behind ``offset``; None when nothing moves it, else (new offset, rewound).

        A gap is reported and accounted (its estimate added to ``entries_read``, or, with
        nothing left to read, the offset moved to the stream's last id) so it is reported
        once and ``check`` passes again; reading goes on from the first surviving entry. A
        reset raises ``StreamReset`` under ``--on-stream-reset stop``, or rewinds.
        """
        s = self.settings
        found = self.inspect(offset, self.book.entries_read(self.db.conn), held)
        if isinstance(found, Reset):
            self.report_reset(found, s.label, offset)
            if s.on_stream_reset == "stop":
                raise StreamReset(
                    f"stream {s.stream} was reset: {found.why} (label {s.label!r});"
                    f" {reset_remedy(s.label, self.db.location)}"
                )
            log.error(
                "--on-stream-reset rewind: reading %s again from its start (was at %s)",
                s.stream,
                offset,
            )
            with self.fenced() as conn:
                self.book.rewind(conn, START_ID, self.clock())
            return START_ID, True
        if isinstance(found, Gap) and self.report_gap(found, offset):
            return self._account(found, offset)
        return None

    def _account(self, gap: Gap, offset: str) -> tuple[str, bool] | None:
        lost = gap.skipped_estimate or 0
        if gap.resume_at is None:
            view = stream_view(self.client, self.stream)
            if view is None:
                return None
            with self.fenced() as conn:
                self.book.save(conn, view.last_generated_id, self.clock(), lost)
            return view.last_generated_id, False
        if lost:
            with self.fenced() as conn:
                self.book.save(conn, offset, self.clock(), lost)
        return None

    def inspect(
        self, offset: str, entries_read: int | None, held: Entries | None = None
    ) -> Gap | Reset | None:
        """One XINFO STREAM: a reset, else a gap, else None. ``held``: the batch in hand."""
        view = stream_view(self.client, self.stream)
        reset = find_reset(view, offset, entries_read)
        if reset is not None:
            return reset
        first = view.first_entry_id if view is not None else None
        return find_gap(view, offset, entries_read, _held_below(held or [], first))

    def report_reset(self, reset: Reset, label: str, offset: str) -> None:
        """One ERROR naming both ids, and the reset counter."""
        self.metrics.stream_resets.inc()
        log.error(
            "stream %s was reset under label %r: %s (stored offset %s)",
            self.stream,
            label,
            reset.why,
            offset,
            extra={"entry_id": offset},
        )

    def report_gap(self, gap: Gap, offset: str) -> bool:
        """One ERROR and the gap counters, once per gap; whether it was new."""
        key = (offset, gap.resume_at)
        if key in self._reported:
            return False
        self._reported.add(key)
        self.metrics.gaps.inc()
        if gap.skipped_estimate is not None:
            self.metrics.gap_entries.inc(gap.skipped_estimate)
        skipped = (
            "an unknown number of entries were never read (Redis before 7 does not count"
            " added entries)"
            if gap.skipped_estimate is None
            else f"about {counted(gap.skipped_estimate, 'entry was', 'entries were')} never read"
        )
        where = (
            f"going on from the first surviving entry {gap.resume_at}"
            if gap.resume_at is not None
            else "nothing is left to read; going on with new entries"
        )
        log.error(
            "stream %s was trimmed past the stored offset %s: %s; %s",
            self.stream,
            offset,
            skipped,
            where,
            extra={"entry_id": gap.resume_at, "skipped_estimate": gap.skipped_estimate},
        )
        return True
