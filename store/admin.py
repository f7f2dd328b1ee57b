"""Operator writes: registering a game and the admin compare-and-swap on its status."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from statemachine import ADMIN_TRIGGER, RuntimeRecord, Status, get_machine
from store import history, outbox, records, traffic
from store.backend import Store
from store.errors import GameExists


def add_game(db: Store, game_id: str, status: Status, turn: int, now_ms: int) -> RuntimeRecord:
    """Register ``game_id``; ``GameExists`` if it is already registered."""
    [record] = add_games(db, [game_id], status, turn, now_ms)
    return record


NAMED_AT_MOST = 5
"""Ids a refusal names before it says how many more there are."""


def add_games(
    db: Store, game_ids: Sequence[str], status: Status, turn: int, now_ms: int
) -> list[RuntimeRecord]:
    """Register every game of ``game_ids`` in one transaction, or none: ``GameExists`` names
    the ids repeated in the call or already registered, and nothing is added."""
    repeated = [game_id for game_id, n in Counter(game_ids).items() if n > 1]
    if repeated:
        raise GameExists(f"{_named(repeated)} given more than once; nothing was added")
    added = [RuntimeRecord(game_id, status, "", turn, now_ms, None) for game_id in game_ids]
    with db.write() as sql:
        taken = sorted(records.load_many(sql, game_ids))
        if len(taken) == 1:
            raise GameExists(
                f"game {taken[0]!r} already has a runtime record"
                + ("; nothing was added" if len(game_ids) > 1 else "")
            )
        if taken:
            raise GameExists(f"{_named(taken)} already have runtime records; nothing was added")
        records.add_many(sql, added)
    return added


def _named(game_ids: Sequence[str]) -> str:
    """``game 'a'`` / ``games 'a', 'b' and 3 more`` for messages."""
    shown = ", ".join(repr(game_id) for game_id in game_ids[:NAMED_AT_MOST])
    more = len(game_ids) - NAMED_AT_MOST
    tail = f" and {more} more" if more > 0 else ""
    return f"game{'s' if len(game_ids) > 1 else ''} {shown}{tail}"


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
            game_id,
            source,
            history.ADMIN_CAUSE,
            expected.value,
            to.value,
            record.engine_health,
            now_ms,
            1,
        )
        history.add_many(conn, [change])
        records.save(conn, record)
        traffic.add(conn, {traffic.Edge(ADMIN_TRIGGER, expected.value, to.value): 1}, now_ms)
    return record
