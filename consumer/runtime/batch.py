"""Applying one batch of stream entries: every effect and the offset commit together.

The protocol per batch: decode every entry (no I/O), load all the records it names in a few
queries, drive each event through the shared machine in stream order, then write records,
outbox rows, dead letters and the new offset inside one write transaction.
The same entries give the same result whatever the batch size.

This is the per-event hot path: the loop avoids per-event allocations it does not need and
logs per event only at DEBUG; rejections are summed up in one WARNING per batch and reason
(``tests/test_log_output.py`` holds the CLI to that).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from consumer.contract import constants as c
from consumer.contract.bounds import DETAIL_CHARS, shorten
from consumer.contract.codec import DecodedEvent, decode_health_event
from consumer.errors import DecodeError
from consumer.runtime.faults import FaultPoint, hit
from consumer.runtime.rejection_log import RejectionLog
from statemachine import REACTIONS, EventType, RuntimeMachine, RuntimeRecord, Status
from store import dead_letters, history, outbox, partitions, records, traffic
from store.backend import RecordLoader, Store
from store.sql import Sql
from store.stream_id import not_after

log = logging.getLogger(__name__)

RawEntry = tuple[bytes, Mapping[bytes, bytes]]
"""An entry as XREAD returns it with ``decode_responses=False``: (id, fields)."""

CAS_EVENT_TYPES = frozenset(e for e, r in REACTIONS.items() if r.cas is not None)
"""Event types that attempt a status change (a miss is counted)."""


@dataclass(slots=True)
class BatchResult:
    """What one committed batch did, for the relay, logs and metrics."""

    last_entry_id: str
    entries: int = 0
    applied: int = 0
    skipped: int = 0
    """Entries of records that had already applied them (their ``last_entry_id``)."""
    snapshots: list[tuple[int, outbox.OutboxRow]] = field(default_factory=list)
    """The outbox rows this batch committed, with their sequence numbers, in order."""
    rejected: Counter[str] = field(default_factory=Counter)
    transitions: Counter[tuple[Status, Status, str]] = field(default_factory=Counter)
    """(from, to, trigger: the event type) of each status change, counted per batch."""
    cas_misses: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(event type, the status that held the record) of each compare-and-swap miss."""
    edges: Counter[traffic.Edge] = field(default_factory=Counter)
    """Every applied event's edge of the machine (store/traffic.py), added to the store's
    counts in the batch's transaction."""
    history: list[history.HistoryRow] = field(default_factory=list)


def _dead_letter(
    entry_id: str,
    stream: str,
    error: DecodeError,
    fields: Mapping[bytes, bytes],
    now_ms: int,
    game_id: str | None = None,
) -> dead_letters.DeadLetter:
    log.debug(
        "rejected entry %s: %s: %.1024s",
        entry_id,
        error.reason,
        error,
        extra={
            "entry_id": entry_id,
            "game_id": None if game_id is None else shorten(game_id),
            "reason": error.reason,
        },
    )
    text = dead_letters.raw_fields_text(fields)
    detail = shorten(str(error), DETAIL_CHARS)
    return dead_letters.DeadLetter(entry_id, stream, error.reason, detail, text, now_ms)


Fence = Callable[[Sql], None]
"""Checks, inside the batch's transaction, that the batch may still commit (or raises)."""

OffsetWriter = Callable[[Sql, "BatchResult", int], None]
"""Stores the batch's new offset inside its transaction (the label's, or its partitions')."""

Decoded = tuple[int, DecodedEvent, Mapping[bytes, bytes]]
Rejected = tuple[int, dead_letters.DeadLetter]


def _decode_all(
    entries: Sequence[RawEntry], stream: str, now_ms: int
) -> tuple[list[Decoded], list[Rejected]]:
    decoded: list[Decoded] = []
    rejected: list[Rejected] = []
    for position, (raw_id, fields) in enumerate(entries):
        entry_id = raw_id.decode()
        try:
            decoded.append((position, decode_health_event(entry_id, fields), fields))
        except DecodeError as error:
            rejected.append((position, _dead_letter(entry_id, stream, error, fields, now_ms)))
    return decoded, rejected


def _log_status_change(before: Status, record: RuntimeRecord, event: DecodedEvent) -> None:
    log.debug(
        "game %s: %s -> %s on %s",
        record.game_id,
        before.value,
        record.state.value,
        event.entry_id,
        extra={"entry_id": event.entry_id, "game_id": record.game_id},
    )


def _count_cells(result: BatchResult, cells: dict[tuple[EventType, Status, Status], int]) -> None:
    """The batch's counts, from each (event type, status before, status after) it applied:
    edges for the store, status changes and CAS misses for the metrics."""
    cas_types: frozenset[EventType] = CAS_EVENT_TYPES
    for (event_type, before, after), n in cells.items():
        trigger = event_type._value_
        if after is not before:
            result.transitions[(before, after, trigger)] += n
            outcome = after._value_
        else:
            outcome = traffic.SUMMARY_ONLY
            if event_type in cas_types:
                result.cas_misses[(trigger, before._value_)] += n
        result.edges[traffic.Edge(trigger, before._value_, outcome)] += n


def _drive(
    machine: RuntimeMachine,
    decoded: list[Decoded],
    loaded: dict[str, RuntimeRecord],
    rejected: list[Rejected],
    result: BatchResult,
    stream: str,
    now_ms: int,
) -> tuple[dict[str, RuntimeRecord], list[outbox.OutboxRow]]:
    """Apply the decoded events in stream order; return touched records and due snapshots.

    Enum values are read as ``_value_`` here: the ``value`` property costs ten times more,
    and this loop reads several per event.
    """
    apply = machine.apply
    touched: dict[str, RuntimeRecord] = {}
    snapshots: list[outbox.OutboxRow] = []
    changes = result.history
    cells: dict[tuple[EventType, Status, Status], int] = {}
    unknown = 0
    skipped = 0
    for position, event, fields in decoded:
        record = loaded.get(event.game_id)
        if record is None:
            unknown += 1
            error = DecodeError(
                c.REASON_UNKNOWN_GAME, f"no runtime record for game {shorten(event.game_id)!r}"
            )
            dead = _dead_letter(event.entry_id, stream, error, fields, now_ms, event.game_id)
            rejected.append((position, dead))
            continue
        mark = record.last_entry_id
        if (
            mark is not None
            and event.game_id not in touched  # marked earlier in this batch: older than this
            and not_after(event.entry_id, mark)
        ):
            skipped += 1  # applied before (a re-read): never twice
            continue
        record.last_entry_id = event.entry_id
        before = record.state
        health_before = record.engine_health
        effect = apply(record, event.event_type, now_ms)
        touched[event.game_id] = record
        after = record.state
        status = after._value_
        cell = (event.event_type, before, after)
        cells[cell] = cells.get(cell, 0) + 1
        if effect.status_changed:
            _log_status_change(before, record, event)
        if effect.status_changed or record.engine_health != health_before:
            changes.append(
                history.HistoryRow(
                    record.game_id,
                    event.entry_id,
                    event.event_type._value_,
                    before._value_,
                    status,
                    record.engine_health,
                    now_ms,
                    1 if effect.snapshot_due else 0,
                )
            )
        if effect.snapshot_due:
            snapshots.append(
                outbox.OutboxRow(
                    event.entry_id,
                    record.game_id,
                    status,
                    record.engine_health,
                    record.current_turn,
                    now_ms,
                )
            )
    result.applied = len(decoded) - unknown - skipped
    result.skipped = skipped
    _count_cells(result, cells)
    return touched, snapshots


def label_offset(label: str) -> OffsetWriter:
    """The offset writer of a label with one partition, held whole by the caller: partition
    0's row, and with it the label's low-water mark."""

    def save(conn: Sql, result: BatchResult, now_ms: int) -> None:
        moved = {0: (result.last_entry_id, result.entries)}
        partitions.save_offsets(conn, label, moved, now_ms, only=True)

    return save


@dataclass(frozen=True, slots=True)
class BatchTarget:
    """Everything a batch is applied with that stays the same from batch to batch: built
    once by the worker's builder (or a test), passed to every ``apply_batch``."""

    db: Store
    machine: RuntimeMachine
    stream: str
    """The health stream the entries come from (named in dead letters)."""
    label: str
    cache: RecordLoader | None = None
    """How the store loads records (SQLite keeps them between batches, PostgreSQL locks
    them); emptied when a batch fails, because the machine has already changed its records
    in memory. None: loaded afresh each batch."""
    fence: Fence | None = None
    """Checked inside the batch's transaction: the worker's leases are still its own."""
    save_offset: OffsetWriter | None = None
    """Stores the new offset in the transaction; None: the label's one partition."""
    rejections: RejectionLog = field(default_factory=RejectionLog)
    """Where committed rejections are told to the log (one WARNING per reason a minute)."""
    counts: traffic.HourlyWriter = field(default_factory=traffic.HourlyWriter)
    """Adds each batch's edges to the store's traffic table, in the batch's transaction."""


@dataclass(slots=True)
class DecodedBatch:
    """A batch decoded, before its transaction: what ``commit_batch`` writes."""

    decoded: list[Decoded]
    rejected: list[Rejected]
    result: BatchResult
    now_ms: int


def decode_batch(
    entries: Sequence[RawEntry],
    stream: str,
    now_ms: int,
    *,
    read_through: str | None = None,
    entries_read: int | None = None,
) -> DecodedBatch:
    """Decode ``entries`` (in stream order), no I/O. ``entries`` is what was read, or with
    partitions the part of it this worker applies: then ``read_through`` and
    ``entries_read`` say how far and how much was read (the offset moves past skipped
    entries too)."""
    last = read_through if read_through is not None else entries[-1][0].decode()
    read = entries_read if entries_read is not None else len(entries)
    decoded, rejected = _decode_all(entries, stream, now_ms)
    return DecodedBatch(decoded, rejected, BatchResult(last_entry_id=last, entries=read), now_ms)


def commit_batch(target: BatchTarget, batch: DecodedBatch) -> BatchResult:
    """Apply a decoded batch and commit it with the offset, in one write transaction.

    The worker confirms the previous batch's snapshots between ``decode_batch`` and this,
    so Redis appends them while the batch decodes."""
    cache = target.cache
    try:
        touched = _commit(target, batch)
    except BaseException:
        if cache is not None:
            cache.invalidate()
        raise
    if cache is not None:
        cache.committed(touched.values())
    hit(FaultPoint.AFTER_COMMIT)
    result = batch.result
    for _, dead in batch.rejected:
        result.rejected[dead.reason] += 1
    if batch.rejected:
        target.rejections.rejected((dead.reason, dead.entry_id) for _, dead in batch.rejected)
    return result


def apply_batch(
    target: BatchTarget,
    entries: Sequence[RawEntry],
    *,
    now_ms: int,
    read_through: str | None = None,
    entries_read: int | None = None,
) -> BatchResult:
    """Decode ``entries`` and commit them with the offset (``decode_batch``, then
    ``commit_batch``)."""
    batch = decode_batch(
        entries, target.stream, now_ms, read_through=read_through, entries_read=entries_read
    )
    return commit_batch(target, batch)


def _commit(target: BatchTarget, batch: DecodedBatch) -> dict[str, RuntimeRecord]:
    """The batch's one write transaction; returns the records it changed."""
    result, rejected, now_ms = batch.result, batch.rejected, batch.now_ms
    save_offset = target.save_offset or label_offset(target.label)
    with target.db.write() as conn:
        if target.fence is not None:
            target.fence(conn)
        game_ids = {event.game_id for _, event, _ in batch.decoded}
        load = records.load_many if target.cache is None else target.cache.load
        loaded = load(conn, game_ids)
        touched, snapshots = _drive(
            target.machine, batch.decoded, loaded, rejected, result, target.stream, now_ms
        )
        records.save_many(conn, touched.values())
        history.add_many(conn, result.history)
        result.snapshots = outbox.enqueue(conn, snapshots)
        if rejected:
            rejected.sort(key=lambda item: item[0])
            again = dead_letters.add_many(conn, [dead for _, dead in rejected])
            if again:  # read again after a re-partition or takeover: rejected before
                rejected[:] = [r for r in rejected if (r[1].stream, r[1].entry_id) not in again]
                result.skipped += len(again)
        save_offset(conn, result, now_ms)
        target.counts.add(conn, result.edges, now_ms)  # last: rows locked until commit
        hit(FaultPoint.BEFORE_COMMIT)
    return touched
