"""The wire contract as a pydantic model: what healthfsm publishes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from statemachine import Status


class RuntimeSnapshotUpdate(BaseModel):
    """One ``gm:lobby_events`` entry; every field travels as a string on the stream."""

    model_config = ConfigDict(frozen=True)

    event_type: Literal["runtime_snapshot_update"] = "runtime_snapshot_update"
    game_id: str
    runtime_status: Status
    engine_health_summary: str
    current_turn: int
    player_turn_stats: list[object] = Field(default_factory=list)
    occurred_at_ms: int
    source_entry_id: str
