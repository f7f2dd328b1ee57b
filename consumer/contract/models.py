"""The wire contract as pydantic models: what comes in, what goes out, how the worker is set up."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from consumer.contract import constants as c
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


class ConsumerSettings(BaseModel):
    """Everything ``healthfsm consume`` needs, built once at the CLI edge."""

    model_config = ConfigDict(frozen=True)

    redis_url: str = c.DEFAULT_REDIS_URL
    redis_password: SecretStr | None = None
    """From ``HEALTHFSM_REDIS_PASSWORD``; a ``SecretStr``, so no repr or log shows it."""
    stream: str = Field(default=c.HEALTH_STREAM, min_length=1)
    lobby_stream: str = Field(default=c.LOBBY_STREAM, min_length=1)
    label: str = Field(default=c.OFFSET_LABEL, min_length=1)
    db_path: str = c.DEFAULT_DB_PATH
    block_ms: int = Field(default=c.DEFAULT_BLOCK_MS, ge=1)
    batch_size: int = Field(default=c.DEFAULT_BATCH_SIZE, ge=1, le=100_000)
    drain: bool = False
    give_up_after_s: float = Field(default=c.DEFAULT_GIVE_UP_AFTER_S, gt=0, le=86_400)
    """``--drain`` only: how long Redis or the store may stay unreachable before exit 1."""
    backoff_initial_s: float = Field(default=0.1, gt=0)
    backoff_max_s: float = Field(default=10.0, gt=0)
    progress_interval_s: float = Field(default=10.0, gt=0)
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    lease_ttl_s: float = Field(default=15.0, gt=0, le=3600)
    """How long the lease lasts unrenewed: a dead worker's standby waits at most this long."""
    lease_poll_s: float = Field(default=0.25, gt=0)
    """How often a standby looks at the lease (a released lease is taken within this)."""
    on_stream_reset: Literal["stop", "rewind"] = "stop"
    """When the stream is found behind the offset or recreated: exit 1, or read it anew."""
    start_from: str | None = None
    """Where a label with no stored offset starts: ``beginning``, ``end`` or an entry id."""
