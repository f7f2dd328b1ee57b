"""The worker's periodic look at itself: progress line, lag, outbox backlog, stream gaps.

Runs between batches at most once per ``progress_interval_s`` (and right after start or a
reconnect for the gap check), never per event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

import redis

from consumer.contract.models import ConsumerSettings
from consumer.runtime.lag import lag, stream_view
from consumer.runtime.metrics import Metrics
from store import offsets, outbox
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


class Watched(Protocol):
    """What the monitor reads from the loop it watches: the narrow side of ``Worker``."""

    settings: ConsumerSettings
    client: redis.Redis
    db: Store
    metrics: Metrics
    clock: Callable[[], int]

    @property
    def totals(self) -> TotalsView: ...

    @property
    def offset(self) -> str: ...

    def check_position(self) -> bool: ...

    def progressed(self, lag_entries: int, lag_seconds: float) -> None: ...


log = logging.getLogger(__name__)


class Monitor:
    """Updates lag and backlog gauges, logs one INFO progress line per interval, finds gaps."""

    def __init__(self, worker: Watched) -> None:
        self.worker = worker
        self.gap_check_due = True
        self._last_tick = time.monotonic()
        self._entries_at_last_tick = 0
        self._reported_gap_at: str | None = None

    def maybe_tick(self) -> None:
        """Do the periodic work if it is due."""
        if self.gap_check_due:
            self.check_gap()
        now = time.monotonic()
        if now - self._last_tick >= self.worker.settings.progress_interval_s:
            self.tick(now)

    def tick(self, now: float) -> None:
        """Measure lag and backlog, log progress."""
        w = self.worker
        view = stream_view(w.client, w.settings.stream)
        read = offsets.entries_read(w.db.conn, w.settings.label)
        entries, seconds = lag(w.client, w.settings.stream, w.offset, w.clock(), view, read)
        pending = outbox.pending(w.db.conn)
        w.metrics.lag_entries.set(entries)
        w.metrics.lag_seconds.set(seconds)
        w.metrics.outbox_pending.set(pending)
        w.progressed(entries, seconds)
        rate = (w.totals.entries - self._entries_at_last_tick) / max(now - self._last_tick, 1e-9)
        log.info(
            "progress: %.0f events/s, lag %d entries (%.1fs), outbox %d; totals: %d consumed,"
            " %d applied, %d rejected, %d published, %d reconnects",
            rate,
            entries,
            seconds,
            pending,
            w.totals.entries,
            w.totals.applied,
            w.totals.rejected,
            w.totals.snapshots_published,
            w.totals.reconnects,
            extra={
                "rate": round(rate, 1),
                "lag_entries": entries,
                "lag_seconds": seconds,
                "outbox_pending": pending,
            },
        )
        self._last_tick = now
        self._entries_at_last_tick = w.totals.entries
        self.check_gap()

    def check_gap(self) -> None:
        """Look for a gap or a reset behind the committed offset (the worker acts on it)."""
        self.gap_check_due = False
        self.worker.check_position()
