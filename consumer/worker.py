"""The consume loop: read a batch, apply and commit it, publish its snapshots, repeat.

One ``Worker`` owns the loop and its lifecycle. A signal only sets a flag; the loop checks
it between batches, so the batch in hand always finishes and commits. Redis outages are
waited out with capped exponential backoff; the loop resumes from the committed offset.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType

import redis
import sqlite_utils

from consumer.batch import BatchResult, RawEntry, apply_batch
from consumer.metrics import Metrics
from consumer.models import ConsumerSettings
from consumer.monitor import Monitor
from consumer.read_ahead import ReadAhead
from consumer.redis_client import client_for, last_entry_id, read_batch, redact_url
from consumer.relay import OutboxRelay
from statemachine import RuntimeMachine, get_machine
from statemachine.errors import StoreBusy
from store import offsets
from store.checkpointer import Checkpointer
from store.database import database_file
from store.offsets import START_ID, entry_id_key
from store.record_cache import RecordCache

log = logging.getLogger(__name__)

REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError)
"""Errors that mean "Redis is away for now": back off and reconnect, never crash."""


GC_GEN0_THRESHOLD = 50_000
"""Allocations between young-generation collections while the loop runs (CPython: 700).

The loop allocates about ten short-lived objects per event and makes almost no reference
cycles; at the default threshold a collection runs every ~70 events and took ~7% of the
drain time. Cycles are still collected, just in larger, rarer passes.
"""


_gc_lock = threading.Lock()
_gc_users = 0
_gc_saved: tuple[int, int, int] | None = None


@contextlib.contextmanager
def fewer_gc_passes(gen0: int = GC_GEN0_THRESHOLD) -> Iterator[None]:
    """Raise the young-generation GC threshold for the block, then restore it.

    The threshold is process-wide: with several workers in one process (tests, embedding)
    the first one in raises it and the last one out restores it.
    """
    global _gc_users, _gc_saved
    with _gc_lock:
        if _gc_users == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(max(gen0, _gc_saved[0]), *_gc_saved[1:])
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0 and _gc_saved is not None:
                gc.set_threshold(*_gc_saved)


def wall_clock_ms() -> int:
    """Milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class Totals:
    """Running counts over the worker's lifetime."""

    entries: int = 0
    applied: int = 0
    snapshots_queued: int = 0
    snapshots_published: int = 0
    rejected: int = 0
    batches: int = 0
    reconnects: int = 0
    busy_retries: int = 0
    observers: list[Callable[[BatchResult, float], None]] = field(default_factory=list)


class Worker:
    """Consumes ``runtime:health_events`` into the store and publishes snapshots."""

    def __init__(
        self,
        settings: ConsumerSettings,
        db: sqlite_utils.Database,
        *,
        client: redis.Redis | None = None,
        machine: RuntimeMachine | None = None,
        clock: Callable[[], int] = wall_clock_ms,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.client = client or client_for(settings)
        self.machine = machine or get_machine()
        self.clock = clock
        self.relay = OutboxRelay(db, self.client, settings.lobby_stream)
        self.read_ahead = ReadAhead(self.client)
        self.cache = RecordCache()
        self.totals = Totals()
        self.metrics = metrics or Metrics()
        self.totals.observers.append(self.metrics.observe_batch)
        self.monitor = Monitor(self)
        self.metrics_port: int | None = None
        self._stop = threading.Event()
        self._signals = 0
        self._backoff_s = settings.backoff_initial_s
        self._offset = START_ID
        self._drain_target: str | None = None
        self._closed = False

    # lifecycle -------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Finish the batch in hand, publish the outbox, then return from ``run()``."""
        self._stop.set()

    def handle_signal(self, signum: int, frame: FrameType | None) -> None:
        """First SIGINT/SIGTERM: stop after this batch. Second: stop now (the batch rolls back)."""
        self._signals += 1
        if self._signals > 1:
            raise KeyboardInterrupt
        log.info("received %s: stopping after the batch in hand", signal.Signals(signum).name)
        self.request_stop()

    def install_signal_handlers(self) -> None:
        """Route SIGINT and SIGTERM to ``handle_signal`` (main thread only)."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self.handle_signal)

    def close(self) -> None:
        """Release the Redis connection; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.read_ahead.discard()
        self.relay.close()
        self.client.close()

    @property
    def offset(self) -> str:
        """The id of the last entry whose effects are committed."""
        return self._offset

    # the loop --------------------------------------------------------------------------

    def run(self) -> int:
        """Consume until stopped (or, with ``drain``, until caught up); return the exit code."""
        s = self.settings
        log.info(
            "consuming %s -> %s as %r (db %s, redis %s, batch %d, block %d ms)",
            s.stream,
            s.lobby_stream,
            s.label,
            s.db_path,
            redact_url(s.redis_url),
            s.batch_size,
            s.block_ms,
        )
        if s.metrics_port is not None:
            self.metrics_port = self.metrics.serve(s.metrics_port, s.metrics_host)
            log.info("metrics on http://%s:%d/metrics", s.metrics_host, self.metrics_port)
        self.metrics.up.set(1)
        checkpointer = Checkpointer(database_file(self.db))
        checkpointer.start(self.db.conn)
        try:
            self._offset = offsets.load(self.db.conn, s.label) or START_ID
            with fewer_gc_passes():
                while not self._stop.is_set():
                    if not self._guarded(self._iteration):
                        break
            self._final_publish()
        finally:
            checkpointer.stop()
            self.db.conn.execute("PRAGMA wal_autocheckpoint=1000")
            self.metrics.up.set(0)
            self.close()
        log.info(
            "stopped at %s: %d entries, %d applied, %d rejected, %d snapshots published",
            self._offset,
            self.totals.entries,
            self.totals.applied,
            self.totals.rejected,
            self.totals.snapshots_published,
        )
        return 0

    def _guarded(self, step: Callable[[], bool]) -> bool:
        """Run one loop step; wait out Redis outages and writer locks instead of crashing.

        Returns the step's verdict (False: the loop is done), or True after a fault, so the
        loop goes on from the committed offset once the backoff has passed.
        """
        try:
            return step()
        except redis.AuthenticationError:
            raise  # a wrong password does not heal with time: fail with a clear message
        except REDIS_ERRORS as error:
            self.read_ahead.discard()
            self.totals.reconnects += 1
            self.metrics.reconnects.inc()
            self.monitor.gap_check_due = True  # the stream may have been trimmed meanwhile
            log.warning("redis unavailable (%s); retrying in %.1fs", error, self._backoff_s)
        except StoreBusy as error:
            self.totals.busy_retries += 1
            log.warning("%s; retrying in %.1fs", error, self._backoff_s)
        self._stop.wait(self._backoff_s)
        self._backoff_s = min(self._backoff_s * 2, self.settings.backoff_max_s)
        return True

    def _final_publish(self) -> None:
        """Publish what the outbox holds before exiting; if Redis is away, the rows wait."""
        try:
            self._publish()
        except (*REDIS_ERRORS, StoreBusy) as error:
            log.warning("outbox not published on exit (%s); it is published on next start", error)

    def _publish(self) -> None:
        """Publish everything committed and wait for Redis to confirm it."""
        self._count_published(self.relay.publish())

    def _confirm_published(self) -> None:
        """Wait for the snapshots sent after the previous batch (the read-ahead pipeline)."""
        self._count_published(self.relay.confirm())

    def _count_published(self, sent: int) -> None:
        if sent:
            self.totals.snapshots_published += sent
            self.metrics.published.inc(sent)

    def _caught_up(self) -> bool:
        if self._drain_target is None:
            self._drain_target = last_entry_id(self.client, self.settings.stream) or START_ID
        return entry_id_key(self._offset) >= entry_id_key(self._drain_target)

    def _iteration(self) -> bool:
        """One round of the protocol: publish leftovers, read, apply+commit, publish.

        While a backlog lasts the round is pipelined: the next batch's XREAD is sent before
        this batch is applied, and this batch's snapshots are sent after its commit and
        confirmed (then deleted from the outbox) before the next batch's commit.

        Returns False when the loop should end (drained).
        """
        s = self.settings
        if not self.read_ahead.in_flight:
            self._publish()
        self.monitor.maybe_tick()
        if s.drain and self._caught_up():
            return False
        entries = self.read_ahead.take(self._offset)
        if entries is None:
            block = None if s.drain else s.block_ms
            entries = read_batch(self.client, s.stream, self._offset, s.batch_size, block)
        self._backoff_s = s.backoff_initial_s
        if not entries:
            return not s.drain
        last_id = entries[-1][0].decode()
        if self._more_waiting(len(entries), last_id):
            self.read_ahead.send(s.stream, last_id, s.batch_size)
        self._apply(entries)
        self._count_published(self.relay.send())
        if not self.read_ahead.in_flight:
            self._confirm_published()
        return True

    def _more_waiting(self, count: int, last_id: str) -> bool:
        """Whether more entries are known to follow (a full batch, and a drain not at its end)."""
        if count < self.settings.batch_size:
            return False
        target = self._drain_target
        return target is None or entry_id_key(last_id) < entry_id_key(target)

    def _apply(self, entries: Sequence[RawEntry]) -> None:
        started = time.perf_counter()
        while True:
            try:
                result = apply_batch(
                    self.db,
                    self.machine,
                    entries,
                    stream=self.settings.stream,
                    label=self.settings.label,
                    now_ms=self.clock(),
                    cache=self.cache,
                    decoded_hook=self._confirm_published,
                )
                break
            except StoreBusy as error:
                # Keep the entries in hand: the offset did not move, nothing was written.
                self.totals.busy_retries += 1
                log.warning("%s; retrying the batch in %.1fs", error, self._backoff_s)
                time.sleep(self._backoff_s)
                self._backoff_s = min(self._backoff_s * 2, self.settings.backoff_max_s)
        self.relay.committed(result.snapshots)
        self._offset = result.last_entry_id
        self._count(result, time.perf_counter() - started)

    def _count(self, result: BatchResult, seconds: float) -> None:
        t = self.totals
        t.batches += 1
        t.entries += result.entries
        t.applied += result.applied
        t.snapshots_queued += len(result.snapshots)
        t.rejected += sum(result.rejected.values())
        for observer in t.observers:
            observer(result, seconds)
