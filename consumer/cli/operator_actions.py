"""Operator actions that touch both Redis and the store: health check, replay, outbox flush."""

from __future__ import annotations

import json

import redis

from consumer.cli.partition_actions import check_partitions, partition_rows
from consumer.contract.fence import fence_key
from consumer.errors import CheckFailed, ScriptingRefused
from consumer.runtime.clock import format_ms, wall_clock_ms
from consumer.runtime.fence import fence_floor
from consumer.runtime.position import reset_remedy
from consumer.runtime.redis_client import client_for, redact_url
from consumer.runtime.relay import OutboxRelay
from consumer.runtime.stream_view import find_gap, find_reset, stream_view
from consumer.runtime.wording import counted
from consumer.settings import ConsumerSettings
from statemachine.errors import HealthFsmError
from store import SCHEMA_VERSION, dead_letters, holders, offsets, open_database, partitions
from store.backend import Store
from store.errors import LeaseHeld
from store.partitions import PartitionLease
from store.sql import Sql

REPLAY_CLAIM_TIMEOUT_MS = 10 * 60 * 1000
"""A replay claim older than this may be taken by ``--id`` even if its claimer may live."""


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


def check(settings: ConsumerSettings) -> str:
    """Redis answers, the database opens at the current schema, the offset is in the stream."""
    db = open_database(settings.db_path, read_only=True)
    try:
        offset = offsets.load(db.conn, settings.label) or offsets.START_ID
        read = offsets.entries_read(db.conn, settings.label)
        lease = partition_rows(db.conn, settings.label, wall_clock_ms())[0]["lease"]
        location = db.location
        client = client_for(settings)
        try:
            client.ping()
            view = stream_view(client, settings.stream)
            fence_floor(client, fence_key(settings.lobby_stream, settings.label))
        except ScriptingRefused as error:
            raise CheckFailed(str(error)) from error
        except redis.RedisError as error:
            raise CheckFailed(f"redis at {redact_url(settings.redis_url)}: {error}") from error
        finally:
            client.close()
        now = wall_clock_ms()
        ttl_ms = int(settings.lease_ttl_s * 1000)
        problems = check_partitions(db.conn, settings.label, view, now, ttl_ms)
        count = partitions.count(db.conn, settings.label)
        held = len(
            [p for p in partitions.read_leases(db.conn, settings.label).values() if p.live(now)]
        )
    finally:
        db.close()
    if problems:
        raise CheckFailed(
            problems[0] + (f" (and {len(problems) - 1} more)" if problems[1:] else "")
        )
    reset = find_reset(view, offset, read)
    if reset is not None:
        raise CheckFailed(
            f"stream {settings.stream} was reset: {reset.why};"
            f" {reset_remedy(settings.label, location)}"
        )
    gap = find_gap(view, offset, read)
    if gap is not None:
        where = (
            f"older than the first entry {gap.resume_at}"
            if gap.resume_at is not None
            else f"behind its last id {view.last_generated_id if view else '?'} with nothing"
            " left to read"
        )
        raise CheckFailed(
            f"stored offset {offset} is {where} of {settings.stream}: unread entries were"
            " trimmed (a running worker reports them and reads on)"
        )
    length = view.length if view else 0
    if count > 1:
        return (
            f"ok: redis answers, schema v{SCHEMA_VERSION}, offset {offset}"
            f" ({counted(length, 'entry', 'entries')} in stream), {count} partitions, {held} held,"
            " publish fenced at Redis"
        )
    return (
        f"ok: redis answers, schema v{SCHEMA_VERSION}, offset {offset}"
        f" ({counted(length, 'entry', 'entries')} in stream), lease {lease},"
        " publish fenced at Redis"
    )


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
            if reason is not None:
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


def flush_outbox(db: Store, client: redis.Redis, lobby_stream: str, *, force: bool = False) -> int:
    """Publish every pending snapshot now (what the worker does on start).

    Refused while a worker holds a lease: it publishes the same rows, and two publishers
    repeat snapshots and can put an older one after a newer one.
    """
    refuse_while_leased(db, None, "refusing to flush the outbox", force)
    relay = OutboxRelay(db, client, lobby_stream)
    try:
        return relay.publish()
    finally:
        relay.close()
