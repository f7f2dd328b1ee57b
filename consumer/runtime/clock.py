"""Wall-clock time in the forms healthfsm stores and shows: epoch milliseconds and ISO UTC."""

from __future__ import annotations

import time


def wall_clock_ms() -> int:
    """Milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


def format_ms(ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC with milliseconds, for messages and tables."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"
