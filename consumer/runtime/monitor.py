"""The worker's periodic look at itself: progress line, lag, outbox backlog, stream gaps.

Runs between batches at most once per ``progress_interval_s`` (and right after start or a
reconnect for the gap check), never per event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol

import redis

from consumer.runtime.metrics import Metrics
from consumer.runtime.offset_book import HeldOffsets
from consumer.runtime.stream_view import StreamView, lag, stream_view
from consumer.runtime.wording import counted
from consumer.settings import ConsumerSettings
from store import outbox, partitions
from store.backend import Store


class TotalsView(Protocol):
    """The running counts the progress line reports."""

    @property
    def entries(self) -> int: ...

    @property
    def applied(self) -> int: ...

    @property
    def rejected(self) -> int: ...

    @property
    def snapshots_published(self) -> int: ...

    @property
    def reconnects(self) -> int: ...


class Tick(NamedTuple):
    """What a look found for the loop to act on: the lag it measured (entries, seconds)
    when the interval had passed, and whether the stream under the offset is to be checked."""

    lag: tuple[int, float] | None
    check_gap: bool


log = logging.getLogger(__name__)


class Monitor:
    """Updates lag and backlog gauges, logs one INFO progress line per interval, and says
    when the loop should look for gaps. It reads; the loop acts on what it returns."""

    def __init__(
        self,
        client: redis.Redis,
        db: Store,
        settings: ConsumerSettings,
        metrics: Metrics,
        totals: TotalsView,
        clock: Callable[[], int],
        book: HeldOffsets,
        describe_held: Callable[[], str],
    ) -> None:
        self.client = client
        self.db = db
        self.settings = settings
        self.metrics = metrics
        self.totals = totals
        self.clock = clock
        self.book = book
        """Where the offsets of the partitions held are kept."""
        self.describe_held = describe_held
        """Which partitions this worker holds, for the progress line."""
        self.gap_check_due = True
        self._last_tick = time.monotonic()
        self._entries_at_last_tick = 0

    def maybe_tick(self, offset: str) -> Tick:
        """Measure and log if the interval has passed; say whether a gap check is due (after
        start or a reconnect, and after every measurement)."""
        measured = None
        now = time.monotonic()
        if now - self._last_tick >= self.settings.progress_interval_s:
            measured = self.tick(now, offset)
            self.gap_check_due = True
        due, self.gap_check_due = self.gap_check_due, False
        return Tick(measured, due)

    def tick(self, now: float, offset: str) -> tuple[int, float]:
        """Measure lag and backlog, log progress; return the lag (entries, seconds)."""
        s, totals = self.settings, self.totals
        view = stream_view(self.client, s.stream)
        read = self.book.entries_read(self.db.conn)
        entries, seconds = lag(self.client, s.stream, offset, self.clock(), view, read)
        self._partition_lag(view)
        held = f", partitions {self.describe_held()}"
        pending = outbox.pending(self.db.conn)
        self.metrics.lag_entries.set(entries)
        self.metrics.lag_seconds.set(seconds)
        self.metrics.outbox_pending.set(pending)
        rate = (totals.entries - self._entries_at_last_tick) / max(now - self._last_tick, 1e-9)
        log.info(
            "progress: %.0f events/s, lag %s (%.1fs), outbox %d%s; totals: %d consumed,"
            " %d applied, %d rejected, %d published, %s",
            rate,
            counted(entries, "entry"),
            seconds,
            pending,
            held,
            totals.entries,
            totals.applied,
            totals.rejected,
            totals.snapshots_published,
            counted(totals.reconnects, "reconnect"),
            extra={
                "rate": round(rate, 1),
                "lag_entries": entries,
                "lag_seconds": seconds,
                "outbox_pending": pending,
            },
        )
        self._last_tick = now
        self._entries_at_last_tick = totals.entries
        return entries, seconds

    def _partition_lag(self, view: StreamView | None) -> None:
        """The lag of each held partition (they differ for a while after a takeover)."""
        stored = partitions.load_offsets(self.db.conn, self.settings.label)
        now = self.clock()
        for partition, at in self.book.at.items():
            row = stored.get(partition)
            read = None if row is None else row.entries_read
            entries, _ = lag(self.client, self.settings.stream, at, now, view, read)
            self.metrics.partition_lag_entries.labels(str(partition)).set(entries)
