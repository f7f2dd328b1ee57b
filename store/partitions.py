"""A label's partitions: their count, a lease and an offset each, and the workers sharing them.

With one partition (the default) a label is what it always was: partition 0's lease is the
label's row in ``leases`` and its offset the row in ``stream_offsets``; these tables stay
empty for it. Above one, each partition has a row in ``partition_leases`` (holder, node,
epoch, expiry: the fencing of ``store.lease``, per partition) and in ``partition_offsets``,
and ``stream_offsets`` keeps the label's low-water mark (the lowest partition offset), so
tools that read it see how far every game is applied. ``workers`` holds a heartbeat per
worker, from which each one computes its fair share.

Every function runs inside the caller's transaction; times are wall-clock milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from store import lease as leases
from store import offsets
from store.sql import Sql
from store.stream_id import START_ID, entry_id_key


class PartitionLease(NamedTuple):
    """The lease row of one partition of a label."""

    label: str
    partition: int
    holder: str
    node: str
    epoch: int
    acquired_at_ms: int
    expires_at_ms: int

    def live(self, now_ms: int) -> bool:
        """Whether it still binds others at ``now_ms`` (a released lease has expiry 0)."""
        return self.expires_at_ms > now_ms

    def describe(self) -> str:
        """``holder (epoch N)`` for messages, or ``nobody`` for a free partition."""
        return f"{self.holder} (epoch {self.epoch})" if self.holder else "nobody"

    def binds(self, holder: str, node: str, now_ms: int) -> bool:
        """Whether it keeps ``holder`` out: another's, live, and not known to be dead."""
        as_label_lease = leases.Lease(
            self.label, self.holder, self.node, self.epoch, self.acquired_at_ms, self.expires_at_ms
        )
        return bool(self.holder) and leases.binds(as_label_lease, holder, node, now_ms)


class PartitionOffset(NamedTuple):
    """The committed offset of one partition."""

    partition: int
    entry_id: str
    updated_at_ms: int
    entries_read: int


def count(conn: Sql, label: str) -> int:
    """The label's partition count (1 when never set)."""
    row = conn.execute("SELECT partitions FROM label_partitions WHERE label = ?", [label])
    found = row.fetchone()
    return 1 if found is None else int(found[0])


def counts(conn: Sql) -> dict[str, int]:
    """Every label whose count was ever set, with its count."""
    rows = conn.execute("SELECT label, partitions FROM label_partitions ORDER BY label")
    return {str(label): int(n) for label, n in rows}


_LEASE_COLUMNS = "label, partition, holder, node, epoch, acquired_at_ms, expires_at_ms"


def read_leases(conn: Sql, label: str) -> dict[int, PartitionLease]:
    """The partition lease rows of ``label`` (empty with one partition)."""
    rows = conn.execute(
        f"SELECT {_LEASE_COLUMNS} FROM partition_leases WHERE label = ? ORDER BY partition",
        [label],
    )
    return {int(row[1]): PartitionLease(*row) for row in rows}


def try_take(
    conn: Sql,
    seen: PartitionLease,
    holder: str,
    node: str,
    now_ms: int,
    ttl_ms: int,
) -> PartitionLease | None:
    """Take a partition whose row was read as ``seen`` (free, released, expired, or its
    holder died here): a compare-and-swap on its epoch and expiry, so a renewal or another
    taker in between wins. Returns the lease now held, or None."""
    taken = seen._replace(
        holder=holder,
        node=node,
        epoch=seen.epoch + 1,
        acquired_at_ms=now_ms,
        expires_at_ms=now_ms + ttl_ms,
    )
    updated = conn.execute(
        "UPDATE partition_leases SET holder = ?, node = ?, epoch = ?, acquired_at_ms = ?,"
        " expires_at_ms = ? WHERE label = ? AND partition = ? AND epoch = ? AND expires_at_ms = ?",
        [
            holder,
            node,
            taken.epoch,
            now_ms,
            taken.expires_at_ms,
            seen.label,
            seen.partition,
            seen.epoch,
            seen.expires_at_ms,
        ],
    )
    return taken if updated.rowcount == 1 else None


def _held_clause(held: Mapping[int, int]) -> tuple[str, list[int]]:
    """``(partition = ? AND epoch = ?) OR ...`` for the partitions held, with their epochs."""
    clause = " OR ".join(["(partition = ? AND epoch = ?)"] * len(held))
    params = [value for partition, epoch in sorted(held.items()) for value in (partition, epoch)]
    return f"({clause})", params


def renew(
    conn: Sql, label: str, holder: str, held: Mapping[int, int], now_ms: int, ttl_ms: int
) -> bool:
    """Extend every lease in ``held`` (partition -> epoch) if each row still names this
    holder and epoch; False if any does not (the fence: the caller rolls back)."""
    if not held:
        return False
    clause, params = _held_clause(held)
    updated = conn.execute(
        "UPDATE partition_leases SET expires_at_ms = ?"
        f" WHERE label = ? AND holder = ? AND {clause}",
        [now_ms + ttl_ms, label, holder, *params],
    )
    return updated.rowcount == len(held)


def release(conn: Sql, label: str, holder: str, held: Mapping[int, int], now_ms: int) -> None:
    """Give these partitions up: they expire now (so ``check`` knows since when nobody
    holds them), keeping holder and epoch for the record."""
    if not held:
        return
    clause, params = _held_clause(held)
    conn.execute(
        "UPDATE partition_leases SET expires_at_ms = ?"
        f" WHERE label = ? AND holder = ? AND {clause}",
        [now_ms, label, holder, *params],
    )


def load_offsets(conn: Sql, label: str) -> dict[int, PartitionOffset]:
    """The committed offsets of ``label``'s partitions (empty with one partition)."""
    rows = conn.execute(
        "SELECT partition, entry_id, updated_at_ms, entries_read FROM partition_offsets"
        " WHERE label = ? ORDER BY partition",
        [label],
    )
    return {int(row[0]): PartitionOffset(int(row[0]), row[1], row[2], row[3]) for row in rows}


def save_offsets(conn: Sql, label: str, moved: Mapping[int, tuple[str, int]], now_ms: int) -> None:
    """Store each partition's new offset and add the entries it read past its old one,
    then the label's low-water mark in ``stream_offsets``."""
    for partition, (entry_id, read) in moved.items():
        conn.execute(
            "INSERT INTO partition_offsets (label, partition, entry_id, updated_at_ms,"
            " entries_read) VALUES (?, ?, ?, ?, ?) ON CONFLICT (label, partition) DO UPDATE"
            " SET entry_id = excluded.entry_id, updated_at_ms = excluded.updated_at_ms,"
            " entries_read = partition_offsets.entries_read + excluded.entries_read",
            [label, partition, entry_id, now_ms, read],
        )
    save_low_water(conn, label, now_ms)


def set_offsets(conn: Sql, label: str, placed: Mapping[int, tuple[str, int]], now_ms: int) -> None:
    """Put partition offsets anywhere, backwards included (a rewind, an operator)."""
    for partition, (entry_id, read) in placed.items():
        conn.execute(
            "INSERT INTO partition_offsets (label, partition, entry_id, updated_at_ms,"
            " entries_read) VALUES (?, ?, ?, ?, ?) ON CONFLICT (label, partition) DO UPDATE"
            " SET entry_id = excluded.entry_id, updated_at_ms = excluded.updated_at_ms,"
            " entries_read = excluded.entries_read",
            [label, partition, entry_id, now_ms, read],
        )
    save_low_water(conn, label, now_ms)


def init_offsets(
    conn: Sql, label: str, partitions: int, entry_id: str, read: int, now_ms: int
) -> None:
    """Give every partition of a label that never committed its first offset (where
    ``--start-from`` or the stream's beginning puts it); a partition another worker placed
    first keeps its row."""
    conn.executemany(
        "INSERT INTO partition_offsets (label, partition, entry_id, updated_at_ms, entries_read)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (label, partition) DO NOTHING",
        [(label, p, entry_id, now_ms, read) for p in range(partitions)],
    )
    save_low_water(conn, label, now_ms)


def save_low_water(conn: Sql, label: str, now_ms: int) -> None:
    """``stream_offsets`` holds the lowest partition offset: every game is applied up to it."""
    stored = load_offsets(conn, label)
    if not stored:
        return
    lowest = min(stored.values(), key=lambda o: entry_id_key(o.entry_id))
    offsets.set_to(conn, label, lowest.entry_id, now_ms, lowest.entries_read)


def heartbeat(conn: Sql, label: str, holder: str, node: str, now_ms: int, ttl_ms: int) -> None:
    """Say this worker is alive and shares ``label`` for another ``ttl_ms``."""
    conn.execute(
        "INSERT INTO workers (label, holder, node, started_at_ms, expires_at_ms)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (label, holder) DO UPDATE"
        " SET expires_at_ms = excluded.expires_at_ms",
        [label, holder, node, now_ms, now_ms + ttl_ms],
    )


def leave(conn: Sql, label: str, holder: str) -> None:
    """This worker stops sharing ``label``."""
    conn.execute("DELETE FROM workers WHERE label = ? AND holder = ?", [label, holder])


def live_workers(conn: Sql, label: str, node: str, now_ms: int) -> list[str]:
    """The holder ids of the workers sharing ``label`` now, in the order shares are dealt:
    heartbeat not expired, and not a process known to be dead on this node."""
    rows = conn.execute(
        "SELECT holder, node FROM workers WHERE label = ? AND expires_at_ms > ? ORDER BY holder",
        [label, now_ms],
    )
    return [
        str(holder)
        for holder, its_node in rows
        if not (node and its_node == node and leases.process_gone(str(holder)))
    ]


def fair_share(partitions: int, workers: Sequence[str], holder: str) -> int:
    """How many partitions ``holder`` should hold: ``N // W``, one more for the first
    ``N % W`` workers in holder order (so the shares add up to exactly N)."""
    if holder not in workers:
        workers = sorted([*workers, holder])
    rank = list(workers).index(holder)
    base, extra = divmod(partitions, len(workers))
    return base + (1 if rank < extra else 0)


def change_count(
    conn: Sql,
    label: str,
    new_count: int,
    sources: Mapping[int, Iterable[int]],
    now_ms: int,
) -> dict[int, tuple[str, int] | None]:
    """Re-partition ``label`` to ``new_count`` in the caller's transaction.

    ``sources`` maps each new partition to the old partitions whose games it takes over;
    it starts from the lowest of their offsets (the per-record mark keeps the entries some
    of them already applied from applying again). Every holder, old and new layout, is
    fenced: each lease row gets an epoch above every epoch the label had, and no holder.
    Returns each new partition's starting offset (None where the label never committed).
    """
    old_count = count(conn, label)
    old_offsets: dict[int, tuple[str, int] | None]
    if old_count == 1:
        entry = offsets.load(conn, label)
        old_offsets = {
            0: None if entry is None else (entry, offsets.entries_read(conn, label) or 0)
        }
    else:
        stored = load_offsets(conn, label)
        old_offsets = {
            p: (stored[p].entry_id, stored[p].entries_read) if p in stored else None
            for p in range(old_count)
        }
    label_lease = leases.read(conn, label)
    old_leases = read_leases(conn, label)
    epochs = [lease.epoch for lease in old_leases.values()]
    if label_lease is not None:
        epochs.append(label_lease.epoch)
    epoch = max(epochs, default=0) + 1

    starts: dict[int, tuple[str, int] | None] = {}
    for partition in range(new_count):
        found = [old_offsets.get(p) for p in sources[partition]]
        known = [offset for offset in found if offset is not None]
        if not known:
            starts[partition] = None
        else:
            starts[partition] = min(known, key=lambda offset: entry_id_key(offset[0]))

    if label_lease is not None:  # the single-partition holder, if any, is fenced
        conn.execute(
            "UPDATE leases SET epoch = ?, expires_at_ms = 0 WHERE label = ?", [epoch, label]
        )
    conn.execute("DELETE FROM partition_leases WHERE label = ?", [label])
    conn.execute("DELETE FROM partition_offsets WHERE label = ?", [label])
    if new_count == 1:
        if label_lease is None and old_leases:
            conn.execute(
                f"INSERT INTO leases ({_LEASE_COLUMNS.replace('partition, ', '')})"
                " VALUES (?, '', '', ?, 0, 0)",
                [label, epoch],
            )
        start = starts[0]
        if start is not None:
            offsets.set_to(conn, label, start[0], now_ms, start[1])
    else:
        conn.executemany(
            f"INSERT INTO partition_leases ({_LEASE_COLUMNS}) VALUES (?, ?, '', '', ?, 0, 0)",
            [(label, partition, epoch) for partition in range(new_count)],
        )
        placed = {p: start for p, start in starts.items() if start is not None}
        if placed:
            set_offsets(conn, label, placed, now_ms)
    conn.execute(
        "INSERT INTO label_partitions (label, partitions, changed_at_ms) VALUES (?, ?, ?)"
        " ON CONFLICT (label) DO UPDATE SET partitions = excluded.partitions,"
        " changed_at_ms = excluded.changed_at_ms",
        [label, new_count, now_ms],
    )
    return starts


__all__ = ["START_ID", "PartitionLease", "PartitionOffset"]
