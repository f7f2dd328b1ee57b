"""What the loop last saw, for ``/healthz``, ``/readyz`` and systemd: written by the loop,
read by the HTTP thread, and never a reason for either to wait on Redis or the store.

Liveness is "the loop finished an iteration (a batch, an empty read, a standby poll, a
backoff) within ``bound_s``": a loop wedged inside a call stops beating. Readiness is "the
last attempts reached Redis and the store, the schema is current, nothing fatal happened,
and the worker is active or standing by as designed".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from consumer.runtime.clock import format_ms, wall_clock_ms


class Role(StrEnum):
    """Where the worker stands."""

    STARTING = "starting"
    """Opening the store, before the first lease decision."""
    ACTIVE = "active"
    """Holds its label's lease and consumes."""
    STANDBY = "standby"
    """Another worker holds the lease; this one polls and takes over when it may."""
    STOPPING = "stopping"
    """A stop was requested or the loop ended."""
    FAILED = "failed"
    """Stopped consuming on an error that needs an operator (a stream reset); up, holding
    nothing, until stopped."""


@dataclass(frozen=True, slots=True)
class Failure:
    """One dependency that the last attempt did not reach (or a fatal condition)."""

    what: str
    error: str
    since_ms: int

    def as_json(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "error": self.error,
            "since": format_ms(self.since_ms),
            "since_ms": self.since_ms,
        }


Dependency = Literal["redis", "store", "schema"]
"""What readiness depends on reaching (the schema: being the one this build runs on)."""

READINESS = ("ready", "fatal", "redis", "store", "schema", "starting", "stopping")
"""Why ``/readyz`` passes or fails, first match wins: ready, or the first of what stops it
(a fatal condition, Redis or the store not reached, a schema this build does not run on,
still starting, stopping). ``healthfsm_readiness{reason}`` exports the same answer."""


def liveness_bound_s(block_ms: int, lease_ttl_s: float, backoff_max_s: float) -> float:
    """How long one loop iteration may take before the loop counts as wedged: two blocking
    reads, a lease's worth of store waits (busy, lock timeout), and the longest backoff."""
    return 2 * block_ms / 1000 + lease_ttl_s + backoff_max_s


class HealthState:
    """The loop's last word on itself; every method is cheap and never does I/O."""

    def __init__(self, bound_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.bound_s = bound_s
        self._clock = clock
        self._lock = threading.Lock()
        self._beat = clock()
        self._beats = 0
        self.role = Role.STARTING
        self._failures: dict[str, Failure] = {}
        self._fatal: Failure | None = None
        self.holder: str | None = None
        self.holder_until_ms: int | None = None
        self.lag_entries: int | None = None
        self.lag_seconds: float | None = None
        self.listeners: list[Callable[[HealthState], None]] = []
        """Called (in the loop's thread) after each beat: the systemd watchdog."""

    # written by the loop --------------------------------------------------------------

    def beat(self) -> None:
        """One loop iteration finished."""
        self._beat = self._clock()
        self._beats += 1
        for listener in self.listeners:
            listener(self)

    def failing(self, what: Dependency, error: BaseException | str) -> None:
        """The last attempt to reach ``what`` ("redis", "store", "schema") failed."""
        with self._lock:
            known = self._failures.get(what)
            since = known.since_ms if known is not None else wall_clock_ms()
            self._failures[what] = Failure(what, str(error)[:500], since)

    def reached(self, *what: str) -> None:
        """The last attempts reached these dependencies."""
        with self._lock:
            for name in what:
                self._failures.pop(name, None)

    def fatal(self, error: BaseException | str) -> None:
        """The worker is stopping on an error that no wait cures (a stream reset, say)."""
        with self._lock:
            self._fatal = Failure("fatal", str(error)[:500], wall_clock_ms())
        self.role = Role.STOPPING

    def holding(self, holder: str, until_ms: int | None) -> None:
        """Who holds the label's lease, as the loop last saw it."""
        self.holder, self.holder_until_ms = holder, until_ms

    # read by the HTTP thread ----------------------------------------------------------

    @property
    def beats(self) -> int:
        return self._beats

    def since_beat_s(self) -> float:
        return self._clock() - self._beat

    def alive(self) -> bool:
        return self.since_beat_s() <= self.bound_s

    def failures(self) -> list[Failure]:
        with self._lock:
            found = list(self._failures.values())
            if self._fatal is not None:
                found.append(self._fatal)
        return found

    def ready(self) -> bool:
        return self.readiness() == "ready"

    def readiness(self) -> str:
        """One of ``READINESS``: "ready", or why not."""
        with self._lock:
            if self._fatal is not None:
                return "fatal"
            for what in ("redis", "store", "schema"):
                if what in self._failures:
                    return what
        if self.role in (Role.ACTIVE, Role.STANDBY):
            return "ready"
        if self.role is Role.FAILED:
            return "fatal"
        return self.role.value

    def report(self, *, check: str) -> tuple[bool, dict[str, Any]]:
        """(passes, JSON body) for ``check`` = "live" or "ready"."""
        passes = self.alive() if check == "live" else self.ready()
        why: list[dict[str, Any]] = [f.as_json() for f in self.failures()]
        if not self.alive():
            why.append(
                {
                    "what": "loop",
                    "error": f"no iteration finished for {self.since_beat_s():.1f}s"
                    f" (bound {self.bound_s:g}s)",
                }
            )
        if check == "ready" and self.role not in (Role.ACTIVE, Role.STANDBY, Role.FAILED):
            why.append({"what": "role", "error": f"the worker is {self.role.value}"})
        body: dict[str, Any] = {
            "status": "ok" if passes else "failing",
            "role": self.role.value,
            "failing": why,
            "last_iteration_s_ago": round(self.since_beat_s(), 3),
            "liveness_bound_s": self.bound_s,
            "lag_entries": self.lag_entries,
            "lag_seconds": self.lag_seconds,
            "lease": {
                "holder": self.holder,
                "until": None if self.holder_until_ms is None else format_ms(self.holder_until_ms),
                "until_ms": self.holder_until_ms,
            },
        }
        return passes, body
