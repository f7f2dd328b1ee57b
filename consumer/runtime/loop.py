"""The consume loop: read a batch, apply and commit it, publish its snapshots, repeat.

A turn asks the ownership part whether it still holds anything, never how many partitions
there are; it reads from the cursor, applies what the holdings keep, and publishes through
the relay. Redis outages and writer locks are waited out with capped exponential backoff
(``_guarded``, the one place that backs off); the loop resumes from the committed offset.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import redis

from consumer.runtime.batch import BatchResult, BatchTarget, RawEntry, commit_batch, decode_batch
from consumer.runtime.cpu import CpuSplit
from consumer.runtime.cursor import Cursor
from consumer.runtime.holdings import Holdings
from consumer.runtime.in_flight import InFlight
from consumer.runtime.monitor import Monitor
from consumer.runtime.offset_book import HeldOffsets
from consumer.runtime.outage import Outage
from consumer.runtime.ownership import REDIS_ERRORS, Ownership
from consumer.runtime.position import PositionWatch
from consumer.runtime.read_ahead import ReadAhead
from consumer.runtime.redis_client import Entries, last_entry_id, read_blocking, read_range
from consumer.runtime.relay import OutboxRelay
from consumer.runtime.status import WorkerStatus
from consumer.settings import ConsumerSettings
from store.backend import Store
from store.errors import LeaseLost, StoreBusy, StoreUnavailable
from store.stream_id import START_ID, entry_id_key

log = logging.getLogger(__name__)


class ConsumeLoop:
    """Reads, applies and publishes while the worker holds partitions; stands by when not."""

    def __init__(
        self,
        settings: ConsumerSettings,
        db: Store,
        client: redis.Redis,
        target: BatchTarget,
        clock: Callable[[], int],
        ownership: Ownership,
        offsets: HeldOffsets,
        relay: OutboxRelay,
        read_ahead: ReadAhead,
        in_flight: InFlight,
        monitor: Monitor,
        position: PositionWatch,
        status: WorkerStatus,
        cursor: Cursor,
        stop: threading.Event,
    ) -> None:
        self.settings = settings
        self.db = db
        self.client = client
        self.target = target
        self.clock = clock
        self.ownership = ownership
        self.holdings: Holdings = ownership.holdings
        self.offsets = offsets
        self.relay = relay
        self.read_ahead = read_ahead
        self.in_flight = in_flight
        self.monitor = monitor
        self.position = position
        self.status = status
        self.cursor = cursor
        self.cpu = CpuSplit()
        self._stop = stop
        self._backoff_s = settings.backoff_initial_s
        self._outage = Outage(settings.give_up_after_s if settings.drain else None)

    def run(self) -> None:
        """Turn until a stop is asked for or (``--drain``) the stream is drained; publish
        what is committed before returning."""
        ownership = self.ownership
        while not self._stop.is_set():
            if not ownership.holding and not self.guarded(ownership.become_active):
                break
            if ownership.holding and not self.guarded(self.turn):
                break
            if ownership.holding:
                self.status.lease_until(ownership.keeper.expires_at_ms)
            self.status.health.beat()
        if ownership.holding:
            self._final_publish()

    def guarded(self, step: Callable[[], bool]) -> bool:
        """Run one loop step; wait out Redis outages and writer locks instead of crashing.

        Returns the step's verdict (False: the loop is done), or True after a fault, so the
        loop goes on from the committed offset once the backoff has passed.
        """
        wait_s = self._backoff_s
        try:
            verdict = step()
        except redis.AuthenticationError:
            raise  # a wrong password does not heal with time: fail with a clear message
        except REDIS_ERRORS as error:
            self.in_flight.drop(unsettled=True)
            self.cursor.check_gap = True  # the stream may have been trimmed meanwhile
            self.status.redis_failed(error)
            wait_s = self._outage.wait_for("redis", error, self._backoff_s)
            log.warning("redis unavailable (%s); retrying in %.1fs", error, wait_s)
        except redis.exceptions.OutOfMemoryError as error:
            self.in_flight.drop(unsettled=False)
            log.warning("redis refused a write (%s); retrying in %.1fs", error, self._backoff_s)
        except StoreBusy as error:
            self.in_flight.drop(unsettled=False)
            self.status.store_busy()
            log.warning("%s; retrying in %.1fs", error, self._backoff_s)
        except StoreUnavailable as error:
            self.in_flight.drop(unsettled=True)
            self.status.store_failed(error)
            wait_s = self._outage.wait_for("the store", error, self._backoff_s)
            log.warning("%s; reconnecting in %.1fs", error, wait_s)
        except LeaseLost as error:
            self.ownership.lost(error)
            return True
        else:
            self._outage.over()
            if step == self.turn:
                self.status.health.reached("redis", "store")
            return verdict
        self._wait(wait_s)
        self._backoff_s = min(self._backoff_s * 2, self.settings.backoff_max_s)
        return True

    def _wait(self, seconds: float) -> None:
        """Wait out a backoff in steps, each one a beat of the loop: systemd's watchdog
        hears the loop itself all through a 10 s backoff, and a wedged loop still goes
        quiet (a timer thread would ping for it)."""
        step = self.status.beat_every_s
        end = time.monotonic() + seconds
        while not self._stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return
            self._stop.wait(min(left, step))
            self.status.health.beat()

    def turn(self) -> bool:
        """One round of the protocol: publish leftovers, read, apply+commit, publish.

        While a backlog lasts the round is pipelined: the next batch's read is sent before
        this batch is applied, and this batch's snapshots are sent after its commit and
        confirmed (then deleted from the outbox) before the next batch's commit.

        Returns False when the loop should end (drained).
        """
        s, cursor = self.settings, self.cursor
        if not self.ownership.still_holding():
            return True
        if not self.read_ahead.in_flight:
            self.publish()
        tick = self.monitor.maybe_tick(cursor.offset)
        if tick.lag is not None:
            self.status.progressed(*tick.lag)
            self.target.rejections.say_due()
        if tick.check_gap or cursor.check_gap:
            cursor.check_gap = False
            self.check_position()
        self.status.look_at_schema(self.db)
        if s.drain and self._caught_up():
            return False
        offset = cursor.offset
        entries = self._read()
        if not entries:
            self._backoff_s = s.backoff_initial_s
            if not s.drain:
                self.relay.look_for_others_rows()
            return not s.drain or cursor.offset != offset  # a rewind or a gap moved it: go on
        last_id = entries[-1][0].decode()
        if self._more_waiting(len(entries), last_id):
            self.read_ahead.send(s.stream, last_id, s.batch_size)
        self.apply(entries)
        self._backoff_s = s.backoff_initial_s
        self.ownership.keeper.renew_if_due()  # paused past the TTL: publish nothing
        self.status.published(self.relay.send())
        if not self.read_ahead.in_flight:
            self._confirm()
        return True

    # reading ---------------------------------------------------------------------------

    def _read(self) -> Entries:
        """The next batch after the offset, checking the stream under it when in doubt.

        A non-blocking read starts at the offset's own entry; if that entry is gone the
        batch may cross a gap and the position is checked before it is applied. With
        nothing new, a blocking XREAD waits; if that comes back empty too, the position is
        checked (a reset shows as a stream whose ids fell behind the offset).
        """
        s, offset = self.settings, self.cursor.offset
        taken = self.read_ahead.take(offset)
        if taken is None:
            taken = read_range(self.client, s.stream, offset, s.batch_size)
        entries, continues = taken
        if not continues and not self.check_position(entries):
            return []
        if entries or s.drain:
            return entries
        entries = read_blocking(self.client, s.stream, offset, s.batch_size, s.block_ms_read)
        if not entries:
            self.check_position()
        return entries

    def _more_waiting(self, count: int, last_id: str) -> bool:
        """Whether more entries are known to follow (a full batch, and a drain not at its end)."""
        if count < self.settings.batch_size:
            return False
        target = self.cursor.drain_target
        return target is None or entry_id_key(last_id) < entry_id_key(target)

    def _caught_up(self) -> bool:
        cursor = self.cursor
        if cursor.drain_target is None:
            cursor.drain_target = last_entry_id(self.client, self.settings.stream) or START_ID
        return entry_id_key(cursor.offset) >= entry_id_key(cursor.drain_target)

    def check_position(self, held: Entries | None = None) -> bool:
        """Look for a reset or a gap behind the offset and act on it (``PositionWatch``).

        Returns False when the offset was rewound: the entries in hand are not to be used.
        """
        moved = self.position.settle(self.cursor.offset, held)
        if moved is None:
            return True
        offset, rewound = moved
        self.cursor.offset = offset
        if rewound:
            self.cursor.drain_target = None
            self.in_flight.drop(unsettled=False)
        return not rewound

    # applying --------------------------------------------------------------------------

    def apply(self, entries: Sequence[RawEntry]) -> None:
        """Apply and commit one batch. A busy database (``StoreBusy``) or a lost lease
        (``LeaseLost``) leaves nothing written and goes to ``guarded``, the one place that
        backs off; the batch is read again from the unchanged offset."""
        started = time.perf_counter()
        result = self._apply_held(entries)
        self.relay.committed(result.snapshots)
        self.status.committed(result, time.perf_counter() - started)

    def _apply_held(self, entries: Sequence[RawEntry]) -> BatchResult:
        """Apply the entries of the partitions held, past each one's offset; every held
        partition's offset moves to the last entry read, in the batch's transaction. The
        previous batch's snapshots are confirmed between decoding and the commit, so Redis
        appends them while this batch decodes."""
        book, holdings = self.offsets, self.holdings
        spread = book.spread()
        if spread is None and holdings.holds_all:
            mine: Sequence[RawEntry] = entries  # nothing to skip (``Ownership._filter_reads``)
        else:
            mine = holdings.map.select(entries, holdings.held, spread)
        if spread is not None:
            keys = [entry_id_key(raw_id.decode()) for raw_id, _ in entries]
            book.read_after = {p: sum(1 for k in keys if k > at) for p, at in spread.items()}
        with self.cpu.applying():
            batch = decode_batch(
                mine,
                self.settings.stream,
                self.clock(),
                read_through=entries[-1][0].decode(),
                entries_read=len(entries),
            )
            self._confirm()
            result = commit_batch(self.target, batch)
        book.committed(result)
        self.cursor.offset = book.position
        self.status.skipped_others(len(entries) - len(mine))
        return result

    # publishing ------------------------------------------------------------------------

    def publish(self) -> None:
        """Publish everything committed and wait for Redis to confirm it."""
        self.status.published(self.relay.publish())

    def _confirm(self) -> None:
        """Wait for the snapshots sent after the previous batch (the read-ahead pipeline)."""
        self.status.published(self.relay.confirm())

    def _final_publish(self) -> None:
        """Publish what the outbox holds before exiting; if Redis is away, the rows wait."""
        try:
            self.publish()
        except (*REDIS_ERRORS, StoreBusy, StoreUnavailable) as error:
            log.warning("outbox not published on exit (%s); it is published on next start", error)
