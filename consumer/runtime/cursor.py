"""Where the consume loop stands in the stream, shared by the loop and the ownership part."""

from __future__ import annotations

from dataclasses import dataclass

from store.stream_id import START_ID


@dataclass
class Cursor:
    """Where the loop stands in the stream; the ownership part moves it when what is held
    changes (the lowest offset held), the loop when it reads and commits."""

    offset: str = START_ID
    """The id of the last entry whose effects are committed."""
    drain_target: str | None = None
    """With ``--drain``: the stream's last entry when the drain looked (None: look again)."""
    check_gap: bool = True
    """Whether the stream under the offset is to be checked before the next read (after
    start, a reconnect, a rebalance)."""
