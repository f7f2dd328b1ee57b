"""Reading the next batch while this one is applied.

During a backlog the worker knows where its next read starts (after the last entry in hand)
before it applies the batch. Sending that read first, on a connection of its own, lets
Redis serve it while this process runs the machine and SQLite; the reply is read when the
next batch is due. The worker reads ahead only when more entries are known to wait, so a
caught-up worker still does one plain blocking read.
"""

from __future__ import annotations

import redis

from consumer.runtime.redis_client import (
    Entries,
    Keep,
    OwnConnection,
    range_command,
    range_entries,
    split_at_offset,
)


class ReadAhead:
    """At most one non-blocking read (an inclusive XRANGE) in flight, and where it reads from."""

    def __init__(self, client: redis.Redis) -> None:
        self._own = OwnConnection(client)
        self._after: str | None = None
        self._count = 0
        self.keep: Keep | None = None
        """With partitions: which entries get their fields built (``range_entries``)."""

    @property
    def in_flight(self) -> bool:
        """Whether a read was sent and its reply not taken yet."""
        return self._after is not None

    def send(self, stream: str, after_id: str, count: int) -> None:
        """Ask for up to ``count`` entries after ``after_id``; the reply waits for ``take``."""
        try:
            self._own.get().send_command(  # type: ignore[no-untyped-call]
                *range_command(stream, after_id, count)
            )
        except BaseException:
            self.discard()
            raise
        self._after = after_id
        self._count = count

    def take(self, after_id: str) -> tuple[Entries, bool] | None:
        """The entries read ahead from ``after_id`` with ``split_at_offset``'s verdict; None if
        no read from there is in flight."""
        if self._after is None:
            return None
        if self._after != after_id:
            self.discard()  # read from elsewhere (the offset moved): never used
            return None
        self._after = None
        try:
            reply = range_entries(self._own.get().read_response(), self.keep)
        except BaseException:
            self.discard()
            raise
        return split_at_offset(reply, after_id, self._count)

    def discard(self) -> None:
        """Forget any read in flight: its reply is dropped with the connection."""
        self._after = None
        self._own.drop()
