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
from types import FrameType

import redis

from consumer.contract.fence import fence_key, marks_key
from consumer.errors import PublishFenced
from consumer.runtime.batch import BatchResult, RawEntry, apply_batch
from consumer.runtime.clock import format_ms, wall_clock_ms
from consumer.runtime.cpu import CpuSplit
from consumer.runtime.fence import Fence, raise_fence
from consumer.runtime.health import HealthState, Role, liveness_bound_s
from consumer.runtime.http_endpoints import serve
from consumer.runtime.metrics import Metrics
from consumer.runtime.monitor import Monitor
from consumer.runtime.offset_book import HeldOffsets
from consumer.runtime.outage import Outage
from consumer.runtime.partition_keeper import PartitionKeeper, Taken
from consumer.runtime.partition_map import PartitionMap
from consumer.runtime.position import PositionWatch
from consumer.runtime.read_ahead import ReadAhead
from consumer.runtime.redis_client import (
    Entries,
    client_for,
    last_entry_id,
    read_blocking,
    read_range,
    redact_url,
    skip_on_read,
)
from consumer.runtime.relay import OutboxRelay, Pending
from consumer.runtime.start_offset import first_offset, refuse_an_unconfirmed_new_label
from consumer.runtime.systemd import Notifier
from consumer.runtime.wording import counted
from consumer.settings import ConsumerSettings
from statemachine import RuntimeMachine, get_machine
from store import SCHEMA_VERSION, outbox, partitions
from store.backend import Store
from store.errors import (
    LeaseHeld,
    LeaseLost,
    Repartitioned,
    StoreBusy,
    StoreError,
    StoreUnavailable,
)
from store.partitions import PartitionLease
from store.sql import Sql
from store.stream_id import START_ID, entry_id_key

log = logging.getLogger(__name__)

REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError)
"""Errors that mean "Redis is away for now": back off and reconnect, never crash."""


STANDBY_PING_S = 2.0
"""How often a standby checks that Redis answers, for its readiness."""

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


__all__ = ["Totals", "Worker", "health_for", "wall_clock_ms"]


def health_for(settings: ConsumerSettings) -> HealthState:
    """The probes' state for a worker with these settings (its liveness bound)."""
    bound = liveness_bound_s(settings.block_ms_read, settings.lease_ttl_s, settings.backoff_max_s)
    return HealthState(bound)


class Totals:
    """Running counts over the worker's lifetime, read from its Prometheus metrics.

    The metrics are the one place anything is counted; this is a view with plain names
    for logs, tests and the bench. ``observers`` are called after each committed batch. One
    count is its own: ``snapshots_committed``, what this worker's batches queued, so the
    stop line tells them from rows others left in a shared outbox.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics
        self.observers: list[Callable[[BatchResult, float], None]] = [self._committed]
        self.snapshots_committed = 0

    def _committed(self, result: BatchResult, _: float) -> None:
        self.snapshots_committed += len(result.snapshots)

    def stop_line(self) -> str:
        """``8 entries, 8 applied, 0 rejected, 6 snapshots published`` and, when the relay
        also published rows it found in the outbox (an earlier run's, an admin change's,
        another label's), how many of those."""
        published = self.snapshots_published
        own = min(published, self.snapshots_committed)
        line = (
            f"{counted(self.entries, 'entry')}, {self.applied} applied, {self.rejected}"
            f" rejected, {counted(own, 'snapshot')} published"
        )
        if published > own:
            line += f", and {published - own} more found in the outbox"
        return line

    @property
    def entries(self) -> int:
        return self._m.total(self._m.consumed)

    @property
    def applied(self) -> int:
        return self._m.total(self._m.applied)

    @property
    def rejected(self) -> int:
        return self._m.total(self._m.rejected)

    @property
    def snapshots_published(self) -> int:
        return self._m.total(self._m.published)

    @property
    def batches(self) -> int:
        return self._m.batches()

    @property
    def reconnects(self) -> int:
        return self._m.total(self._m.reconnects)

    @property
    def busy_retries(self) -> int:
        return self._m.total(self._m.busy_retries)


class Worker:
    """Consumes ``runtime:health_events`` into the store and publishes snapshots."""

    def __init__(
        self,
        settings: ConsumerSettings,
        db: Store,
        *,
        client: redis.Redis | None = None,
        machine: RuntimeMachine | None = None,
        clock: Callable[[], int] = wall_clock_ms,
        metrics: Metrics | None = None,
        health: HealthState | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.client = client or client_for(settings)
        self.machine = machine or get_machine()
        self.clock = clock
        self.fence_key = fence_key(settings.lobby_stream, settings.label)
        self.marks_key = marks_key(
            settings.lobby_stream, settings.label, outbox.publisher_id(db.conn)
        )
        self.relay = OutboxRelay(db, self.client, settings.lobby_stream, fence=self._fence_for)
        self.read_ahead = ReadAhead(self.client)
        self.cache = db.record_loader()
        self.metrics = metrics or Metrics()
        self.totals = Totals(self.metrics)
        self.totals.observers.insert(0, self.metrics.observe_batch)  # the counts first
        # on the wall clock, whatever ``clock`` says: other machines compare its rows
        self.parts = PartitionKeeper(db, settings.label, settings.lease_ttl_s)
        self.map = PartitionMap(1)
        self.held_offsets = HeldOffsets(
            settings.label, self._owns, lambda: self.parts.holds_all and self.parts.partitions == 1
        )
        self.monitor = Monitor(
            self.client,
            db,
            settings,
            self.metrics,
            self.totals,
            clock,
            self.held_offsets,
            self.describe_held,
        )
        self.position = PositionWatch(
            self.client, settings, self.metrics, db, self._fenced, clock, self.held_offsets
        )
        self.cpu = CpuSplit()
        self._joined = False
        self._rebalanced_at = float("-inf")
        self._announced_holders: list[str] = []
        self.metrics_port: int | None = None
        self._block_ms = settings.block_ms_read
        self.health = health or health_for(settings)
        self.notifier = notifier or Notifier()
        self.health.listeners.append(lambda _: self.notifier.watchdog())
        self._looked_at_schema = float("-inf")
        self._pinged_redis = float("-inf")
        self._stop = threading.Event()
        self._signals = 0
        self._backoff_s = settings.backoff_initial_s
        self._offset = START_ID
        self._drain_target: str | None = None
        self._outage = Outage(settings.give_up_after_s if settings.drain else None)
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
        self.health.role = Role.STOPPING
        self.notifier.stopping()
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
        self.notifier.close()
        self._drop_in_flight(unsettled=True)
        self.client.close()

    @property
    def offset(self) -> str:
        """The id of the last entry whose effects are committed."""
        return self._offset

    # the loop --------------------------------------------------------------------------

    def run(self) -> None:
        """Consume until stopped (or, with ``drain``, until caught up); failures raise.

        The loop runs only while this worker holds its label's lease; without it, it stands
        by (``--drain`` raises ``LeaseHeld`` instead of waiting).
        """
        s = self.settings
        refuse_an_unconfirmed_new_label(self.db, s)  # before a word is logged: one line, exit 1
        if s.metrics_port is not None and self.metrics_port is None:  # not served by the CLI
            self.metrics_port = serve(
                self.metrics.registry, self.health, s.metrics_port, s.metrics_host
            )
        self.metrics.up.set(1)
        try:
            with fewer_gc_passes(), self.db.background():
                try:
                    self._loop()
                except BaseException as error:
                    self.health.fatal(error)
                    raise
                finally:
                    self.health.role = Role.STOPPING
                    self._release_lease()  # first: a standby takes over at once
        finally:
            self.metrics.up.set(0)
            self.close()
        log.info("stopped at %s: %s", self._offset, self.totals.stop_line())

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self.holding and not self._guarded(self._become_active):
                break
            if self.holding and not self._guarded(self._iteration):
                break
            self.health.beat()
        if self.holding:
            self._final_publish()

    @property
    def holding(self) -> bool:
        """Whether this worker believes it may consume: it holds a partition."""
        return self.parts.active

    def _owns(self, game_id: str) -> bool:
        """Whether ``game_id``'s records and outbox rows are this worker's (its partition is
        held)."""
        return self.map.of(game_id) in self.parts.held

    def _keeps(self, raw_game_id: bytes | None) -> bool:
        """Whether an entry with this raw ``game_id`` is applied here (its fields are built
        as it is read; another partition's entry is read for its id alone)."""
        return self.map.holds(raw_game_id, self.parts.held)

    @contextlib.contextmanager
    def _fenced(self) -> Iterator[Sql]:
        """A write transaction that commits only while what this worker holds is its own."""
        with self.parts.fenced() as conn:
            yield conn

    # the lease -------------------------------------------------------------------------

    def _become_active(self) -> bool:
        """Take a share of the label's partitions, waiting as a standby while other live
        workers hold them all. Returns False when a stop was requested while standing by.
        """
        while not self._stop.is_set():
            count = partitions.count(self.db.conn, self.settings.label)
            if self._take_partitions(count):
                return True
            self.health.beat()
            self._stop.wait(self.settings.lease_poll_s)
        return False

    def _standing_by(self, holder: PartitionLease) -> None:
        """What a standby tells the probes and systemd, and what it checks for them: that
        Redis answers (it will need it on takeover) and that the schema is current."""
        self.health.role = Role.STANDBY
        self.health.holding(holder.describe(), holder.expires_at_ms)
        self.notifier.ready(f"standby: label {self.settings.label!r} is held by {holder.holder}")
        now = time.monotonic()
        if now - self._pinged_redis >= STANDBY_PING_S:
            self._pinged_redis = now
            try:
                self.client.ping()
            except REDIS_ERRORS as error:
                self.health.failing("redis", error)
            else:
                self.health.reached("redis")
        self._look_at_schema()

    def _look_at_schema(self) -> None:
        """Readiness fails while the store's schema is not the one this worker runs on (a
        newer release migrated it, say); looked at once per progress interval."""
        now = time.monotonic()
        if now - self._looked_at_schema < self.settings.progress_interval_s:
            return
        self._looked_at_schema = now
        found = self.db.schema_version()
        if found == SCHEMA_VERSION:
            self.health.reached("schema")
        else:
            self.health.failing(
                "schema",
                f"the store's schema is version {found}, this worker runs on {SCHEMA_VERSION}"
                " (healthfsm migrate, or run the release that matches it)",
            )

    def _lost_lease(self, error: LeaseLost) -> None:
        """The fence failed: the batch in hand rolled back and nothing held is ours any
        more. A re-partition is planned (INFO, counted as a rebalance); anything else (a
        pause past the TTL, a takeover) is a lost lease (ERROR, ``lease_lost``)."""
        if isinstance(error, Repartitioned):
            log.info("%s (the batch in hand rolled back and is read again)", error)
            self.metrics.rebalances.labels("repartitioned").inc()
        else:
            log.error("%s: the batch in hand rolled back; publishing stops, standing by", error)
            self.metrics.lease_lost.inc()
        self.health.role = Role.STANDBY
        self.parts.forget()
        self.held_offsets.at.clear()
        self.metrics.lease_held.set(0)
        self.metrics.partitions_held.set(0)
        self.metrics.partition_lag_entries.clear()
        self._drop_in_flight(unsettled=True)

    def _release_lease(self) -> None:
        self.metrics.lease_held.set(0)
        self.metrics.partitions_held.set(0)
        if not self._joined:
            return
        try:
            self._leave_partitions()
        except StoreError as error:
            log.warning("partitions not released (%s); others take them when they expire", error)

    # partitions ------------------------------------------------------------------------

    def _take_partitions(self, count: int) -> bool:
        """Join the label's workers and take free partitions up to the fair share; stand by
        (or, with ``--drain``, raise ``LeaseHeld``) when none is free. Whether any was taken."""
        if not self._joined:
            self.parts.join()
            self._joined = True
        taken, seen = self.parts.acquire(count)
        self.health.reached("store")
        if taken:
            try:
                self._took_partitions(taken, count)
            except BaseException:
                self._release_lease()
                raise
            return True
        live = [row for row in seen.values() if row.holder and row.live(self.parts.clock())]
        holders = sorted({row.holder for row in live})
        held_by = _held_by(self.settings.label, count, live)
        if self.settings.drain:
            raise LeaseHeld(f"{held_by}; another worker is consuming (--drain does not wait)")
        if live:
            self._standing_by(min(live, key=lambda row: row.expires_at_ms))
        if holders != self._announced_holders:
            log.info(
                "standing by as %s: %s (a share of %d for %d worker%s)",
                self.parts.holder,
                held_by,
                self.parts.share,
                len(self.parts.workers),
                "" if len(self.parts.workers) == 1 else "s",
            )
            self._announced_holders = holders
        return False

    def _took_partitions(self, taken: list[Taken], count: int) -> None:
        """Start on newly taken partitions: their offsets, and their last holder's outbox
        rows before anything new (``OutboxRelay.rescan``)."""
        s = self.settings
        first = len(self.parts.held) == len(taken)  # held nothing before
        if self.map.partitions != count:
            self.map = PartitionMap(count)
        if first:
            self.health.role = Role.ACTIVE
            log.info(
                "consuming %s -> %s as %r, %s shared with %d worker%s (db %s, redis %s,"
                " batch %d, block %d ms, holder %s)",
                s.stream,
                s.lobby_stream,
                s.label,
                _partitions(count),
                len(self.parts.workers),
                "" if len(self.parts.workers) == 1 else "s",
                self.db.location,
                redact_url(s.redis_url),
                s.batch_size,
                self._block_ms,
                self.parts.holder,
            )
        # a last holder's unconfirmed snapshots are published again from the outbox table
        self._drop_in_flight(unsettled=first)
        planned = 0
        for partition, before in taken:
            epoch = self.parts.held[partition]
            if not before.holder or before.holder == self.parts.holder:
                planned += 1
                log.info(
                    "holding the lease of partition %d of %d of label %r (epoch %d)",
                    partition,
                    count,
                    s.label,
                    epoch,
                )
                continue
            self.metrics.lease_takeovers.inc()
            released = before.expires_at_ms == 0
            planned += released
            log.info(
                "took over the lease of partition %d of %d of label %r from %s (%s), now"
                " epoch %d",
                partition,
                count,
                s.label,
                before.describe(),
                "released" if released else "expired or dead",
                epoch,
            )
        self.metrics.rebalances.labels("taken").inc(planned)
        self.metrics.rebalances.labels("taken_over").inc(len(taken) - planned)
        self._raise_fence([partition for partition, _ in taken])
        self._place_partitions([partition for partition, _ in taken], count)
        self.relay.rescan()
        self._after_rebalance()
        self.health.holding(self.parts.holder, self.parts.expires_at_ms)
        self.notifier.ready(f"active: label {s.label!r}, partitions {self.describe_held()}")

    def _raise_fence(self, taken: list[int]) -> None:
        """Before publishing anything for the partitions taken, raise their fence at Redis to
        their epochs: from now on no earlier holder's append lands, whenever it arrives."""
        held = self.parts.held
        stale = raise_fence(
            self.client, self.fence_key, {p: held[p] for p in taken}, self.parts.floor
        )
        if stale:
            raise PublishFenced(
                f"label {self.settings.label!r}: the fence at Redis is already past the epoch"
                f" taken for partitions {', '.join(f'{p} (epoch {e})' for p, e in stale.items())}"
            )

    def _fence_for(self, rows: Pending) -> Fence:
        """The fence a chunk of outbox rows is published under: the epoch this worker holds
        for each of their partitions (0, which Redis refuses, for one it does not hold)."""
        held = self.parts.held
        if self.parts.holds_all and self.parts.partitions == 1:
            return Fence(self.fence_key, held, self.marks_key)
        of = self.map.of
        epochs = {p: held.get(p, 0) for p in {of(r.game_id) for _, r in rows}}
        return Fence(self.fence_key, epochs, self.marks_key)

    def _place_partitions(self, taken: list[int], count: int) -> None:
        """Read the taken partitions' offsets; a label that never committed starts where
        ``--start-from`` says (or at the stream's beginning), for every partition at once."""
        stored = partitions.load_offsets(self.db.conn, self.settings.label)
        if any(p not in stored for p in taken):
            entry_id, read = first_offset(self.db, self.client, self.settings)
            with self._fenced() as conn:
                partitions.init_offsets(
                    conn, self.settings.label, count, entry_id, read, self.clock()
                )
            stored = partitions.load_offsets(self.db.conn, self.settings.label)
        elif self.settings.start_from is not None and not self.held_offsets.at:
            log.info(
                "--start-from ignored: label %r has a stored offset %s",
                self.settings.label,
                min((stored[p].entry_id for p in taken), key=entry_id_key),
            )
        for partition in taken:
            self.held_offsets.at[partition] = stored[partition].entry_id

    def _after_rebalance(self) -> None:
        if not self.parts.active:  # gave everything up (a share of 0): stand by
            self.health.role = Role.STANDBY
        else:
            self.health.role = Role.ACTIVE
            self._offset = self.held_offsets.position
        self._drain_target = None
        self.monitor.gap_check_due = True
        self.metrics.partitions_held.set(len(self.parts.held))
        self.metrics.lease_held.set(1 if self.parts.active else 0)  # active: holds some
        self.metrics.partition_lag_entries.clear()
        self._filter_reads()

    def _filter_reads(self) -> None:
        """Skip other partitions' entries as they are read, and leave their outbox rows to
        their holders; while this worker holds every partition there is nothing to skip,
        and no entry or row pays for the test."""
        if self.parts.holds_all:
            self.relay.owns = None
            skip_on_read(self.client, None)
            self.read_ahead.keep = None
        else:
            self.relay.owns = self._owns
            skip_on_read(self.client, self._keeps)
            self.read_ahead.keep = self._keeps

    def describe_held(self) -> str:
        """``0,3,5 of 8`` for the progress line and systemd's status."""
        held = ",".join(str(p) for p in sorted(self.parts.held)) or "none"
        return f"{held} of {self.parts.partitions}"

    def _rebalance_if_due(self) -> None:
        """Every poll interval: take free partitions up to the fair share, or give the
        extra up at this batch boundary once its outbox rows are published."""
        now = time.monotonic()
        if now - self._rebalanced_at < min(self.settings.lease_poll_s, self.parts.ttl_ms / 3000):
            return
        self._rebalanced_at = now
        count = partitions.count(self.db.conn, self.settings.label)
        if count != self.parts.partitions:
            return  # re-partitioned: the next fence finds the leases gone and starts over
        share, _ = self.parts.look(count)
        extras = self.parts.extras()
        if extras:
            self._publish()  # every committed row of the extra partitions is on the stream
            released = self.parts.release(extras)
            for partition in released:
                self.held_offsets.at.pop(partition, None)
            self.metrics.rebalances.labels("released").inc(len(released))
            self._drop_in_flight(unsettled=False)
            self._after_rebalance()
        elif len(self.parts.held) < share:
            taken, _ = self.parts.acquire(count)
            if taken:
                self._took_partitions(taken, count)

    def _leave_partitions(self) -> None:
        """Stop sharing the label: give every partition up and leave (stopping)."""
        self.parts.release(None)
        self._joined = False
        self.held_offsets.at.clear()

    def _guarded(self, step: Callable[[], bool]) -> bool:
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
            self._drop_in_flight(unsettled=True)
            self.metrics.reconnects.inc()
            self.monitor.gap_check_due = True  # the stream may have been trimmed meanwhile
            self.health.failing("redis", error)
            wait_s = self._outage.wait_for("redis", error, self._backoff_s)
            log.warning("redis unavailable (%s); retrying in %.1fs", error, wait_s)
        except redis.exceptions.OutOfMemoryError as error:
            self._drop_in_flight(unsettled=False)
            log.warning("redis refused a write (%s); retrying in %.1fs", error, self._backoff_s)
        except StoreBusy as error:
            self._drop_in_flight(unsettled=False)
            self.metrics.busy_retries.inc()
            log.warning("%s; retrying in %.1fs", error, self._backoff_s)
        except StoreUnavailable as error:
            self._drop_in_flight(unsettled=True)
            self.metrics.store_reconnects.inc()
            self.health.failing("store", error)
            wait_s = self._outage.wait_for("the store", error, self._backoff_s)
            log.warning("%s; reconnecting in %.1fs", error, wait_s)
        except LeaseLost as error:
            self._lost_lease(error)
            return True
        else:
            self._outage.over()
            if step == self._iteration:
                self.health.reached("redis", "store")
            return verdict
        self._stop.wait(wait_s)
        self._backoff_s = min(self._backoff_s * 2, self.settings.backoff_max_s)
        return True

    def _drop_in_flight(self, *, unsettled: bool) -> None:
        """Drop what is in flight for a batch that is abandoned: the one place that does.

        The read-ahead always goes: its reply answers a read that may no longer follow the
        offset. The relay's snapshots go only when they are ``unsettled``: the connection
        broke or the lease changed hands, so whether Redis took them is unknown, or no
        longer ours to settle (the next holder publishes them from the outbox table, and
        sending them after taking the label back would repeat them). Otherwise the relay
        confirms them as usual, so a busy store or a rewind does not publish them twice.
        The record cache needs nothing from here: it drops itself when a batch fails
        (``apply_batch``) and when another connection committed (``RecordCache.load``).
        """
        self.read_ahead.discard()
        if unsettled:
            self.relay.close()

    def _final_publish(self) -> None:
        """Publish what the outbox holds before exiting; if Redis is away, the rows wait."""
        try:
            self._publish()
        except (*REDIS_ERRORS, StoreBusy, StoreUnavailable) as error:
            log.warning("outbox not published on exit (%s); it is published on next start", error)

    def _publish(self) -> None:
        """Publish everything committed and wait for Redis to confirm it."""
        self._count_published(self.relay.publish())

    def _confirm_published(self) -> None:
        """Wait for the snapshots sent after the previous batch (the read-ahead pipeline)."""
        self._count_published(self.relay.confirm())

    def _count_published(self, sent: int) -> None:
        if sent:
            self.metrics.published.inc(sent)

    def _caught_up(self) -> bool:
        if self._drain_target is None:
            self._drain_target = last_entry_id(self.client, self.settings.stream) or START_ID
        return entry_id_key(self._offset) >= entry_id_key(self._drain_target)

    # the stream under the offset -------------------------------------------------------

    def check_position(self, held: Entries | None = None) -> bool:
        """Look for a reset or a gap behind the offset and act on it (``PositionWatch``).

        Returns False when the offset was rewound: the entries in hand are not to be used.
        """
        moved = self.position.settle(self._offset, held)
        if moved is None:
            return True
        offset, rewound = moved
        self._offset = offset
        if rewound:
            self._drain_target = None
            self._drop_in_flight(unsettled=False)
        return not rewound

    def progressed(self, lag_entries: int, lag_seconds: float) -> None:
        """The monitor measured the lag: the probes and systemd's status line show it."""
        self.health.lag_entries, self.health.lag_seconds = lag_entries, lag_seconds
        self.notifier.status(
            f"active: label {self.settings.label!r}, lag {counted(lag_entries, 'entry')}"
            f" ({lag_seconds:.1f}s)"
        )

    def _renewed_and_still_holding(self) -> bool:
        """Renew on idle ticks (a paused worker learns here it lost), and rebalance."""
        self.parts.renew_if_due()
        self._rebalance_if_due()
        return self.parts.active

    def _iteration(self) -> bool:
        """One round of the protocol: publish leftovers, read, apply+commit, publish.

        While a backlog lasts the round is pipelined: the next batch's read is sent before
        this batch is applied, and this batch's snapshots are sent after its commit and
        confirmed (then deleted from the outbox) before the next batch's commit.

        Returns False when the loop should end (drained).
        """
        s = self.settings
        if not self._renewed_and_still_holding():
            return True
        if not self.read_ahead.in_flight:
            self._publish()
        tick = self.monitor.maybe_tick(self._offset)
        if tick.lag is not None:
            self.progressed(*tick.lag)
        if tick.check_gap:
            self.check_position()
        self._look_at_schema()
        if s.drain and self._caught_up():
            return False
        offset = self._offset
        entries = self._read()
        if not entries:
            self._backoff_s = s.backoff_initial_s
            if not s.drain:
                self.relay.look_for_others_rows()
            return not s.drain or self._offset != offset  # a rewind or a gap moved it: go on
        last_id = entries[-1][0].decode()
        if self._more_waiting(len(entries), last_id):
            self.read_ahead.send(s.stream, last_id, s.batch_size)
        self._apply(entries)
        self._backoff_s = s.backoff_initial_s
        self.parts.renew_if_due()  # paused past the TTL: publish nothing
        self._count_published(self.relay.send())
        if not self.read_ahead.in_flight:
            self._confirm_published()
        return True

    def _read(self) -> Entries:
        """The next batch after the offset, checking the stream under it when in doubt.

        A non-blocking read starts at the offset's own entry; if that entry is gone the
        batch may cross a gap and the position is checked before it is applied. With
        nothing new, a blocking XREAD waits; if that comes back empty too, the position is
        checked (a reset shows as a stream whose ids fell behind the offset).
        """
        s = self.settings
        taken = self.read_ahead.take(self._offset)
        if taken is None:
            taken = read_range(self.client, s.stream, self._offset, s.batch_size)
        entries, continues = taken
        if not continues and not self.check_position(entries):
            return []
        if entries or s.drain:
            return entries
        entries = read_blocking(self.client, s.stream, self._offset, s.batch_size, self._block_ms)
        if not entries:
            self.check_position()
        return entries

    def _more_waiting(self, count: int, last_id: str) -> bool:
        """Whether more entries are known to follow (a full batch, and a drain not at its end)."""
        if count < self.settings.batch_size:
            return False
        target = self._drain_target
        return target is None or entry_id_key(last_id) < entry_id_key(target)

    def _apply(self, entries: Sequence[RawEntry]) -> None:
        """Apply and commit one batch. A busy database (``StoreBusy``) or a lost lease
        (``LeaseLost``) leaves nothing written and goes to ``_guarded``, the one place that
        backs off; the batch is read again from the unchanged offset."""
        started = time.perf_counter()
        result = self._apply_held(entries)
        self.relay.committed(result.snapshots)
        self._count(result, time.perf_counter() - started)

    def _apply_held(self, entries: Sequence[RawEntry]) -> BatchResult:
        """Apply the entries of the partitions held, past each one's offset; every held
        partition's offset moves to the last entry read, in the batch's transaction."""
        book = self.held_offsets
        spread = book.spread()
        if spread is None and self.parts.holds_all:
            mine: Sequence[RawEntry] = entries  # nothing to skip (``_filter_reads``)
        else:
            mine = self.map.select(entries, self.parts.held, spread)
        if spread is not None:
            keys = [entry_id_key(raw_id.decode()) for raw_id, _ in entries]
            book.read_after = {p: sum(1 for k in keys if k > at) for p, at in spread.items()}
        others = len(entries) - len(mine)
        with self.cpu.applying():
            result = apply_batch(
                self.db,
                self.machine,
                mine,
                stream=self.settings.stream,
                label=self.settings.label,
                now_ms=self.clock(),
                cache=self.cache,
                decoded_hook=self._confirm_published,
                fence=self.parts.fence,
                read_through=entries[-1][0].decode(),
                entries_read=len(entries),
                save_offset=book.save_batch,
            )
        book.committed(result)
        self._offset = book.position
        if others:
            self.metrics.skipped.labels("other_partition").inc(others)
        return result

    def _count(self, result: BatchResult, seconds: float) -> None:
        """Tell the observers (the metrics first: they are the counts) about a batch."""
        for observer in self.totals.observers:
            observer(result, seconds)


def _partitions(count: int) -> str:
    """``1 partition``, ``8 partitions``."""
    return f"{count} partition{'' if count == 1 else 's'}"


def _held_by(label: str, count: int, live: Sequence[PartitionLease]) -> str:
    """Who holds a label, for a standby's log line and ``--drain``'s refusal: the holder
    and its expiry for one partition, the holders for several."""
    if count == 1 and live:
        return f"label {label!r} is held by {live[0].describe()}{_until(live)}"
    holders = ", ".join(sorted({row.holder for row in live})) or "nobody yet"
    return f"the {count} partitions of label {label!r} are held by {holders}"


def _until(live: Sequence[PartitionLease]) -> str:
    """`` until T``: when the first of these leases expires (empty for none)."""
    if not live:
        return ""
    return f" until {format_ms(min(row.expires_at_ms for row in live))}"
