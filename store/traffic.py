"""How often the machine takes each edge: counts per hour, kept with the records they changed.

Every batch adds the edges its events took in its own transaction (and an admin
``set-status`` its pair in its own), so the counts agree with the records exactly, over
restarts and across workers, where a process's metrics start from zero with it. An edge is
(trigger, source status, outcome): the outcome is the status the record went to, or
``SUMMARY_ONLY`` when it kept its status (the compare-and-swap missed, or the event never
changes one). ``healthfsm diagram --traffic`` draws them and the suite measures its own edge
coverage from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, assert_never

from statemachine.edges import SUMMARY_ONLY, Edge
from store.sql import Sql

__all__ = ["SUMMARY_ONLY", "Edge", "HourlyWriter", "Traffic", "add", "bucket_of", "read"]

BUCKET_MS = 3_600_000
"""One row per edge and hour (UTC hours since the epoch)."""

KEEP_MS = 90 * 24 * BUCKET_MS
"""Buckets older than 90 days before the newest count are dropped by the write that adds it:
at most 63 edges x 2,160 hours (about 136,000 rows, a few MB) whatever the traffic."""


def bucket_of(at_ms: int) -> int:
    """The start of the hour ``at_ms`` falls in."""
    return at_ms - at_ms % BUCKET_MS


def add(conn: Sql, counts: Mapping[Edge, int], at_ms: int, *, prune: bool = True) -> None:
    """Add ``counts`` to the hour of ``at_ms`` inside the caller's transaction, and (with
    ``prune``) drop the buckets older than ``KEEP_MS`` before it.

    Rows are written in key order, so two workers adding to the same hour (PostgreSQL)
    lock them in one order and never wait on each other in a cycle; the caller adds last
    in its transaction, so the row locks are held only until its commit."""
    if not counts:
        return
    bucket = bucket_of(at_ms)
    rows = sorted((bucket, *edge, n) for edge, n in counts.items() if n)
    match conn.dialect:
        case "postgres":
            conn.execute(
                "INSERT INTO runtime_traffic (bucket_ms, trigger, from_status, outcome, count)"
                " SELECT ?::bigint, t, f, o, n"
                " FROM unnest(?::text[], ?::text[], ?::text[], ?::bigint[]) AS v(t, f, o, n)"
                " ORDER BY t, f, o" + _ADD,
                [bucket, *([row[i] for row in rows] for i in range(1, 5))],
            )
        case "sqlite":
            conn.executemany(
                "INSERT INTO runtime_traffic (bucket_ms, trigger, from_status, outcome, count)"
                " VALUES (?, ?, ?, ?, ?)" + _ADD,
                rows,
            )
        case _:
            assert_never(conn.dialect)
    if prune:
        conn.execute("DELETE FROM runtime_traffic WHERE bucket_ms < ?", [bucket - KEEP_MS])


class HourlyWriter:
    """A worker's writer of counts: drops the old hours at its first write of each hour, not
    with every batch (a statement less per batch; the table may hold one hour more)."""

    def __init__(self) -> None:
        self._pruned_for: int | None = None

    def add(self, conn: Sql, counts: Mapping[Edge, int], at_ms: int) -> None:
        """``add``, pruning once per hour of ``at_ms``."""
        bucket = bucket_of(at_ms)
        add(conn, counts, at_ms, prune=bucket != self._pruned_for)
        self._pruned_for = bucket


_ADD = (
    " ON CONFLICT (bucket_ms, trigger, from_status, outcome)"
    " DO UPDATE SET count = runtime_traffic.count + excluded.count"
)


class Traffic(NamedTuple):
    """The counts of a window of buckets, summed per edge."""

    counts: dict[Edge, int]
    first_bucket_ms: int | None
    """The oldest bucket with a count in the window (None: nothing counted)."""
    last_bucket_ms: int | None


def read(conn: Sql, since_ms: int | None = None) -> Traffic:
    """Every edge's count over the buckets from the one holding ``since_ms`` on (all kept
    buckets without it)."""
    start = bucket_of(since_ms) if since_ms is not None else 0
    rows = conn.execute(
        "SELECT trigger, from_status, outcome, sum(count), min(bucket_ms), max(bucket_ms)"
        " FROM runtime_traffic WHERE bucket_ms >= ? GROUP BY trigger, from_status, outcome",
        [start],
    ).fetchall()
    counts = {Edge(t, f, o): int(n) for t, f, o, n, _, _ in rows}
    firsts = [int(row[4]) for row in rows]
    lasts = [int(row[5]) for row in rows]
    return Traffic(counts, min(firsts, default=None), max(lasts, default=None))
