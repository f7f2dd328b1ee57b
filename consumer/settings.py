"""How a worker is set up: every setting once, with its default, bounds, help and checks.

The CLI takes its option defaults, bounds and help from here (``consumer.cli.options``), and
turns a ``ValidationError`` into exit 2 in one place (``consumer.cli.common.settings_for``).
Nothing here is part of the wire contract (that is ``consumer.contract``).
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from consumer.contract import constants as c
from store.stream_id import StreamId


class ResetPolicy(StrEnum):
    """``--on-stream-reset``: what the worker does when the stream no longer continues."""

    STOP = "stop"
    REWIND = "rewind"


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["text", "json"]


class ConsumerSettings(BaseModel):
    """Everything ``healthfsm consume`` (and ``check``, ``replay``) needs, built once at the
    CLI edge. Each field's ``description`` is its ``--help`` text."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    redis_url: str = Field(
        default="redis://localhost:6379/0", description="Redis URL (redis:// or rediss://)."
    )
    redis_password: SecretStr | None = None
    """From ``HEALTHFSM_REDIS_PASSWORD``; a ``SecretStr``, so no repr or log shows it."""
    tls_ca: str | None = Field(default=None, description="CA bundle to verify a rediss:// server.")
    tls_cert: str | None = Field(
        default=None, description="Client certificate for rediss:// (mTLS)."
    )
    tls_key: str | None = Field(default=None, description="Key of --redis-cert.")
    stream: str = Field(
        default=c.HEALTH_STREAM, min_length=1, description="Input stream of health events."
    )
    lobby_stream: str = Field(
        default=c.LOBBY_STREAM, min_length=1, description="Output stream for runtime snapshots."
    )
    label: str = Field(
        default=c.OFFSET_LABEL, min_length=1, description="Offset label in stream_offsets."
    )
    db_path: str = Field(
        default="healthfsm.db", description="SQLite database file, or a postgresql:// URL."
    )
    block_ms: int = Field(
        default=2000, ge=1, description="How long one XREAD waits for new entries."
    )
    batch_size: int = Field(
        default=2000,
        ge=1,
        le=100_000,
        description="Entries per XREAD and per transaction.",
    )
    drain: bool = Field(
        default=False, description="Process everything past the offset, publish, and exit 0."
    )
    give_up_after_s: float = Field(
        default=30.0,
        ge=0.1,
        le=86_400,
        description="With --drain: seconds Redis or the store may stay unreachable before the"
        " run gives up with exit 1 (without --drain the worker waits for ever).",
    )
    log_level: LogLevel = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: LogFormat = Field(default="text", description="text or json (one object per line).")
    backoff_initial_s: float = Field(default=0.1, gt=0)
    backoff_max_s: float = Field(default=10.0, gt=0)
    progress_interval_s: float = Field(default=10.0, gt=0)
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="Serve Prometheus /metrics on this port."
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="Address for --metrics-port (default: loopback only)."
    )
    lease_ttl_s: float = Field(
        default=15.0,
        ge=0.1,
        le=3600,
        description="Seconds the worker's lease lasts unrenewed; a standby takes over a dead"
        " worker within this.",
    )
    redis_timeout_s: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description="Seconds a Redis reply may take beyond an XREAD's block before the worker"
        " takes Redis as cut off (default: 5, or less so that with the block it stays within"
        " half --lease-ttl).",
    )
    lease_poll_s: float = Field(default=0.25, gt=0)
    """How often a standby looks at the lease (a released lease is taken within this)."""
    on_stream_reset: ResetPolicy = Field(
        default=ResetPolicy.STOP,
        description="When the stream is behind the stored offset or was recreated: stop"
        " (stay up, failed and holding nothing, until stopped, then exit 1; with --drain,"
        " exit 1 at once) or rewind (read it from its start, with an ERROR).",
    )
    start_from: str | None = Field(
        default=None,
        description="Where a label with no stored offset starts: beginning, end or an entry id"
        " (needed when the database has other labels' offsets).",
    )

    @field_validator("stream", "lobby_stream", "label")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("start_from")
    @classmethod
    def _start_from(cls, value: str | None) -> str | None:
        if value is not None and value not in {"beginning", "end"}:
            try:
                StreamId.parse(value)
            except ValueError as error:
                raise ValueError(f"{error} (or beginning, or end)") from error
        return value

    @field_validator("redis_timeout_s")
    @classmethod
    def _redis_timeout_within_the_lease(cls, value: float | None, info: ValidationInfo) -> Any:
        ttl, block_ms = info.data.get("lease_ttl_s"), info.data.get("block_ms")
        if value is None or ttl is None or block_ms is None:
            return value
        block_s = read_block_ms(block_ms, ttl) / 1000
        if block_s + value > ttl / 2:
            raise ValueError(
                f"a worker cut off from Redis would wait up to {block_s + value:.2f}s for a"
                f" reply, over half of --lease-ttl {ttl:g}: a standby could take over before"
                f" it notices; use at most {math.floor((ttl / 2 - block_s) * 100) / 100:.2f},"
                " or a longer --lease-ttl"
            )
        return value

    @property
    def block_ms_read(self) -> int:
        """How long one XREAD blocks: ``--block-ms``, at most a third of the lease TTL."""
        return read_block_ms(self.block_ms, self.lease_ttl_s)

    @property
    def socket_timeout_s(self) -> float:
        """How long any Redis reply may take: the XREAD block plus ``--redis-timeout``, which
        by default keeps the sum within half the lease TTL, so a worker cut off from Redis
        learns it before a standby could take its lease."""
        block_s = self.block_ms_read / 1000
        if self.redis_timeout_s is not None:
            return block_s + self.redis_timeout_s
        return block_s + min(DEFAULT_REDIS_TIMEOUT_S, self.lease_ttl_s / 2 - block_s)

    @field_validator("lobby_stream")
    @classmethod
    def _lobby_is_not_the_input(cls, value: str, info: ValidationInfo) -> str:
        if value == info.data.get("stream"):
            raise ValueError("must differ from --stream: snapshots would be written into the input")
        return value


DEFAULT_REDIS_TIMEOUT_S = 5.0
"""``--redis-timeout`` when the lease TTL allows it."""


def read_block_ms(block_ms: int, lease_ttl_s: float) -> int:
    """``--block-ms``, but at most a third of the lease TTL, so an idle worker renews its
    lease in time."""
    return max(1, min(block_ms, int(lease_ttl_s * 1000) // 3))


FLAGS: dict[str, str] = {
    "db_path": "--db",
    "tls_ca": "--redis-ca",
    "tls_cert": "--redis-cert",
    "tls_key": "--redis-key",
    "give_up_after_s": "--give-up-after",
    "lease_ttl_s": "--lease-ttl",
    "redis_timeout_s": "--redis-timeout",
}
"""Settings whose command-line flag is not ``--`` plus the field name with dashes."""


def flag(name: str) -> str:
    """The command-line flag of setting ``name`` (for messages and ``--help``)."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def default(name: str) -> Any:
    """The default of setting ``name``: the one place it is written."""
    return ConsumerSettings.model_fields[name].default
