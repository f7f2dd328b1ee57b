"""Decoding health events and encoding snapshots: plain functions, no I/O.

Entries are read as bytes and each field is checked here by hand, so that one bad entry
raises ``DecodeError`` with a precise reason and never disturbs its neighbours.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import NamedTuple

from consumer.contract import constants as c
from consumer.contract.bounds import shorten
from consumer.contract.snapshot import RuntimeSnapshotUpdate
from consumer.errors import DecodeError
from statemachine.enums import EVENT_TYPE_BY_VALUE, EventType
from store.outbox import OutboxRow


class DecodedEvent(NamedTuple):
    """A health event that passed every decode rule.

    A plain tuple, not a pydantic model: this is the per-event hot path, and the checks
    below are the contract's rules exactly (a model would accept more: ``tests/test_codec.py``
    checks each rule and that the short path agrees with the precise one).
    """

    entry_id: str
    game_id: str
    event_type: EventType
    occurred_at_ms: int


def _text(fields: Mapping[bytes, bytes], name: bytes) -> str:
    raw = fields.get(name)
    label = name.decode()
    if raw is None:
        raise DecodeError(c.REASON_MISSING_FIELD, f"missing {label}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DecodeError(c.REASON_INVALID_FIELD, f"{label} is not valid UTF-8") from error
    if not text.strip():
        raise DecodeError(c.REASON_MISSING_FIELD, f"{label} is blank")
    return text


def _occurred_at_ms(fields: Mapping[bytes, bytes]) -> int:
    raw = fields.get(c.FIELD_OCCURRED_AT_MS)
    if raw is None or not raw:
        raise DecodeError(c.REASON_MISSING_FIELD, "missing occurred_at_ms")
    # bytes.isdigit() is ASCII-only: it refuses signs, spaces, '_', '.', 'e' and non-ASCII digits.
    if not raw.isdigit():
        shown = raw[:32].decode("utf-8", "backslashreplace")
        raise DecodeError(c.REASON_INVALID_FIELD, f"occurred_at_ms {shown!r} is not base-10 digits")
    significant = raw.lstrip(b"0")  # leading zeros are digits too: 0001 is 1
    if len(significant) > 19 or (value := int(raw)) > c.INT64_MAX:
        raise DecodeError(c.REASON_INVALID_FIELD, "occurred_at_ms does not fit in int64")
    if value <= 0:
        raise DecodeError(c.REASON_INVALID_FIELD, "occurred_at_ms must be positive")
    return value


_EVENT_TYPE_BY_RAW: dict[bytes, EventType] = {e.value.encode(): e for e in EventType}

_SAFE_DIGITS = 18
"""Any run of at most 18 decimal digits fits in int64, so no bound check is needed."""


def decode_health_event(entry_id: str, fields: Mapping[bytes, bytes]) -> DecodedEvent:
    """Decode one stream entry; ``DecodeError`` names the reason when it breaks the contract.

    Well-formed entries take a short path (a third of the cost); anything it does not accept
    goes through ``decode_precisely``, which accepts exactly the same entries and names the
    broken rule otherwise. ``tests/test_codec.py`` checks the two agree on arbitrary input.
    """
    event_type = _EVENT_TYPE_BY_RAW.get(fields.get(c.FIELD_EVENT_TYPE, b""))
    raw_game = fields.get(c.FIELD_GAME_ID)
    raw_at = fields.get(c.FIELD_OCCURRED_AT_MS)
    if (
        event_type is not None
        and raw_game
        and raw_at
        and len(raw_at) <= _SAFE_DIGITS
        and raw_at.isdigit()
        and (occurred_at_ms := int(raw_at)) > 0
    ):
        try:
            game_id = raw_game.decode()
        except UnicodeDecodeError:
            game_id = ""
        if game_id.strip():
            return DecodedEvent(entry_id, game_id, event_type, occurred_at_ms)
    return decode_precisely(entry_id, fields)


def decode_precisely(entry_id: str, fields: Mapping[bytes, bytes]) -> DecodedEvent:
    """Check every decode rule in turn; the first broken one is the ``DecodeError``."""
    game_id = _text(fields, c.FIELD_GAME_ID)
    event_type_text = _text(fields, c.FIELD_EVENT_TYPE)
    occurred_at_ms = _occurred_at_ms(fields)
    event_type = EVENT_TYPE_BY_VALUE.get(event_type_text)
    if event_type is None:
        raise DecodeError(
            c.REASON_UNKNOWN_EVENT_TYPE, f"unknown event_type {shorten(event_type_text)!r}"
        )
    return DecodedEvent(entry_id, game_id, event_type, occurred_at_ms)


def encode_snapshot(row: OutboxRow) -> dict[bytes, bytes]:
    """The ``gm:lobby_events`` fields for one outbox row."""
    return {
        b"event_type": c.SNAPSHOT_EVENT_TYPE.encode(),
        b"game_id": row.game_id.encode(),
        b"runtime_status": row.runtime_status.encode(),
        b"engine_health_summary": row.engine_health_summary.encode(),
        b"current_turn": str(row.current_turn).encode(),
        b"player_turn_stats": b"[]",
        b"occurred_at_ms": str(row.occurred_at_ms).encode(),
        b"source_entry_id": row.source_entry_id.encode(),
    }


def decode_snapshot(fields: Mapping[bytes, bytes]) -> RuntimeSnapshotUpdate:
    """Read back a published snapshot (for tests, the demo and other consumers)."""
    text = {k.decode(): v.decode() for k, v in fields.items()}
    stats = json.loads(text.pop("player_turn_stats", "[]"))
    return RuntimeSnapshotUpdate.model_validate({**text, "player_turn_stats": stats})
