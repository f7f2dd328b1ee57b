"""The partition rule: a game's Redis Cluster key slot, cut into contiguous ranges."""

from __future__ import annotations

import random
import string

import redis
from hypothesis import given
from hypothesis import strategies as st

from consumer.contract.partitions import (
    MAX_PARTITIONS,
    SLOTS,
    crc16_xmodem,
    key_slot,
    partition_of,
    slot_range,
)
from consumer.devtools import embedded
from consumer.runtime.redis_client import SKIPPED, range_entries
from store.partitions import fair_share
from store.stream_id import not_after


def test_crc16_and_slots_match_the_published_vectors() -> None:
    # The Redis Cluster specification's check value, and slots from its examples.
    assert crc16_xmodem(b"123456789") == 0x31C3
    assert key_slot("foo") == 12182
    assert key_slot("bar") == 5061
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers")
    assert key_slot("foo{}{bar}") == key_slot(b"foo{}{bar}")  # an empty tag: whole key
    assert key_slot("foo{{bar}}zap") == key_slot("{bar")
    assert key_slot("foo{bar}{zap}") == key_slot("bar")


def test_slots_match_what_a_real_cluster_node_computes() -> None:
    """``CLUSTER KEYSLOT`` on a cluster-enabled redis-server, for ids of every shape."""
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + "{}-_:. é€"
    ids = ["", "{", "}", "{}", "{}x", "x{}", "{a}", "a{b}c", "a{{b}}", "é{€}"]
    ids += ["".join(rng.choices(alphabet, k=rng.randint(1, 24))) for _ in range(500)]
    ids += [f"game-{n}" for n in range(500)]
    with embedded.running("--cluster-enabled", "yes") as server:
        client = redis.Redis(host=embedded.LOOPBACK, port=server.port)
        try:
            for game_id in ids:
                expected = client.execute_command("CLUSTER", "KEYSLOT", game_id)  # type: ignore[no-untyped-call]
                assert key_slot(game_id) == expected, game_id
        finally:
            client.close()


@given(st.integers(1, MAX_PARTITIONS))
def test_each_partition_is_one_contiguous_range_and_together_they_cover_every_slot(
    partitions: int,
) -> None:
    covered = [slot for p in range(partitions) for slot in slot_range(p, partitions)]
    assert covered == list(range(SLOTS))
    for p in (0, partitions // 2, partitions - 1):
        for slot in (slot_range(p, partitions)[0], slot_range(p, partitions)[-1]):
            assert slot * partitions // SLOTS == p


@given(st.text(), st.integers(1, MAX_PARTITIONS))
def test_a_game_is_in_the_partition_whose_range_holds_its_slot(game_id: str, n: int) -> None:
    assert key_slot(game_id) in slot_range(partition_of(game_id, n), n)
    assert partition_of(game_id, 1) == 0


ids = st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))


@given(ids, ids)
def test_not_after_orders_ids_as_redis_does(a: tuple[int, int], b: tuple[int, int]) -> None:
    assert not_after(f"{a[0]}-{a[1]}", f"{b[0]}-{b[1]}") == (a <= b)


def test_entries_of_other_partitions_are_read_for_their_id_alone() -> None:
    reply = [
        [b"1-0", [b"game_id", b"mine", b"event_type", b"probe_failed"]],
        [b"2-0", [b"game_id", b"theirs", b"event_type", b"probe_failed"]],
        [b"3-0", [b"event_type", b"probe_failed"]],
        [b"4-0", [b"game_id", b"theirs", b"game_id", b"mine"]],  # a dict keeps the last
    ]
    got = range_entries(reply, keep=lambda raw: raw == b"mine")
    assert [entry_id for entry_id, _ in got] == [b"1-0", b"2-0", b"3-0", b"4-0"]
    assert [fields is SKIPPED for _, fields in got] == [False, True, True, False]
    assert got[0][1] == {b"game_id": b"mine", b"event_type": b"probe_failed"}
    assert range_entries(reply) == [
        (entry_id, dict(zip(flat[::2], flat[1::2], strict=True))) for entry_id, flat in reply
    ]


@given(
    st.integers(1, 64),
    st.lists(st.text(string.ascii_lowercase, min_size=1, max_size=4), min_size=1, max_size=9),
    st.data(),
)
def test_fair_shares_add_up_and_keep_what_workers_hold(
    count: int, names: list[str], data: st.DataObject
) -> None:
    """Every worker computes the same shares from the same rows; they add up to the count;
    and a worker holding more than N // W keeps its extra (no move for nothing)."""
    workers = sorted(set(names))
    base, extra = divmod(count, len(workers))
    holding = {w: data.draw(st.integers(0, base + 2), label=w) for w in workers}
    shares = {w: fair_share(count, workers, w, holding) for w in workers}
    assert sum(shares.values()) == count
    assert set(shares.values()) <= {base, base + 1}
    above = [w for w in workers if holding[w] > base]
    assert sum(shares[w] == base + 1 for w in above) == min(len(above), extra)


def test_a_standby_joining_a_one_partition_label_takes_nothing_from_the_active_one() -> None:
    for active, standby in (("a", "b"), ("b", "a")):  # whichever sorts first
        holding = {active: 1}
        assert fair_share(1, [active, standby], active, holding) == 1
        assert fair_share(1, [active, standby], standby, holding) == 0
