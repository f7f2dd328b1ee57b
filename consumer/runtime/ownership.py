"""Ownership: taking a share of the label's partitions, standing by, rebalancing, letting go.

The keeper (``PartitionKeeper``) does the store's side (leases, epochs, fair shares); this
part does what follows for the worker: the fence at Redis raised before anything is
published, the taken partitions' offsets, the last holder's outbox rows published first,
reads filtered to the partitions held, and a lost lease turned into standing by. The loop
asks it one question per turn (``still_holding``) and never how many partitions there are.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import redis

from consumer.errors import PublishFenced
from consumer.runtime.clock import format_ms
from consumer.runtime.cursor import Cursor
from consumer.runtime.fence import raise_fence
from consumer.runtime.holdings import Holdings
from consumer.runtime.in_flight import InFlight
from consumer.runtime.offset_book import HeldOffsets
from consumer.runtime.partition_keeper import PartitionKeeper, Taken
from consumer.runtime.read_ahead import ReadAhead
from consumer.runtime.redis_client import redact_url, skip_on_read
from consumer.runtime.relay import OutboxRelay
from consumer.runtime.start_offset import first_offset
from consumer.runtime.status import WorkerStatus
from consumer.settings import ConsumerSettings
from store import partitions
from store.backend import Store
from store.errors import LeaseHeld, LeaseLost, Repartitioned, StoreError
from store.partitions import PartitionLease
from store.stream_id import entry_id_key

log = logging.getLogger(__name__)

REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError)
"""Errors that mean "Redis is away for now": back off and reconnect, never crash."""


class Ownership:
    """Which of the label's partitions this worker holds, and everything that changes with
    them."""

    def __init__(
        self,
        settings: ConsumerSettings,
        db: Store,
        client: redis.Redis,
        holdings: Holdings,
        offsets: HeldOffsets,
        relay: OutboxRelay,
        read_ahead: ReadAhead,
        in_flight: InFlight,
        status: WorkerStatus,
        cursor: Cursor,
        stop: threading.Event,
    ) -> None:
        self.settings = settings
        self.db = db
        self.client = client
        self.holdings = holdings
        self.keeper: PartitionKeeper = holdings.keeper
        self.offsets = offsets
        self.relay = relay
        self.read_ahead = read_ahead
        self.in_flight = in_flight
        self.status = status
        self.cursor = cursor
        self._stop = stop
        self._joined = False
        self._rebalanced_at = float("-inf")
        self._announced_holders: list[str] = []

    @property
    def holding(self) -> bool:
        """Whether this worker believes it may consume: it holds a partition."""
        return self.keeper.active

    # taking ----------------------------------------------------------------------------

    def become_active(self) -> bool:
        """Take a share of the label's partitions, waiting as a standby while other live
        workers hold them all. Returns False when a stop was requested while standing by.
        """
        while not self._stop.is_set():
            count = partitions.count(self.db.conn, self.settings.label)
            if self.take(count):
                return True
            self.status.health.beat()
            self._stop.wait(self.settings.lease_poll_s)
        return False

    def take(self, count: int) -> bool:
        """Join the label's workers and take free partitions up to the fair share; stand by
        (or, with ``--drain``, raise ``LeaseHeld``) when none is free. Whether any was taken."""
        if not self._joined:
            self.keeper.join()
            self._joined = True
        if not self.keeper.held:
            # nothing is published before the fence is raised at Redis: with Redis away a
            # take would only be given up again, each retry raising the epoch and logging.
            # A standby's readiness says Redis answers (it will need it on takeover).
            self.client.ping()
            self.status.health.reached("redis")
        taken, seen = self.keeper.acquire(count)
        self.status.health.reached("store")
        if taken:
            try:
                self._took(taken, count)
            except BaseException:
                self.release_on_stop()
                raise
            return True
        live = [row for row in seen.values() if row.holder and row.live(self.keeper.clock())]
        holders = sorted({row.holder for row in live})
        held_by = _held_by(self.settings.label, count, live)
        if self.settings.drain:
            raise LeaseHeld(f"{held_by}; another worker is consuming (--drain does not wait)")
        if live:
            self._standing_by(min(live, key=lambda row: row.expires_at_ms))
        if holders != self._announced_holders:
            workers = len(self.keeper.workers)
            log.info(
                "standing by as %s: %s (a share of %d for %d worker%s)",
                self.keeper.holder,
                held_by,
                self.keeper.share,
                workers,
                "" if workers == 1 else "s",
            )
            self._announced_holders = holders
        return False

    def _standing_by(self, holder: PartitionLease) -> None:
        """What a standby tells the probes and systemd, and what it checks for them: that
        the schema is current (``take`` has just seen Redis answer)."""
        self.status.standing_by(holder)
        self.status.look_at_schema(self.db)

    def _took(self, taken: list[Taken], count: int) -> None:
        """Start on newly taken partitions: their fence at Redis, their offsets, and their
        last holder's outbox rows before anything new (``OutboxRelay.rescan``)."""
        s = self.settings
        first = len(self.keeper.held) == len(taken)  # held nothing before
        self.holdings.remap(count)
        if first:
            self.status.holding(len(taken))
            workers = len(self.keeper.workers)
            log.info(
                "consuming %s -> %s as %r, %s, %d worker%s on the label (db %s, redis %s,"
                " batch %d, block %d ms, holder %s)",
                s.stream,
                s.lobby_stream,
                s.label,
                _partitions(count),
                workers,
                "" if workers == 1 else "s",
                self.db.location,
                redact_url(s.redis_url),
                s.batch_size,
                s.block_ms_read,
                self.keeper.holder,
            )
        # a last holder's unconfirmed snapshots are published again from the outbox table
        self.in_flight.drop(unsettled=first)
        planned = from_others = 0
        for partition, before in taken:
            epoch = self.keeper.held[partition]
            if not before.holder or before.holder == self.keeper.holder:
                planned += 1
                log.info(
                    "holding the lease of partition %d of %d of label %r (epoch %d)",
                    partition,
                    count,
                    s.label,
                    epoch,
                )
                continue
            from_others += 1
            released = before.expires_at_ms == 0
            planned += released
            log.info(
                "took over the lease of partition %d of %d of label %r from %s (%s), now epoch %d",
                partition,
                count,
                s.label,
                before.describe(),
                "released" if released else "expired or dead",
                epoch,
            )
        self.status.took(len(taken), planned, from_others)
        self._raise_fence([partition for partition, _ in taken])
        self._place([partition for partition, _ in taken], count)
        self.relay.rescan()
        self._rebalanced()
        self.status.active(self.keeper.holder, self.keeper.expires_at_ms, self.holdings.describe())

    def _raise_fence(self, taken: list[int]) -> None:
        """Before publishing anything for the partitions taken, raise their fence at Redis to
        their epochs: from now on no earlier holder's append lands, whenever it arrives."""
        held = self.keeper.held
        stale = raise_fence(
            self.client, self.holdings.fence_key, {p: held[p] for p in taken}, self.keeper.floor
        )
        if stale:
            raise PublishFenced(
                f"label {self.settings.label!r}: the fence at Redis is already past the epoch"
                f" taken for partitions {', '.join(f'{p} (epoch {e})' for p, e in stale.items())}"
            )

    def _place(self, taken: list[int], count: int) -> None:
        """Read the taken partitions' offsets; a label that never committed starts where
        ``--start-from`` says (or at the stream's beginning), for every partition at once."""
        label = self.settings.label
        stored = partitions.load_offsets(self.db.conn, label)
        if any(p not in stored for p in taken):
            entry_id, read = first_offset(self.db, self.client, self.settings)
            with self.keeper.fenced() as conn:
                partitions.init_offsets(conn, label, count, entry_id, read, self.keeper.clock())
            stored = partitions.load_offsets(self.db.conn, label)
        elif self.settings.start_from is not None and not self.offsets.at:
            log.info(
                "--start-from ignored: label %r has a stored offset %s",
                label,
                min((stored[p].entry_id for p in taken), key=entry_id_key),
            )
        for partition in taken:
            self.offsets.at[partition] = stored[partition].entry_id

    def _rebalanced(self) -> None:
        """What is held changed: the loop reads on from the lowest offset held, checks the
        stream under it, and reads only what it holds."""
        self.status.holding(len(self.keeper.held) if self.keeper.active else 0)
        if self.keeper.active:
            self.cursor.offset = self.offsets.position
        self.cursor.drain_target = None
        self.cursor.check_gap = True
        self._filter_reads()

    def _filter_reads(self) -> None:
        """Skip other partitions' entries as they are read, and leave their outbox rows to
        their holders; while this worker holds every partition there is nothing to skip,
        and no entry or row pays for the test."""
        if self.keeper.holds_all:
            self.relay.owns = None
            skip_on_read(self.client, None)
            self.read_ahead.keep = None
        else:
            self.relay.owns = self.holdings.owns
            skip_on_read(self.client, self.holdings.keeps)
            self.read_ahead.keep = self.holdings.keeps

    # keeping ---------------------------------------------------------------------------

    def still_holding(self) -> bool:
        """Renew on idle ticks (a paused worker learns here it lost), and rebalance."""
        self.keeper.renew_if_due()
        self._rebalance_if_due()
        return self.keeper.active

    def _rebalance_if_due(self) -> None:
        """Every poll interval: take free partitions up to the fair share, or give the
        extra up at this batch boundary once its outbox rows are published."""
        now = time.monotonic()
        if now - self._rebalanced_at < min(self.settings.lease_poll_s, self.keeper.ttl_ms / 3000):
            return
        self._rebalanced_at = now
        count = partitions.count(self.db.conn, self.settings.label)
        if count != self.keeper.partitions:
            return  # re-partitioned: the next fence finds the leases gone and starts over
        share, _ = self.keeper.look(count)
        extras = self.keeper.extras()
        if extras:
            # every committed row of the extra partitions is on the stream first
            self.status.published(self.relay.publish())
            released = self.keeper.release(extras)
            for partition in released:
                self.offsets.at.pop(partition, None)
            self.status.released(len(released))
            self.in_flight.drop(unsettled=False)
            self._rebalanced()
        elif len(self.keeper.held) < share:
            taken, _ = self.keeper.acquire(count)
            if taken:
                self._took(taken, count)

    # letting go ------------------------------------------------------------------------

    def lost(self, error: LeaseLost) -> None:
        """The fence failed: the batch in hand rolled back and nothing held is ours any
        more. A re-partition is planned (INFO, counted as a rebalance); anything else (a
        pause past the TTL, a takeover) is a lost lease (ERROR, ``lease_lost``)."""
        if isinstance(error, Repartitioned):
            log.info("%s (the batch in hand rolled back and is read again)", error)
        else:
            log.error("%s: the batch in hand rolled back; publishing stops, standing by", error)
        self.status.lost(error)
        self.keeper.forget()
        self.offsets.at.clear()
        self.in_flight.drop(unsettled=True)

    def release_on_stop(self) -> None:
        """Give every partition up and leave the label's workers (stopping): a standby
        takes over at once instead of after the TTL."""
        self.status.let_go()
        if not self._joined:
            return
        try:
            self.keeper.release(None)
            self._joined = False
            self.offsets.at.clear()
        except StoreError as error:
            log.warning("partitions not released (%s); others take them when they expire", error)


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
