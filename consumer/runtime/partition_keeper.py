"""The worker's side of a label with several partitions: its fair share of their leases.

Every worker sharing the label keeps a heartbeat row (``workers``). From the live ones
each computes its share (``store.partitions.fair_share``) and takes free, released or
expired partitions up to it; one holding more releases the extra at a batch boundary
(the worker publishes that partition's outbox first). Each lease is fenced like the
label's lease: every batch renews all of them in its own transaction, and a batch whose
epoch is stale for any partition it holds rolls back whole (``LeaseLost``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

from consumer.runtime.clock import wall_clock_ms
from store import partitions as parts
from store.backend import Store
from store.errors import LeaseLost
from store.partitions import PartitionLease
from store.sql import Sql

log = logging.getLogger(__name__)


class PartitionKeeper:
    """Holds some of ``label``'s partitions for ``ttl_s`` under ``holder``."""

    def __init__(
        self,
        db: Store,
        label: str,
        ttl_s: float,
        holder: str,
        node: str,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.db = db
        self.label = label
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.holder = holder
        self.node = node
        self.clock = clock
        self.partitions = 1
        """The label's partition count when this worker last took partitions."""
        self.held: dict[int, int] = {}
        """Partition -> epoch of every partition this worker believes it holds."""
        self.share = 0
        self.workers: list[str] = []
        self._beat_at = -(2**62)

    @property
    def active(self) -> bool:
        """Whether this worker believes it holds a partition (the next fence says for sure)."""
        return bool(self.held)

    # sharing ---------------------------------------------------------------------------

    def _beat(self, conn: Sql, now: int) -> None:
        parts.heartbeat(conn, self.label, self.holder, self.node, now, self.ttl_ms)
        self._beat_at = now

    def _beat_due(self, now: int) -> bool:
        return now >= self._beat_at + self.ttl_ms // 3

    def join(self) -> None:
        """Register this worker's heartbeat, so others count it before it takes anything."""
        with self.db.write() as conn:
            self._beat(conn, self.clock())

    def look(self, count: int) -> tuple[int, dict[int, PartitionLease]]:
        """(this worker's fair share now, the partition rows), with plain reads."""
        now = self.clock()
        self.workers = parts.live_workers(self.db.conn, self.label, self.node, now)
        self.share = parts.fair_share(count, self.workers, self.holder)
        return self.share, parts.read_leases(self.db.conn, self.label)

    def acquire(self, count: int) -> tuple[list[int], dict[int, PartitionLease]]:
        """Take free partitions up to the fair share; return (those taken, the rows seen).

        Looks first with plain reads and takes the write lock only when there is something
        to take or the heartbeat is due, so polling never gets in the way of batches.
        """
        share, seen = self.look(count)
        now = self.clock()
        if len(seen) != count:  # the count is changing under us: look again next round
            return [], seen
        if count != self.partitions:
            self.held.clear()
            self.partitions = count
        takeable = [p for p, row in seen.items() if p not in self.held and self._free(row, now)]
        wanted = share - len(self.held)
        if (wanted <= 0 or not takeable) and not self._beat_due(now):
            return [], seen
        taken: list[int] = []
        with self.db.write() as conn:
            now = self.clock()
            self._beat(conn, now)
            if wanted > 0 and takeable:
                rows = parts.read_leases(conn, self.label)
                for partition in takeable:
                    row = rows.get(partition)
                    if len(taken) >= wanted or row is None or not self._free(row, now):
                        continue
                    lease = parts.try_take(conn, row, self.holder, self.node, now, self.ttl_ms)
                    if lease is not None:
                        taken.append(partition)
                        self.held[partition] = lease.epoch
                seen = rows  # as they were before the takes: whom each was taken from
        return taken, seen

    def _free(self, row: PartitionLease, now: int) -> bool:
        return not row.binds(self.holder, self.node, now)

    def extras(self) -> list[int]:
        """The partitions held beyond the fair share (the highest ones), to release."""
        surplus = len(self.held) - self.share
        return sorted(self.held)[-surplus:] if surplus > 0 else []

    # fencing ---------------------------------------------------------------------------

    def fence(self, conn: Sql) -> None:
        """Inside a write transaction: renew every held lease, or raise ``LeaseLost``."""
        if not self.held:
            raise LeaseLost(f"this worker holds no partition of label {self.label!r}")
        now = self.clock()
        if not parts.renew(conn, self.label, self.holder, self.held, now, self.ttl_ms):
            rows = parts.read_leases(conn, self.label)
            lost = [
                p
                for p, epoch in self.held.items()
                if rows.get(p, None) is None
                or rows[p].holder != self.holder
                or rows[p].epoch != epoch
            ]
            held, self.held = self.held, {}
            takers = ", ".join(
                f"{p} to {rows[p].describe() if p in rows else 'a new partition count'}"
                for p in sorted(lost)
            )
            raise LeaseLost(
                f"partitions of label {self.label!r} (epochs"
                f" {', '.join(f'{p}:{e}' for p, e in sorted(held.items()))}) were taken over:"
                f" {takers or 'the rows changed'}"
            )
        if self._beat_due(now):
            self._beat(conn, now)

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
            log.info("released partitions %s of label %r", ", ".join(map(str, giving)), self.label)
        return list(giving)

    def forget(self) -> None:
        """The leases were lost: stop believing any is held."""
        self.held.clear()
