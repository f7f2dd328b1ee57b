"""A label's ownership: its partition count, a lease and an offset per partition, and the
workers sharing them. One model for every count: a label with one partition (the default)
is a label whose partition 0 holds every game.

Each partition has a row in ``partition_owners`` (holder, node, epoch, expiry: the epoch
grows with every new holder and is the fencing token; a batch commits only while every row
it holds still names its holder and epoch) and in ``partition_offsets``. ``stream_offsets``
keeps the label's low-water mark (the lowest partition offset), so tools that read it see
how far every game is applied; the views ``leases`` (partition 0 of a one-partition label)
and ``partition_leases`` show the lease rows as earlier releases kept them. ``workers``
holds a heartbeat per worker, from which each one computes its fair share.

Every function runs inside the caller's transaction; times are wall-clock milliseconds,
because the rows are compared by processes on other machines.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from store import holders, offsets
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
    released_at_ms: int = 0
    """When its holder gave it up (its expiry is 0 then); 0 while held or never released."""

    def live(self, now_ms: int) -> bool:
        """Whether it still binds others at ``now_ms`` (a released lease has expiry 0)."""
        return self.expires_at_ms > now_ms

    def describe(self) -> str:
        """``holder (epoch N)`` for messages, or ``nobody`` for a free partition."""
        return f"{self.holder} (epoch {self.epoch})" if self.holder else "nobody"

    def binds(self, holder: str, node: str, now_ms: int) -> bool:
        """Whether it keeps ``holder`` out: another's, live, and not known to be dead."""
        return (
            bool(self.holder)
            and self.holder != holder
            and self.live(now_ms)
            and not holders.dead_here(self.holder, self.node, node)
        )


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


def changed_at(conn: Sql, label: str) -> int:
    """When ``label``'s partition count last changed (0: never by an operator)."""
    row = conn.execute("SELECT changed_at_ms FROM label_partitions WHERE label = ?", [label])
    found = row.fetchone()
    return 0 if found is None else int(found[0])


def _lock_count(conn: Sql, label: str) -> None:
    """Hold ``label``'s count for the rest of the transaction, so a re-partition and a
    worker joining see each other whole (PostgreSQL; a SQLite write transaction holds the
    whole file). Without it a worker joining while ``partitions set`` ran read the old
    count and gave the new layout lease rows of the old one, which no worker would then
    take (the rows no longer matched the count)."""
    conn.execute(
        "SELECT partitions FROM label_partitions WHERE label = ?" + conn.lock_for_update, [label]
    )


def held_count(conn: Sql, label: str) -> int:
    """The label's partition count, held until the transaction ends: a worker taking
    partitions under it knows no re-partition slips in between."""
    _lock_count(conn, label)
    return count(conn, label)


def ensure(conn: Sql, label: str) -> None:
    """Give ``label`` its count (1 when new) and a lease row for each partition, so a worker
    finds a row to take for every partition (a new label, or one that was never held); a
    row beyond the count (left by an earlier release's race) goes."""
    conn.execute(
        "INSERT INTO label_partitions (label, partitions, changed_at_ms) VALUES (?, 1, 0)"
        " ON CONFLICT (label) DO NOTHING",
        [label],
    )
    partitions = held_count(conn, label)
    conn.executemany(
        f"INSERT INTO partition_owners ({_LEASE_COLUMNS}) VALUES (?, ?, '', '', 0, 0, 0, 0)"
        " ON CONFLICT (label, partition) DO NOTHING",
        [(label, p) for p in range(partitions)],
    )
    conn.execute(
        "DELETE FROM partition_owners WHERE label = ? AND partition >= ?", [label, partitions]
    )


_LEASE_COLUMNS = (
    "label, partition, holder, node, epoch, acquired_at_ms, expires_at_ms, released_at_ms"
)


def read_leases(conn: Sql, label: str) -> dict[int, PartitionLease]:
    """The lease rows of ``label``'s partitions (empty for a label no worker joined yet)."""
    rows = conn.execute(
        f"SELECT {_LEASE_COLUMNS} FROM partition_owners WHERE label = ? ORDER BY partition",
        [label],
    )
    return {int(row[1]): PartitionLease(*row) for row in rows}


def live_leases(conn: Sql, now_ms: int) -> list[PartitionLease]:
    """Every lease row that binds at ``now_ms``, any label, in label and partition order."""
    rows = conn.execute(
        f"SELECT {_LEASE_COLUMNS} FROM partition_owners"
        " WHERE holder <> '' AND expires_at_ms > ? ORDER BY label, partition",
        [now_ms],
    )
    return [PartitionLease(*row) for row in rows]


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
        released_at_ms=0,
    )
    updated = conn.execute(
        "UPDATE partition_owners SET holder = ?, node = ?, epoch = ?, acquired_at_ms = ?,"
        " expires_at_ms = ?, released_at_ms = 0"
        " WHERE label = ? AND partition = ? AND epoch = ? AND expires_at_ms = ?",
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
        "UPDATE partition_owners SET expires_at_ms = ?"
        f" WHERE label = ? AND holder = ? AND {clause}",
        [now_ms + ttl_ms, label, holder, *params],
    )
    return updated.rowcount == len(held)


def release(conn: Sql, label: str, holder: str, held: Mapping[int, int], now_ms: int) -> None:
    """Give these partitions up: expiry 0, and ``released_at_ms`` says since when nobody
    holds them (for ``check``); holder and epoch stay for the record."""
    if not held:
        return
    clause, params = _held_clause(held)
    conn.execute(
        "UPDATE partition_owners SET expires_at_ms = 0, released_at_ms = ?"
        f" WHERE label = ? AND holder = ? AND {clause}",
        [now_ms, label, holder, *params],
    )


def load_offsets(conn: Sql, label: str) -> dict[int, PartitionOffset]:
    """The committed offsets of ``label``'s partitions (empty before its first commit)."""
    rows = conn.execute(
        "SELECT partition, entry_id, updated_at_ms, entries_read FROM partition_offsets"
        " WHERE label = ? ORDER BY partition",
        [label],
    )
    return {int(row[0]): PartitionOffset(int(row[0]), row[1], row[2], row[3]) for row in rows}


def save_offsets(
    conn: Sql,
    label: str,
    moved: Mapping[int, tuple[str, int]],
    now_ms: int,
    *,
    only: bool = False,
) -> None:
    """Store each partition's new offset and add the entries it read past its old one,
    then the label's low-water mark in ``stream_offsets``. ``only``: ``moved`` is the
    label's only partition, so the mark is that offset and moves with it (no read)."""
    if only and len(moved) == 1:
        [(entry_id, read)] = moved.values()
        offsets.advance(conn, label, entry_id, now_ms, read)
    for partition, (entry_id, read) in moved.items():
        conn.execute(
            "INSERT INTO partition_offsets (label, partition, entry_id, updated_at_ms,"
            " entries_read) VALUES (?, ?, ?, ?, ?) ON CONFLICT (label, partition) DO UPDATE"
            " SET entry_id = excluded.entry_id, updated_at_ms = excluded.updated_at_ms,"
            " entries_read = partition_offsets.entries_read + excluded.entries_read",
            [label, partition, entry_id, now_ms, read],
        )
    if not only:
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
        if not (node and its_node == node and holders.process_gone(str(holder)))
    ]


def fair_share(
    partitions: int, workers: Sequence[str], holder: str, holding: Mapping[str, int]
) -> int:
    """How many partitions ``holder`` should hold: ``N // W``, one more for ``N % W`` of
    the workers (so the shares add up to exactly N). The extra ones go first to workers
    that already hold more than ``N // W`` (``holding``: holder -> count now), then in
    holder order: a worker keeps what it has, so a standby joining a one-partition label
    takes nothing from the active worker, and a rebalance moves only what it must."""
    if holder not in workers:
        workers = [*workers, holder]
    base, extra = divmod(partitions, len(workers))
    order = sorted(workers, key=lambda w: (holding.get(w, 0) <= base, w))
    return base + (1 if order.index(holder) < extra else 0)


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
    of them already applied from applying again). Every holder is fenced: each new lease
    row gets an epoch above every epoch the label had, and no holder. Returns each new
    partition's starting offset (None where the label never committed).
    """
    _lock_count(conn, label)
    stored = load_offsets(conn, label)
    old = {p: (o.entry_id, o.entries_read) for p, o in stored.items()}
    epoch = max((lease.epoch for lease in read_leases(conn, label).values()), default=0) + 1
    starts: dict[int, tuple[str, int] | None] = {}
    for partition in range(new_count):
        known = [old[p] for p in sources[partition] if p in old]
        starts[partition] = min(known, key=lambda o: entry_id_key(o[0])) if known else None
    conn.execute("DELETE FROM partition_owners WHERE label = ?", [label])
    conn.execute("DELETE FROM partition_offsets WHERE label = ?", [label])
    conn.executemany(
        f"INSERT INTO partition_owners ({_LEASE_COLUMNS}) VALUES (?, ?, '', '', ?, 0, 0, 0)",
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
