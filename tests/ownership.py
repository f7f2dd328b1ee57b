"""Lease rows as tests set them up: another worker holding a label's partitions, or none."""

from __future__ import annotations

import time

from store import Store, partitions
from store.partitions import PartitionLease

FAR_FUTURE_MS = 10**15


def occupy(
    db: Store,
    label: str,
    *held: int,
    holder: str = "elsewhere:1:x",
    node: str = "far",
    epoch: int | None = None,
    expires_at_ms: int | None = None,
) -> None:
    """Another live worker holds these partitions of ``label`` (partition 0 when none is
    named): a far expiry unless given, another node, and the next epoch unless given."""
    expires = FAR_FUTURE_MS if expires_at_ms is None else expires_at_ms
    with db.write() as conn:
        partitions.ensure(conn, label)
        for partition in held or (0,):
            conn.execute(
                "UPDATE partition_owners SET holder = ?, node = ?,"
                " epoch = coalesce(?, epoch + 1), acquired_at_ms = ?, expires_at_ms = ?,"
                " released_at_ms = 0 WHERE label = ? AND partition = ?",
                [holder, node, epoch, int(time.time() * 1000), expires, label, partition],
            )


def free(db: Store, label: str) -> None:
    """Every partition of ``label`` released by its holder."""
    with db.write() as conn:
        conn.execute(
            "UPDATE partition_owners SET expires_at_ms = 0, released_at_ms = ? WHERE label = ?",
            [int(time.time() * 1000), label],
        )


def lease_of(db: Store, label: str, partition: int = 0) -> PartitionLease | None:
    """The lease row of one partition of ``label``, or None."""
    return partitions.read_leases(db.conn, label).get(partition)
