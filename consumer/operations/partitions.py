"""Operator actions on a label's partitions: show who holds what, re-partition, check each.

Every label has partitions (one by default, shown as partition 0).
"""

from __future__ import annotations

import redis

from consumer.contract.partitions import MAX_PARTITIONS, key_slot, partition_of_slot, slot_range
from consumer.runtime.clock import format_ms
from consumer.runtime.stream_view import StreamView, find_gap, find_reset, lag
from store import holders, offsets, partitions
from store.backend import Store
from store.sql import Sql


def sources(old_count: int, new_count: int) -> dict[int, list[int]]:
    """For each new partition, the old partitions whose slots (games) it takes over."""
    plan: dict[int, list[int]] = {}
    for partition in range(new_count):
        slots = slot_range(partition, new_count)
        first = partition_of_slot(slots.start, old_count)
        last = partition_of_slot(slots.stop - 1, old_count)
        plan[partition] = list(range(first, last + 1))
    return plan


def repartition(db: Store, label: str, new_count: int, now_ms: int) -> dict[str, object]:
    """Change ``label``'s partition count in one transaction (holders are fenced as it
    commits); return what changed, for the CLI's JSON line."""
    if not 1 <= new_count <= MAX_PARTITIONS:
        raise ValueError(f"a partition count is 1 to {MAX_PARTITIONS}, not {new_count}")
    with db.write() as conn:
        old_count = partitions.count(conn, label)
        if old_count == new_count:  # nothing to change: nobody is fenced, nothing moves
            current = {
                str(row["partition"]): row["entry_id"]
                for row in partition_rows(conn, label, now_ms)
            }
            return {
                "label": label,
                "partitions": new_count,
                "previous": old_count,
                "offsets": current,
                "changed": False,
            }
        starts = partitions.change_count(
            conn, label, new_count, sources(old_count, new_count), now_ms
        )
    return {
        "label": label,
        "partitions": new_count,
        "previous": old_count,
        "offsets": {str(p): None if start is None else start[0] for p, start in starts.items()},
        "changed": True,
    }


def describe(holder: str, epoch: int, expires_at_ms: int, now_ms: int) -> str:
    """``held by H (epoch N) until T``, ``free (last held by ...)``, or ``never held``."""
    if not holder:
        return "never held" if epoch <= 1 else f"free (epoch {epoch})"
    if expires_at_ms > now_ms:
        return f"held by {holder} (epoch {epoch}) until {format_ms(expires_at_ms)}"
    return f"free (last held by {holder} (epoch {epoch}))"


def partition_rows(conn: Sql, label: str, now_ms: int) -> list[dict[str, object]]:
    """One row per partition of ``label``: holder, epoch, expiry, offset, entries read."""
    count = partitions.count(conn, label)
    held = partitions.read_leases(conn, label)
    stored = partitions.load_offsets(conn, label)
    rows = []
    for partition in range(count):
        lease_row = held.get(partition)
        offset = stored.get(partition)
        rows.append(
            _row(
                label,
                partition,
                count,
                lease_row.holder if lease_row else "",
                lease_row.epoch if lease_row else 0,
                lease_row.expires_at_ms if lease_row else 0,
                offset.entry_id if offset else None,
                offset.entries_read if offset else None,
                now_ms,
            )
        )
    return rows


def _row(
    label: str,
    partition: int,
    count: int,
    holder: str,
    epoch: int,
    expires_at_ms: int,
    entry_id: str | None,
    entries_read: int | None,
    now_ms: int,
) -> dict[str, object]:
    live = bool(holder) and expires_at_ms > now_ms
    return {
        "label": label,
        "partition": partition,
        "partitions": count,
        "holder": holder if live else None,
        "epoch": epoch,
        "expires_at_ms": expires_at_ms if live else None,
        "entry_id": entry_id,
        "entries_read": entries_read,
        "lease": describe(holder, epoch, expires_at_ms, now_ms),
    }


def labels(conn: Sql) -> list[str]:
    """Every label with an offset or a partition count."""
    found = {str(row["label"]) for row in offsets.list_all(conn)}
    return sorted(found | set(partitions.counts(conn)))


def add_lag(rows: list[dict[str, object]], client: redis.Redis, stream: str, now_ms: int) -> None:
    """Put each partition's lag (entries after its offset) in its row."""
    from consumer.runtime.stream_view import stream_view

    view = stream_view(client, stream)
    for row in rows:
        entry_id = row["entry_id"]
        if entry_id is None:
            row["lag_entries"] = view.length if view is not None else 0
            continue
        read = row["entries_read"]
        entries, _ = lag(
            client, stream, str(entry_id), now_ms, view, read if isinstance(read, int) else None
        )
        row["lag_entries"] = entries


def game_partition(conn: Sql, label: str, game_id: str) -> dict[str, object]:
    """Where ``game_id`` belongs under ``label``'s partition count."""
    count = partitions.count(conn, label)
    slot = key_slot(game_id)
    return {
        "game_id": game_id,
        "label": label,
        "slot": slot,
        "partition": partition_of_slot(slot, count),
        "partitions": count,
    }


def unowned_for_ms(conn: Sql, label: str, now_ms: int, node: str) -> dict[int, int]:
    """The partitions of ``label`` that no live worker holds, with for how long: since
    their lease expired or was released, or since the count was set."""
    changed = partitions.changed_at(conn, label)
    unowned = {}
    for partition, lease in partitions.read_leases(conn, label).items():
        if not lease.binds("", node, now_ms):
            since = max(lease.expires_at_ms, lease.released_at_ms, changed)
            unowned[partition] = now_ms - since
    return unowned


def check_partitions(
    conn: Sql,
    label: str,
    view: StreamView | None,
    now_ms: int,
    ttl_ms: int,
) -> list[str]:
    """Why each partition of a multi-partition label fails the check (empty: it passes).

    A one-partition label with no live worker is a stopped deployment, which ``check``
    reports as a free lease and the no-active-worker alert pages for; a label shared by
    partitions can look alive while one of them stalls, so each must have a holder.
    """
    if partitions.count(conn, label) == 1:
        return []
    problems = []
    for partition, unowned in sorted(
        unowned_for_ms(conn, label, now_ms, holders.this_node()).items()
    ):
        if unowned > ttl_ms:
            problems.append(
                f"partition {partition} of label {label!r} has had no live holder for"
                f" {unowned / 1000:.1f}s (longer than the lease TTL); start a worker"
            )
    for partition, offset in sorted(partitions.load_offsets(conn, label).items()):
        if find_reset(view, offset.entry_id, offset.entries_read) is not None:
            problems.append(
                f"partition {partition}'s offset {offset.entry_id} is past the stream's end:"
                " the stream was reset"
            )
        elif find_gap(view, offset.entry_id, offset.entries_read) is not None:
            problems.append(
                f"partition {partition}'s offset {offset.entry_id} is behind the stream's first"
                " entry: unread entries were trimmed"
            )
    return problems
