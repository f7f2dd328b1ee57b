"""What a worker has in flight between batches, and the one place that drops it."""

from __future__ import annotations

from dataclasses import dataclass

from consumer.runtime.read_ahead import ReadAhead
from consumer.runtime.relay import OutboxRelay


@dataclass
class InFlight:
    """The read-ahead and the relay's unconfirmed snapshots."""

    read_ahead: ReadAhead
    relay: OutboxRelay

    def drop(self, *, unsettled: bool) -> None:
        """Drop what is in flight for a batch that is abandoned: the one place that does.

        The read-ahead always goes: its reply answers a read that may no longer follow the
        offset. The relay's snapshots go only when they are ``unsettled``: the connection
        broke or the lease changed hands, so whether Redis took them is unknown, or no
        longer ours to settle (the next holder publishes them from the outbox table, and
        sending them after taking the label back would repeat them). Otherwise the relay
        confirms them as usual, so a busy store or a rewind does not publish them twice.
        The record cache needs nothing from here: it drops itself when a batch fails
        (``commit_batch``) and when another connection committed (``RecordCache.load``).
        """
        self.read_ahead.discard()
        if unsettled:
            self.relay.close()
