"""Which of the entries read belong to the partitions this worker holds.

A worker with several partitions reads the stream once, from the lowest of their offsets,
and keeps an entry when its game's partition is held and the entry lies past that
partition's offset. The game id is taken from the raw fields, before decoding, so an entry
of another partition costs a dict lookup and no parsing; an entry without a ``game_id``
field, or with one that is not UTF-8, belongs to partition 0 (the rule in docs/contract.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from consumer.contract import constants as c
from consumer.contract.partitions import partition_of
from consumer.runtime.batch import RawEntry
from consumer.runtime.redis_client import SKIPPED
from store.stream_id import StreamId, entry_id_key

_GAME_ID = c.FIELD_GAME_ID

CACHE_LIMIT = 200_000
"""Game ids whose partition is remembered; the map starts over when it is full."""


def partition_of_raw(raw_game_id: bytes | None, partitions: int) -> int:
    """The partition of an entry by its raw ``game_id`` field (0 without a readable one)."""
    if raw_game_id is None:
        return 0
    try:
        raw_game_id.decode()
    except UnicodeDecodeError:
        return 0
    return partition_of(raw_game_id, partitions)


class PartitionMap:
    """The partitions of game ids under one partition count, remembered per id."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._known: dict[bytes | None, int] = {}

    def of_raw(self, raw_game_id: bytes | None) -> int:
        """The partition of a raw ``game_id`` field (None: the field is missing)."""
        known = self._known.get(raw_game_id)
        if known is None:
            if len(self._known) >= CACHE_LIMIT:
                self._known.clear()
            known = self._known[raw_game_id] = partition_of_raw(raw_game_id, self.partitions)
        return known

    def of(self, game_id: str) -> int:
        """The partition of a decoded game id."""
        return self.of_raw(game_id.encode())

    def holds(self, raw_game_id: bytes | None, held: Mapping[int, object]) -> bool:
        """Whether an entry with this raw ``game_id`` belongs to a partition in ``held``: the
        one test, made as entries are read (``Holdings.keeps``) and again on selecting."""
        return self.of_raw(raw_game_id) in held

    def select(
        self,
        entries: Sequence[RawEntry],
        held: Mapping[int, object],
        after: Mapping[int, StreamId] | None = None,
    ) -> list[RawEntry]:
        """The entries of partitions in ``held``; with ``after`` (partition -> offset key,
        when the held offsets differ) only those past their partition's offset."""
        holds = self.holds
        mine: list[RawEntry] = []
        for entry in entries:
            fields = entry[1]
            if fields is SKIPPED:  # refused as it was read (``redis_client.range_entries``)
                continue
            raw = fields.get(_GAME_ID)
            if not holds(raw, held):
                continue
            if after is None or entry_id_key(entry[0].decode()) > after[self.of_raw(raw)]:
                mine.append(entry)
        return mine
