"""Stored offsets as operators see and move them (``offsets show``, ``offsets set``), and
the refusal every command that changes what a worker owns makes while one holds a lease."""

from __future__ import annotations

from consumer.operations.partitions import partition_rows
from consumer.runtime.clock import format_ms, wall_clock_ms
from store import holders, offsets, partitions, records
from store.backend import Store
from store.errors import LeaseHeld
from store.partitions import PartitionLease
from store.sql import Sql
from store.stream_id import StreamId


def binding_leases(conn: Sql, label: str | None, now_ms: int) -> list[PartitionLease]:
    """Live leases (of ``label``, or of any label) whose holder is not known to be dead."""
    node = holders.this_node()
    return [
        lease
        for lease in partitions.live_leases(conn, now_ms)
        if (label is None or lease.label == label) and lease.binds("", node, now_ms)
    ]


def refuse_while_leased(db: Store, label: str | None, what: str, force: bool) -> None:
    """``LeaseHeld`` naming the holder while a live worker owns what ``what`` would change."""
    held = binding_leases(db.conn, label, wall_clock_ms())
    if held and not force:
        lease = held[0]
        raise LeaseHeld(
            f"{what} while a worker holds the lease for label {lease.label!r}:"
            f" {lease.describe()} until {format_ms(lease.expires_at_ms)}"
            " (stop it first, or add --force)"
        )


def offset_rows(conn: Sql, now_ms: int) -> list[dict[str, object]]:
    """``offsets show``: one row per partition of each label, with ``partition`` and
    ``partitions``; a label with one partition has one row, partition 0."""
    rows = []
    for row in offsets.list_all(conn):
        label = str(row["label"])
        stored = partitions.load_offsets(conn, label)
        for part in partition_rows(conn, label, now_ms):
            offset = stored.get(int(str(part["partition"])))
            rows.append(
                {
                    "label": label,
                    "entry_id": part["entry_id"],
                    "updated_at_ms": offset.updated_at_ms if offset else None,
                    "entries_read": part["entries_read"],
                    "lease_holder": part["holder"],
                    "lease_epoch": part["epoch"] or None,  # 0: never held
                    "lease_expires_at_ms": part["expires_at_ms"],
                    "lease": part["lease"],
                    "partition": part["partition"],
                    "partitions": part["partitions"],
                }
            )
    return rows


def set_every_offset(conn: Sql, label: str, entry_id: str, now_ms: int) -> str | None:
    """``offsets set``: put every partition of ``label`` at ``entry_id`` and let entries
    after it apply again (clearing records' marks past it); return the previous offset."""
    StreamId.parse(entry_id)
    before = offsets.load(conn, label)
    count = partitions.count(conn, label)
    partitions.set_offsets(conn, label, {p: (entry_id, 0) for p in range(count)}, now_ms)
    records.forget_marks(conn, entry_id)
    return before
