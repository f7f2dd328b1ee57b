"""Operator writes: registering a game and the admin compare-and-swap on its status."""

from __future__ import annotations

from statemachine import RuntimeRecord, Status, get_machine
from store import history, outbox, records
from store.backend import Store


def add_game(db: Store, game_id: str, status: Status, turn: int, now_ms: int) -> RuntimeRecord:
    """Register ``game_id``; ``GameExists`` if it is already registered."""
    record = RuntimeRecord(game_id, status, "", turn, now_ms, None)
    with db.write() as sql:
        records.add(sql, record)
    return record


ADMIN_SOURCE_PREFIX = "admin-"
"""``source_entry_id`` of an admin change's snapshot: ``admin-<outbox seq>``.

A stream entry id is ``MS-SEQ`` in digits, so this never collides with one; the outbox
sequence is never reused, so it is unique, and it is stored with the row, so a snapshot
published twice carries the same id both times.
"""


def set_status(db: Store, game_id: str, expected: Status, to: Status, now_ms: int) -> RuntimeRecord:
    """Move ``game_id`` from ``expected`` to ``to`` through the shared transition table.

    Runs in one write transaction holding the record (SQLite's write lock, PostgreSQL's
    row lock), so it cannot interleave with a consumer batch or another service's update:
    the status it compares is the status it replaces. The change's ``runtime_snapshot_update``
    is queued in the outbox in the same transaction; the worker publishes it. Raises
    ``GameNotFound``, ``StatusConflict`` (not in ``expected``) or ``TransitionNotAllowed``.
    """
    with db.write() as conn:
        record = records.get(conn, game_id, for_update=True)
        get_machine().set_status(record, expected, to, now_ms)
        record.last_emitted_summary = record.engine_health
        snapshot = outbox.OutboxRow(
            "", game_id, to.value, record.engine_health, record.current_turn, now_ms
        )
        [(seq, _)] = outbox.enqueue(conn, [snapshot])
        source = f"{ADMIN_SOURCE_PREFIX}{seq}"
        outbox.set_source(conn, seq, source)
        change = history.HistoryRow(
            game_id, source, "admin", expected.value, to.value, record.engine_health, now_ms
        )
        history.add_many(conn, [change])
        records.save(conn, record)
    return record
