"""Replaying dead letters into the input stream once their cause is fixed."""

from __future__ import annotations

import json

import redis

from consumer.runtime.clock import format_ms, wall_clock_ms
from statemachine.errors import HealthFsmError
from store import dead_letters, holders
from store.backend import Store

REPLAY_CLAIM_TIMEOUT_MS = 10 * 60 * 1000
"""A replay claim older than this may be taken by ``--id`` even if its claimer may live."""


def _replayable(row: dict[str, object]) -> dict[str, str] | None:
    """The original fields, or None when the kept copy is not faithful (cut or undecodable)."""
    try:
        fields = json.loads(str(row["fields"]))
    except ValueError:
        return None  # cut at RAW_FIELDS_LIMIT
    if not isinstance(fields, dict) or any("\\x" in k + v for k, v in fields.items()):
        return None  # bytes that were not UTF-8 were escaped: the copy is not the original
    return {str(k): str(v) for k, v in fields.items()}


def _claim_is_free(row: dict[str, object], now_ms: int) -> bool:
    claimer = row["claimed_by"]
    if claimer is None:
        return True
    claimed_at = int(str(row["claimed_at_ms"] or 0))
    return holders.process_gone(str(claimer)) or now_ms - claimed_at > REPLAY_CLAIM_TIMEOUT_MS


def _choose_and_claim(
    db: Store,
    claimer: str,
    reason: str | None,
    ids: list[int],
    limit: int,
) -> tuple[list[tuple[int, dict[str, str]]], list[str]]:
    """Pick the rows to send, oldest first, and claim them in one write transaction."""
    now = wall_clock_ms()
    skipped: list[str] = []
    chosen: list[tuple[int, dict[str, str]]] = []
    with db.write() as conn:
        if ids:
            rows = dead_letters.by_ids(conn, ids)
            found = {int(str(row["id"])) for row in rows}
            skipped += [
                f"id {i} (no dead letter has it: replayed already, or never kept)"
                for i in sorted(set(ids) - found)
            ]
            if reason is not None:
                skipped += [
                    f"id {row['id']} (its reason is {row['reason']}, not {reason})"
                    for row in rows
                    if row["reason"] != reason
                ]
                rows = [row for row in rows if row["reason"] == reason]
        else:
            rows = dead_letters.oldest_unclaimed(conn, reason, limit)
        for row in rows:
            if not _claim_is_free(row, now):
                skipped.append(
                    f"{row['entry_id']} (claimed by {row['claimed_by']} at"
                    f" {format_ms(int(str(row['claimed_at_ms'])))}: another replay is sending it)"
                )
                continue
            fields = _replayable(row)
            if fields is None:
                skipped.append(f"{row['entry_id']} (kept fields are cut or were not UTF-8)")
                continue
            chosen.append((int(str(row["id"])), fields))
        dead_letters.claim(conn, [i for i, _ in chosen], claimer, now)
    return chosen, skipped


def replay_dead_letters(
    db: Store,
    client: redis.Redis,
    stream: str,
    *,
    reason: str | None,
    ids: list[int],
    limit: int,
) -> tuple[int, list[str]]:
    """XADD selected dead letters back to ``stream`` as new entries, oldest first, then
    forget them.

    Each row is claimed in the store before it is sent, so concurrent replays never send
    one twice; a crash after the claim leaves the row visibly claimed in ``dead-letters
    list``, and ``--id`` sends it again once its claimer is gone. Returns (replayed,
    skipped entry ids with why).
    """
    claimer = holders.new_holder_id()
    chosen, skipped = _choose_and_claim(db, claimer, reason, ids, limit)
    if not chosen:
        return 0, skipped
    pipe = client.pipeline(transaction=False)
    for _, fields in chosen:
        pipe.xadd(stream, fields)  # type: ignore[arg-type]
    replies = pipe.execute(raise_on_error=False)
    sent = [i for (i, _), reply in zip(chosen, replies, strict=True) if not _failed(reply)]
    refused = [i for (i, _), reply in zip(chosen, replies, strict=True) if _failed(reply)]
    with db.write() as conn:
        dead_letters.delete_claimed(conn, sent, claimer)
        dead_letters.unclaim(conn, refused, claimer)
    if refused:
        error = next(reply for reply in replies if _failed(reply))
        raise HealthFsmError(
            f"redis refused {len(refused)} of {len(chosen)} replayed entries ({error});"
            f" {len(sent)} were sent, the rest stay in dead_letters"
        )
    return len(sent), skipped


def _failed(reply: object) -> bool:
    return isinstance(reply, Exception)
