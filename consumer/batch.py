"""Applying one batch of stream entries: every effect and the offset commit together.

The protocol per batch: decode every entry (no I/O), load all the records it names in a few
queries, drive each event through the shared machine in stream order, then write records,
outbox rows, dead letters and the new offset inside one ``BEGIN IMMEDIATE`` transaction.
The same entries give the same result whatever the batch size.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import sqlite_utils

from consumer import constants as c
from consumer.codec import decode_health_event
from consumer.faults import FaultPoint, hit
from consumer.models import HealthEvent
from statemachine import REACTIONS, RuntimeMachine, RuntimeRecord, Status
from statemachine.errors import DecodeError
from store import dead_letters, offsets, outbox, records
from store.database import immediate

log = logging.getLogger(__name__)

RawEntry = tuple[bytes, Mapping[bytes, bytes]]
"""An entry as XREAD returns it with ``decode_responses=False``: (id, fields)."""


@dataclass(slots=True)
class BatchResult:
    """What one committed batch did, for logs and metrics."""

    last_entry_id: str
    entries: int = 0
    applied: int = 0
    snapshots: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    transitions: Counter[tuple[Status, Status]] = field(default_factory=Counter)
    cas_misses: Counter[str] = field(default_factory=Counter)


def _reject(
    result: BatchResult,
    entry_id: str,
    stream: str,
    error: DecodeError,
    fields: Mapping[bytes, bytes],
    now_ms: int,
    game_id: str | None = None,
) -> dead_letters.DeadLetter:
    result.rejected[error.reason] += 1
    log.warning(
        "rejected entry %s: %s: %s",
        entry_id,
        error.reason,
        error,
        extra={"entry_id": entry_id, "game_id": game_id, "reason": error.reason},
    )
    text = dead_letters.raw_fields_text(fields)
    return dead_letters.DeadLetter(entry_id, stream, error.reason, str(error), text, now_ms)


def _decode_all(
    entries: Sequence[RawEntry], stream: str, now_ms: int, result: BatchResult
) -> list[tuple[int, HealthEvent | dead_letters.DeadLetter, Mapping[bytes, bytes]]]:
    decoded: list[tuple[int, HealthEvent | dead_letters.DeadLetter, Mapping[bytes, bytes]]] = []
    for position, (raw_id, fields) in enumerate(entries):
        entry_id = raw_id.decode()
        try:
            decoded.append((position, decode_health_event(entry_id, fields), fields))
        except DecodeError as error:
            dead = _reject(result, entry_id, stream, error, fields, now_ms)
            decoded.append((position, dead, fields))
    return decoded


def apply_batch(
    db: sqlite_utils.Database,
    machine: RuntimeMachine,
    entries: Sequence[RawEntry],
    *,
    stream: str,
    label: str,
    now_ms: int,
) -> BatchResult:
    """Apply ``entries`` (non-empty, in stream order) and commit them with the offset."""
    result = BatchResult(last_entry_id=entries[-1][0].decode(), entries=len(entries))
    decoded = _decode_all(entries, stream, now_ms, result)
    with immediate(db) as conn:
        game_ids = {item.game_id for _, item, _ in decoded if isinstance(item, HealthEvent)}
        loaded = records.load_many(conn, game_ids)
        touched: dict[str, RuntimeRecord] = {}
        snapshots: list[outbox.OutboxRow] = []
        rejected: list[dead_letters.DeadLetter] = []
        for _, item, fields in decoded:
            if not isinstance(item, HealthEvent):
                rejected.append(item)
                continue
            record = loaded.get(item.game_id)
            if record is None:
                error = DecodeError(
                    c.REASON_UNKNOWN_GAME, f"no runtime record for game {item.game_id!r}"
                )
                rejected.append(
                    _reject(result, item.entry_id, stream, error, fields, now_ms, item.game_id)
                )
                continue
            effect = machine.apply(record, item.event_type, now_ms)
            touched[record.game_id] = record
            result.applied += 1
            if effect.status_changed and effect.from_status is not None:
                result.transitions[(effect.from_status, record.state)] += 1
                log.debug(
                    "game %s: %s -> %s on %s",
                    record.game_id,
                    effect.from_status.value,
                    record.state.value,
                    item.entry_id,
                )
            elif REACTIONS[item.event_type].cas is not None:
                result.cas_misses[item.event_type.value] += 1
            if effect.snapshot_due:
                snapshots.append(
                    outbox.OutboxRow(
                        item.entry_id,
                        record.game_id,
                        record.state.value,
                        record.engine_health,
                        record.current_turn,
                        now_ms,
                    )
                )
        result.snapshots = len(snapshots)
        records.save_many(conn, touched.values())
        outbox.enqueue(conn, snapshots)
        dead_letters.add_many(conn, rejected)
        offsets.save(conn, label, result.last_entry_id, now_ms)
        hit(FaultPoint.BEFORE_COMMIT)
    hit(FaultPoint.AFTER_COMMIT)
    return result
