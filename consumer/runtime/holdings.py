"""What a worker holds right now: its partitions, their epochs, and what follows from them.

The keeper (``PartitionKeeper``) takes and renews the leases; this is the read side every
other part asks: whether a game is this worker's, whether an entry read is to be applied,
and the fence a chunk of snapshots is published under at Redis. The ownership part changes
it (``remap`` when the partition count changed); nothing else does.
"""

from __future__ import annotations

from consumer.contract.fence import fence_key, marks_key
from consumer.runtime.fence import Fence
from consumer.runtime.partition_keeper import PartitionKeeper
from consumer.runtime.partition_map import PartitionMap
from consumer.runtime.relay import Pending


class Holdings:
    """The partitions a worker holds, as the loop, the relay and the offsets see them."""

    def __init__(self, keeper: PartitionKeeper, lobby_stream: str, store_id: str) -> None:
        self.keeper = keeper
        self.map = PartitionMap(1)
        self.fence_key = fence_key(lobby_stream, keeper.label)
        self.marks_key = marks_key(lobby_stream, keeper.label, store_id)

    def remap(self, count: int) -> None:
        """The label has ``count`` partitions now: games are mapped under that count."""
        if self.map.partitions != count:
            self.map = PartitionMap(count)

    @property
    def held(self) -> dict[int, int]:
        """Partition -> epoch, for every partition held."""
        return self.keeper.held

    @property
    def holds_all(self) -> bool:
        return self.keeper.holds_all

    def one_whole(self) -> bool:
        """Whether this worker holds its label's only partition (its offset is the label's)."""
        return self.keeper.holds_all and self.keeper.partitions == 1

    def owns(self, game_id: str) -> bool:
        """Whether ``game_id``'s records and outbox rows are this worker's (its partition is
        held)."""
        return self.map.of(game_id) in self.keeper.held

    def keeps(self, raw_game_id: bytes | None) -> bool:
        """Whether an entry with this raw ``game_id`` is applied here (its fields are built
        as it is read; another partition's entry is read for its id alone)."""
        return self.map.holds(raw_game_id, self.keeper.held)

    def fence_for(self, rows: Pending) -> Fence:
        """The fence a chunk of outbox rows is published under: the epoch this worker holds
        for each of their partitions (0, which Redis refuses, for one it does not hold)."""
        held = self.keeper.held
        if self.one_whole():
            return Fence(self.fence_key, held, self.marks_key)
        of = self.map.of
        epochs = {p: held.get(p, 0) for p in {of(r.game_id) for _, r in rows}}
        return Fence(self.fence_key, epochs, self.marks_key)

    def describe(self) -> str:
        """``0,3,5 of 8`` for the progress line and systemd's status."""
        held = ",".join(str(p) for p in sorted(self.keeper.held)) or "none"
        return f"{held} of {self.keeper.partitions}"
