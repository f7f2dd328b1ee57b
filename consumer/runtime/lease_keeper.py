"""The worker's side of the lease: take it, renew it, fence every batch with it, give it up.

``store.lease`` has the row operations; this keeps the one lease a worker holds, on the
wall clock (other machines compare the expiry), and turns a failed fence into
``LeaseLost`` so the batch it guards rolls back.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

from consumer.runtime.clock import wall_clock_ms
from store import lease as leases
from store.backend import Store
from store.errors import LeaseLost
from store.lease import Lease
from store.sql import Sql

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Holds at most one lease: ``label``'s, for ``ttl_s``, under a holder id of its own."""

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
        self.clock = clock
        self.holder = leases.new_holder_id()
        self.node = leases.this_node()
        self.lease: Lease | None = None

    @property
    def held(self) -> bool:
        """Whether this worker believes it holds the lease (the next fence says for sure)."""
        return self.lease is not None

    def try_acquire(self) -> tuple[Lease | None, Lease | None]:
        """Take the lease if nobody live holds it: (the lease or None, the row found before).

        A standby looks first with a plain read and takes the write lock only when the
        lease looks free, so polling never gets in the active worker's way.
        """
        seen = leases.read(self.db.conn, self.label)
        if leases.binds(seen, self.holder, self.node, self.clock()):
            return None, seen
        with self.db.write() as conn:
            taken, before = leases.try_acquire(
                conn, self.label, self.holder, self.node, self.clock(), self.ttl_ms
            )
        self.lease = taken
        return taken, before

    def fence(self, conn: Sql) -> None:
        """Inside a write transaction: renew, or raise ``LeaseLost`` (the caller rolls back)."""
        lease = self.lease
        if lease is None:
            raise LeaseLost(f"this worker holds no lease for label {self.label!r}")
        renewed = leases.renew(conn, lease, self.clock(), self.ttl_ms)
        if renewed is None:
            now = leases.read(conn, self.label)
            self.lease = None
            taker = now.describe() if now is not None else "nobody (the row is gone)"
            raise LeaseLost(
                f"lease for label {self.label!r} (epoch {lease.epoch}) was taken over by {taker}"
            )
        self.lease = renewed

    @contextlib.contextmanager
    def fenced(self) -> Iterator[Sql]:
        """A write transaction that commits only while this worker still holds the lease."""
        with self.db.write() as conn:
            self.fence(conn)
            yield conn

    def renew_if_due(self) -> None:
        """Renew in a transaction of its own once a third of the TTL has passed (idle ticks).

        Batches renew inside their own transaction, so a busy worker never gets here.
        """
        lease = self.lease
        if lease is not None and self.clock() >= lease.expires_at_ms - self.ttl_ms * 2 // 3:
            with self.fenced():
                pass

    def release(self) -> None:
        """Give the lease up so a standby takes over at once; safe to call when not held."""
        lease, self.lease = self.lease, None
        if lease is not None:
            with self.db.write() as conn:
                leases.release(conn, lease)
            log.info("released the lease for label %r (epoch %d)", self.label, lease.epoch)

    def forget(self) -> None:
        """The lease was lost: stop believing it is held."""
        self.lease = None
