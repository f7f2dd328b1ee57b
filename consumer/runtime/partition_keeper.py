"""The worker's side of ownership: its fair share of its label's partition leases.

One keeper for every partition count (a label with one partition is a label with one
lease to share). Every worker sharing the label keeps a heartbeat row (``workers``). From
the live ones each computes its share (``store.partitions.fair_share``) and takes free,
released or expired partitions up to it; one holding more releases the extra at a batch
boundary (the worker publishes that partition's outbox first). Every batch renews all of
its leases in its own transaction, and a batch whose epoch is stale for any partition it
holds rolls back whole: ``Repartitioned`` when an operator changed the count while the
leases were live (a planned change), ``LeaseLost`` otherwise.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import NamedTuple

from consumer.runtime.clock import wall_clock_ms
from store import holders
from store import partitions as parts
from store.backend import Store
from store.errors import LeaseLost, Repartitioned
from store.partitions import PartitionLease
from store.sql import Sql

log = logging.getLogger(__name__)


class Taken(NamedTuple):
    """One partition taken: its number and its row as it was before the take."""

    partition: int
    before: PartitionLease


class PartitionKeeper:
    """Holds some of ``label``'s partitions for ``ttl_s`` under a holder id of its own."""

    def __init__(
        self,
        db: Store,
        label: str,
        ttl_s: float,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.db = db
        self.label = label
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.holder = holders.new_holder_id()
        self.node = holders.this_node()
        self.clock = clock
        self.partitions = 1
        """The label's partition count when this worker last took partitions."""
        self.changed_at_ms = 0
        """When that count was set: a later change fences this worker by plan."""
        self.held: dict[int, int] = {}
        """Partition -> epoch of every partition this worker believes it holds."""
        self.expires_at_ms = 0
        """Until when the leases held were last renewed."""
        self.floor = 0
        """The lowest epoch among the label's partitions when this worker last took some:
        every holder of an earlier partition layout has a lower one (``fence.RAISE``)."""
        self.share = 0
        self.workers: list[str] = []
        self._beat_at = -(2**62)

    @property
    def active(self) -> bool:
        """Whether this worker believes it holds a partition (the next fence says for sure)."""
        return bool(self.held)

    @property
    def holds_all(self) -> bool:
        """Whether every partition of the label is this worker's: nothing read is skipped."""
        return len(self.held) == self.partitions

    # sharing ---------------------------------------------------------------------------

    def _beat(self, conn: Sql, now: int) -> None:
        parts.heartbeat(conn, self.label, self.holder, self.node, now, self.ttl_ms)
        self._beat_at = now

    def _beat_due(self, now: int) -> bool:
        return now >= self._beat_at + self.ttl_ms // 3

    def join(self) -> None:
        """Register this worker's heartbeat, so others count it before it takes anything,
        and give a new label its count and lease rows."""
        with self.db.write() as conn:
            parts.ensure(conn, self.label)
            self._beat(conn, self.clock())

    def look(self, count: int) -> tuple[int, dict[int, PartitionLease]]:
        """(this worker's fair share now, the partition rows), with plain reads."""
        now = self.clock()
        self.workers = parts.live_workers(self.db.conn, self.label, self.node, now)
        rows = parts.read_leases(self.db.conn, self.label)
        holding: dict[str, int] = {}
        for row in rows.values():
            if row.holder and row.live(now):
                holding[row.holder] = holding.get(row.holder, 0) + 1
        self.share = parts.fair_share(count, self.workers, self.holder, holding)
        return self.share, rows

    def acquire(self, count: int) -> tuple[list[Taken], dict[int, PartitionLease]]:
        """Take free partitions up to the fair share; return (those taken, the rows seen).

        Looks first with plain reads and takes the write lock only when there is something
        to take or the heartbeat is due, so polling never gets in the way of batches.
        """
        share, seen = self.look(count)
        now = self.clock()
        if len(seen) != count:  # the count is changing under us: look again next round,
            with self.db.write() as conn:  # once the rows are the count's
                parts.ensure(conn, self.label)
            return [], seen
        if count != self.partitions or not self.held:
            self.held.clear()
            self.partitions = count
            self.changed_at_ms = parts.changed_at(self.db.conn, self.label)
        takeable = [p for p, row in seen.items() if p not in self.held and self._free(row, now)]
        wanted = share - len(self.held)
        if (wanted <= 0 or not takeable) and not self._beat_due(now):
            return [], seen
        taken: list[Taken] = []
        with self.db.write() as conn:
            now = self.clock()
            self._beat(conn, now)
            if wanted > 0 and takeable:
                if parts.held_count(conn, self.label) != count:
                    return [], seen  # re-partitioned since the look: look again next round
                rows = parts.read_leases(conn, self.label)
                self.floor = min((row.epoch for row in rows.values()), default=0)
                for partition in takeable:
                    row = rows.get(partition)
                    if len(taken) >= wanted or row is None or not self._free(row, now):
                        continue
                    lease = parts.try_take(conn, row, self.holder, self.node, now, self.ttl_ms)
                    if lease is not None:
                        taken.append(Taken(partition, row))
                        self.held[partition] = lease.epoch
                        self.expires_at_ms = lease.expires_at_ms
                seen = rows
        return taken, seen

    def _free(self, row: PartitionLease, now: int) -> bool:
        return not row.binds(self.holder, self.node, now)

    def extras(self) -> list[int]:
        """The partitions held beyond the fair share (the highest ones), to release."""
        surplus = len(self.held) - self.share
        return sorted(self.held)[-surplus:] if surplus > 0 else []

    # fencing ---------------------------------------------------------------------------

    def fence(self, conn: Sql) -> None:
        """Inside a write transaction: renew every held lease, or raise ``LeaseLost``
        (``Repartitioned`` when the label's count changed while they were live)."""
        if not self.held:
            raise LeaseLost(f"this worker holds no partition of label {self.label!r}")
        now = self.clock()
        if not parts.renew(conn, self.label, self.holder, self.held, now, self.ttl_ms):
            raise self._fenced_out(conn)
        self.expires_at_ms = now + self.ttl_ms
        if self._beat_due(now):
            self._beat(conn, now)

    def _fenced_out(self, conn: Sql) -> LeaseLost:
        """Why the renewal failed: forget every lease, and say who has them now."""
        held, self.held = self.held, {}
        count = parts.count(conn, self.label)
        changed_at = parts.changed_at(conn, self.label)
        if changed_at != self.changed_at_ms and changed_at <= self.expires_at_ms:
            return Repartitioned(
                f"label {self.label!r} was re-partitioned from {self.partitions} to {count}"
                f" partitions; giving up {_numbered(held)} to take a share anew",
                self.partitions,
                count,
            )
        rows = parts.read_leases(conn, self.label)
        lost = []
        for partition, epoch in sorted(held.items()):
            row = rows.get(partition)
            if row is None or count != self.partitions:
                lost.append(f"partition {partition} (epoch {epoch}) to a new partition count")
            elif row.holder != self.holder or row.epoch != epoch:
                lost.append(
                    f"partition {partition} (epoch {epoch}) was taken over by {row.describe()}"
                )
        return LeaseLost(f"label {self.label!r}: {'; '.join(lost) or 'the lease rows changed'}")

    @contextlib.contextmanager
    def fenced(self) -> Iterator[Sql]:
        """A write transaction that commits only while every held lease is still ours."""
        with self.db.write() as conn:
            self.fence(conn)
            yield conn

    def renew_if_due(self) -> None:
        """Renew in a transaction of its own once a third of the TTL has passed (idle)."""
        if self.held and self._beat_due(self.clock()):
            with self.fenced():
                pass

    def release(self, partitions: list[int] | None = None) -> list[int]:
        """Give up ``partitions`` (all when None; then leave the label too); return them."""
        chosen = sorted(self.held) if partitions is None else sorted(partitions)
        giving = {p: self.held[p] for p in chosen if p in self.held}
        with self.db.write() as conn:
            parts.release(conn, self.label, self.holder, giving, self.clock())
            if partitions is None:
                parts.leave(conn, self.label, self.holder)
        for p in giving:
            del self.held[p]
        if giving:
            log.info(
                "released partition%s %s of label %r",
                "s" if len(giving) > 1 else "",
                _listed(giving),
                self.label,
            )
        return list(giving)

    def forget(self) -> None:
        """The leases were lost: stop believing any is held."""
        self.held.clear()


def _listed(partitions: dict[int, int] | list[int]) -> str:
    """``0, 3, 5`` for messages."""
    return ", ".join(str(p) for p in sorted(partitions))


def _numbered(partitions: dict[int, int] | list[int]) -> str:
    """``partition 0`` or ``partitions 0, 3, 5`` for messages."""
    return f"partition{'' if len(partitions) == 1 else 's'} {_listed(partitions)}"
