"""The runtime record as the machine sees it: a plain object with a ``state`` attribute."""

from dataclasses import dataclass

from statemachine.enums import Status


@dataclass(slots=True)
class RuntimeRecord:
    """One game's runtime record.

    ``state`` is the status; the name is what ``transitions`` reads and writes.
    ``last_emitted_summary`` is the summary of the last snapshot queued for Game Lobby,
    persisted so that the debounce survives a restart. ``last_entry_id`` is the stream
    entry last applied to it: an entry at or before it is never applied again (a re-read
    after re-partitioning or a takeover); None until the first one.
    """

    game_id: str
    state: Status
    engine_health: str = ""
    current_turn: int = 0
    updated_at_ms: int = 0
    last_emitted_summary: str | None = None
    last_entry_id: str | None = None
