"""Where a worker's committed offsets live: one row per partition it holds.

The worker reads from the lowest offset of the partitions it holds, and every batch moves
each held partition's offset to the last entry read (entries of partitions it does not
hold are skipped, not applied); ``stream_offsets`` follows with the label's low-water
mark. A rewind (``--on-stream-reset rewind``) also clears the last-applied marks of the
records it covers, so their entries apply again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from consumer.runtime.batch import BatchResult
from store import partitions, records
from store.sql import Sql
from store.stream_id import StreamId, entry_id_key


class HeldOffsets:
    """The offsets of the partitions a worker holds, kept in memory as committed."""

    def __init__(
        self, label: str, owns: Callable[[str], bool], only: Callable[[], bool] = lambda: False
    ) -> None:
        self.label = label
        self.owns = owns
        self.only = only
        """Whether the worker holds its label's only partition (its offset is the label's)."""
        self.at: dict[int, str] = {}
        """Partition -> committed offset, for every partition held."""
        self.read_after: dict[int, int] = {}
        """Partition -> entries of the batch in hand past its offset, when the held offsets
        differ (``spread``); otherwise every entry read counts for every partition."""

    @property
    def position(self) -> str:
        """Where reading goes on: the lowest offset held."""
        return min(self.at.values(), key=entry_id_key)

    def spread(self) -> Mapping[int, StreamId] | None:
        """Partition -> offset key when the held offsets differ; None when they are equal."""
        if len(set(self.at.values())) <= 1:
            return None
        return {p: entry_id_key(entry_id) for p, entry_id in self.at.items()}

    def entries_read(self, conn: Sql) -> int | None:
        if not self.at:
            return None
        stored = partitions.load_offsets(conn, self.label)
        lowest = min(self.at, key=lambda p: entry_id_key(self.at[p]))
        found = stored.get(lowest)
        return None if found is None else found.entries_read

    def _moved(self, entry_id: str, added: Callable[[int], int]) -> dict[int, tuple[str, int]]:
        key = entry_id_key(entry_id)
        return {p: (entry_id, added(p)) for p, at in self.at.items() if entry_id_key(at) <= key}

    def save(self, conn: Sql, entry_id: str, now_ms: int, added: int) -> None:
        moved = self._moved(entry_id, lambda _: added)
        partitions.save_offsets(conn, self.label, moved, now_ms)
        self.at.update({p: entry_id for p in moved})

    def rewind(self, conn: Sql, entry_id: str, now_ms: int) -> None:
        placed = {p: (entry_id, 0) for p in self.at}
        partitions.set_offsets(conn, self.label, placed, now_ms)
        records.forget_marks(conn, entry_id, keep=lambda game_id: not self.owns(game_id))
        self.at.update({p: entry_id for p in placed})

    def save_batch(self, conn: Sql, result: BatchResult, now_ms: int) -> None:
        counts = self.read_after
        moved = self._moved(result.last_entry_id, lambda p: counts.get(p, result.entries))
        partitions.save_offsets(conn, self.label, moved, now_ms, only=self.only())

    def committed(self, result: BatchResult) -> None:
        """The batch committed: every held partition is at its last entry now."""
        key = entry_id_key(result.last_entry_id)
        for p, at in self.at.items():
            if entry_id_key(at) <= key:
                self.at[p] = result.last_entry_id
        self.read_after = {}
