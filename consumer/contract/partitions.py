"""Which partition of a label a game belongs to: a rule any service can compute.

A game's partition is ``slot * N // 16384``, where ``slot`` is the game id's Redis Cluster
key slot (``CLUSTER KEYSLOT``: CRC16/XMODEM of the UTF-8 id, or of its hash tag, mod
16384) and ``N`` the label's partition count. Contiguous slot ranges make each partition
one range of slots, so a store can select a partition's rows with ``slot BETWEEN``.
"""

from __future__ import annotations

SLOTS = 16384
"""Redis Cluster's key slots."""

MAX_PARTITIONS = 256


def _crc16_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return tuple(table)


_TABLE = _crc16_table()


def crc16_xmodem(data: bytes) -> int:
    """CRC-16/XMODEM (polynomial 0x1021, initial 0), as Redis Cluster computes it."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


def hash_tag(key: bytes) -> bytes:
    """The part of ``key`` that is hashed: between the first ``{`` and the first ``}`` after
    it, when that is not empty; otherwise the whole key."""
    start = key.find(b"{")
    if start != -1:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def key_slot(game_id: str | bytes) -> int:
    """The game id's Redis Cluster key slot (0..16383)."""
    key = game_id.encode() if isinstance(game_id, str) else game_id
    return crc16_xmodem(hash_tag(key)) % SLOTS


def partition_of_slot(slot: int, partitions: int) -> int:
    """The partition (0..partitions-1) that holds ``slot``."""
    return slot * partitions // SLOTS


def partition_of(game_id: str | bytes, partitions: int) -> int:
    """The partition of ``game_id`` when its label has ``partitions`` partitions."""
    return partition_of_slot(key_slot(game_id), partitions)


def slot_range(partition: int, partitions: int) -> range:
    """The slots of ``partition``: the ``s`` with ``s * partitions // 16384 == partition``."""
    first = -(-partition * SLOTS // partitions)
    end = -(-(partition + 1) * SLOTS // partitions)
    return range(first, end)
