"""How long Redis or the store has been unreachable, and when ``--drain`` stops waiting.

A long-running worker waits out any outage. A ``--drain`` run is a batch job or a test
that needs an answer, so it gives up once an outage has lasted ``give_up_after_s``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from consumer.errors import GaveUpWaiting


class Outage:
    """Tracks one outage from its first failure to the next success."""

    def __init__(
        self, give_up_after_s: float | None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.give_up_after_s = give_up_after_s
        self._clock = clock
        self._since: float | None = None

    def over(self) -> None:
        """A step reached everything it needed: the outage, if any, has ended."""
        self._since = None

    def wait_for(self, what: str, error: BaseException, backoff_s: float) -> float:
        """Note a failure; return how long to wait before the next try.

        Raises ``GaveUpWaiting`` once the outage has lasted ``give_up_after_s``; the wait
        never runs past that point, so the give-up comes on time.
        """
        now = self._clock()
        if self._since is None:
            self._since = now
        if self.give_up_after_s is None:
            return backoff_s
        left = self._since + self.give_up_after_s - now
        if left <= 0:
            raise GaveUpWaiting(
                f"{what} stayed unreachable for {now - self._since:.1f}s ({error}); --drain gave up"
                f" after --give-up-after {self.give_up_after_s:g}"
            )
        return min(backoff_s, left)
