"""Rejected entries in the log: one WARNING per reason per minute, with the count since.

The dead-letter table is the record of each entry (and DEBUG shows each one); the log says
what happened. A reason's first rejection is said at once; later ones within the interval
are counted and said together once it has passed (at the next rejection, at a progress
tick, or at stop), so a steady trickle of bad entries, one per batch, is one line a minute
and not one per entry, and ``--drain`` still reports every reason before it exits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger("consumer.runtime.batch")  # where operators have always found them

EVERY_S = 60.0
"""At most one WARNING per reason in this many seconds."""


@dataclass(slots=True)
class _Unsaid:
    count: int
    first: str
    last: str


class RejectionLog:
    """What each reason's next WARNING will say, and when it may be said."""

    def __init__(self, every_s: float = EVERY_S, clock: Callable[[], float] = time.monotonic):
        self.every_s = every_s
        self._clock = clock
        self._unsaid: dict[str, _Unsaid] = {}
        self._said_at: dict[str, float] = {}

    def rejected(self, entries: Iterable[tuple[str, str]]) -> None:
        """(reason, entry id) of a committed batch's rejections, in stream order."""
        seen: set[str] = set()
        for reason, entry_id in entries:
            unsaid = self._unsaid.get(reason)
            if unsaid is None:
                self._unsaid[reason] = _Unsaid(1, entry_id, entry_id)
            else:
                unsaid.count += 1
                unsaid.last = entry_id
            seen.add(reason)
        now = self._clock()
        for reason in seen:
            if now - self._said_at.get(reason, float("-inf")) >= self.every_s:
                self._say(reason, now)

    def say_due(self) -> None:
        """Say what has waited for its interval to pass (a progress tick)."""
        now = self._clock()
        for reason in list(self._unsaid):
            if now - self._said_at.get(reason, float("-inf")) >= self.every_s:
                self._say(reason, now)

    def say_all(self) -> None:
        """Say everything not said yet (the worker stops)."""
        now = self._clock()
        for reason in list(self._unsaid):
            self._say(reason, now)

    def _say(self, reason: str, now: float) -> None:
        unsaid = self._unsaid.pop(reason)
        self._said_at[reason] = now
        n = unsaid.count
        log.warning(
            "%d %s kept as dead letters (%s, %s .. %s); see: healthfsm dead-letters list"
            " --reason %s",
            n,
            "entry" if n == 1 else "entries",
            reason,
            unsaid.first,
            unsaid.last,
            reason,
            extra={
                "reason": reason,
                "count": n,
                "first_entry_id": unsaid.first,
                "last_entry_id": unsaid.last,
            },
        )
