"""Counts in messages agree with their nouns: never ``1 entries``."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consumer.runtime.wording import counted


def test_one_is_singular_and_every_other_count_plural() -> None:
    assert counted(1, "entry") == "1 entry"
    assert [counted(n, "entry") for n in (0, 2, 10)] == ["0 entries", "2 entries", "10 entries"]
    assert counted(1, "snapshot") == "1 snapshot" and counted(3, "snapshot") == "3 snapshots"
    assert counted(2, "key") == "2 keys"  # a vowel before the y: just an s
    assert counted(1, "entry was", "entries were") == "1 entry was"
    assert counted(4, "entry was", "entries were") == "4 entries were"


@given(st.integers(min_value=0, max_value=10**9))
def test_the_number_is_said_as_given(n: int) -> None:
    said = counted(n, "worker")
    assert said == f"{n} worker{'' if n == 1 else 's'}"
