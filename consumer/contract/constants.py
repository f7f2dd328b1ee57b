"""Names of the wire contract and the environment, each in one place (the worker's
settings and their defaults are ``consumer.settings``)."""

HEALTH_STREAM = "runtime:health_events"
"""Where Runtime Manager writes container health events."""

LOBBY_STREAM = "gm:lobby_events"
"""Where healthfsm publishes ``runtime_snapshot_update`` entries for Game Lobby."""

OFFSET_LABEL = "health_events"
"""The ``stream_offsets.label`` under which this consumer stores its position."""

SNAPSHOT_EVENT_TYPE = "runtime_snapshot_update"
"""The ``event_type`` of every entry healthfsm publishes."""

FIELD_GAME_ID = b"game_id"
FIELD_EVENT_TYPE = b"event_type"
FIELD_OCCURRED_AT_MS = b"occurred_at_ms"
"""Input field names, fixed by Runtime Manager's contract."""

ENV_DB = "HEALTHFSM_DB"
ENV_REDIS_URL = "HEALTHFSM_REDIS_URL"
ENV_REDIS_PASSWORD = "HEALTHFSM_REDIS_PASSWORD"

INT64_MAX = 2**63 - 1

REASON_MISSING_FIELD = "missing_field"
REASON_INVALID_FIELD = "invalid_field"
REASON_UNKNOWN_EVENT_TYPE = "unknown_event_type"
REASON_UNKNOWN_GAME = "unknown_game"
REJECT_REASONS = (
    REASON_MISSING_FIELD,
    REASON_INVALID_FIELD,
    REASON_UNKNOWN_EVENT_TYPE,
    REASON_UNKNOWN_GAME,
)
"""The reason codes a dead letter can carry (bounded: they label metrics)."""
