"""The decode rules of runtime:health_events and the snapshot encoding, without Redis."""

from __future__ import annotations

import hypothesis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.contract.codec import decode_health_event, decode_snapshot, encode_snapshot
from consumer.errors import DecodeError
from statemachine import EventType, Status
from store.outbox import OutboxRow


def fields(
    game_id: bytes | None = b"g1",
    event_type: bytes | None = b"probe_failed",
    occurred: bytes | None = b"1700000000000",
    **extra: bytes,
) -> dict[bytes, bytes]:
    out = {b"game_id": game_id, b"event_type": event_type, b"occurred_at_ms": occurred}
    out.update({k.encode(): v for k, v in extra.items()})
    return {k: v for k, v in out.items() if v is not None}


def reason_of(raw: dict[bytes, bytes]) -> str:
    with pytest.raises(DecodeError) as info:
        decode_health_event("1-0", raw)
    return info.value.reason


def test_valid_entry_decodes_and_extra_fields_are_ignored() -> None:
    event = decode_health_event("5-1", fields(extra_field=b"whatever"))
    assert (event.entry_id, event.game_id, event.event_type, event.occurred_at_ms) == (
        "5-1",
        "g1",
        EventType.PROBE_FAILED,
        1_700_000_000_000,
    )


def test_game_id_is_used_verbatim_not_trimmed() -> None:
    assert decode_health_event("1-0", fields(game_id=b"  g 1 ")).game_id == "  g 1 "
    assert decode_health_event("1-0", fields(game_id="gäme".encode())).game_id == "gäme"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (fields(game_id=None), "missing_field"),
        (fields(game_id=b""), "missing_field"),
        (fields(game_id=b" \t\n"), "missing_field"),
        (fields(game_id="\u3000".encode()), "missing_field"),
        (fields(game_id=b"\xff\xfe"), "invalid_field"),
        (fields(event_type=None), "missing_field"),
        (fields(event_type=b"   "), "missing_field"),
        (fields(event_type=b"\xc3"), "invalid_field"),
        (fields(event_type=b"Probe_Failed"), "unknown_event_type"),
        (fields(event_type=b"probe_failed "), "unknown_event_type"),
        (fields(event_type=b"reboot"), "unknown_event_type"),
        (fields(occurred=None), "missing_field"),
        (fields(occurred=b""), "missing_field"),
        (fields(occurred=b"0"), "invalid_field"),
        (fields(occurred=b"000"), "invalid_field"),
        (fields(occurred=b"-5"), "invalid_field"),
        (fields(occurred=b"+5"), "invalid_field"),
        (fields(occurred=b" 5"), "invalid_field"),
        (fields(occurred=b"5 "), "invalid_field"),
        (fields(occurred=b"1_000"), "invalid_field"),
        (fields(occurred=b"1.5"), "invalid_field"),
        (fields(occurred=b"1e3"), "invalid_field"),
        (fields(occurred=b"0x10"), "invalid_field"),
        (fields(occurred="\uff11\uff12".encode()), "invalid_field"),
        (fields(occurred=b"9223372036854775808"), "invalid_field"),
        (fields(occurred=b"99999999999999999999999"), "invalid_field"),
    ],
)
def test_decode_rules(raw: dict[bytes, bytes], reason: str) -> None:
    assert reason_of(raw) == reason


def test_occurred_at_ms_bounds() -> None:
    assert decode_health_event("1-0", fields(occurred=b"1")).occurred_at_ms == 1
    top = b"9223372036854775807"
    assert decode_health_event("1-0", fields(occurred=top)).occurred_at_ms == 2**63 - 1
    assert decode_health_event("1-0", fields(occurred=b"007")).occurred_at_ms == 7


def test_every_event_type_decodes() -> None:
    for event_type in EventType:
        decoded = decode_health_event("1-0", fields(event_type=event_type.value.encode()))
        assert decoded.event_type is event_type


def test_error_message_names_the_problem() -> None:
    with pytest.raises(DecodeError, match="occurred_at_ms 'soon' is not base-10 digits"):
        decode_health_event("1-0", fields(occurred=b"soon"))


def test_snapshot_encoding_is_the_wire_contract() -> None:
    row = OutboxRow("17-3", "g1", "engine_unreachable", "exited", 42, 1_700_000_000_123)
    assert encode_snapshot(row) == {
        b"event_type": b"runtime_snapshot_update",
        b"game_id": b"g1",
        b"runtime_status": b"engine_unreachable",
        b"engine_health_summary": b"exited",
        b"current_turn": b"42",
        b"player_turn_stats": b"[]",
        b"occurred_at_ms": b"1700000000123",
        b"source_entry_id": b"17-3",
    }


@given(
    game_id=st.text(min_size=1).filter(lambda s: s.strip()),
    status=st.sampled_from(Status),
    summary=st.sampled_from(["healthy", "probe_failed", "exited", "oom"]),
    turn=st.integers(min_value=0, max_value=2**63 - 1),
    occurred=st.integers(min_value=1, max_value=2**63 - 1),
    seq=st.integers(min_value=0, max_value=2**32),
)
def test_snapshot_round_trip(
    game_id: str, status: Status, summary: str, turn: int, occurred: int, seq: int
) -> None:
    row = OutboxRow(f"{occurred}-{seq}", game_id, status.value, summary, turn, occurred)
    decoded = decode_snapshot(encode_snapshot(row))
    assert (decoded.game_id, decoded.runtime_status, decoded.engine_health_summary) == (
        game_id,
        status,
        summary,
    )
    assert (decoded.current_turn, decoded.occurred_at_ms, decoded.source_entry_id) == (
        turn,
        occurred,
        row.source_entry_id,
    )
    assert decoded.player_turn_stats == []


@given(
    game_id=st.text(min_size=1).filter(lambda s: s.strip()),
    event_type=st.sampled_from(EventType),
    occurred=st.integers(min_value=1, max_value=2**63 - 1),
)
def test_health_event_round_trip(game_id: str, event_type: EventType, occurred: int) -> None:
    raw = fields(game_id.encode(), event_type.value.encode(), str(occurred).encode())
    event = decode_health_event("9-9", raw)
    assert (event.game_id, event.event_type) == (game_id, event_type)
    assert event.occurred_at_ms == occurred


_GAME_IDS = (
    st.binary(max_size=8)
    | st.text(max_size=8).map(str.encode)
    | st.sampled_from([b"g1", b" ", b"\x1c", b"\xc3", "\u2003".encode(), b"g\x00"])
)
_OCCURRED = (
    st.integers(min_value=-5, max_value=2**64).map(lambda n: str(n).encode())
    | st.sampled_from([b"0", b"00", b"007", b"9" * 18, b"9" * 19, b"1" * 19, b"+1", b" 1"])
    | st.binary(max_size=6)
)


_FIELDS = st.builds(
    lambda required, extra: {**extra, **{k: v for k, v in required.items() if v is not None}},
    st.fixed_dictionaries(
        {  # each required name present 3 times in 4, with a good value half of the time
            b"game_id": st.sampled_from([b"game-7", b"g", None]) | _GAME_IDS,
            b"event_type": st.sampled_from([e.value.encode() for e in EventType] + [None])
            | st.binary(max_size=8),
            b"occurred_at_ms": st.sampled_from([b"1700000000000", b"0001", None]) | _OCCURRED,
        }
    ),
    st.dictionaries(st.binary(max_size=20), st.binary(max_size=40), max_size=3),
)


@given(_FIELDS)
def test_arbitrary_fields_either_decode_or_raise_decode_error(raw: dict[bytes, bytes]) -> None:
    """Any map of bytes: the required names are drawn often, so both outcomes are seen."""
    try:
        event = decode_health_event("1-0", raw)
    except DecodeError as error:
        assert error.reason in {"missing_field", "invalid_field", "unknown_event_type"}
        hypothesis.event(f"rejected: {error.reason}")
        return
    hypothesis.event("decoded")
    assert event.game_id.encode() == raw[b"game_id"]
    assert event.event_type.value.encode() == raw[b"event_type"]
    assert event.occurred_at_ms == int(raw[b"occurred_at_ms"])


@given(
    game_id=st.none() | _GAME_IDS,
    event_type=st.none()
    | st.sampled_from([e.value.encode() for e in EventType])
    | st.binary(max_size=8),
    occurred=st.none() | _OCCURRED,
)
def test_the_short_path_agrees_with_the_precise_decoder(
    game_id: bytes | None, event_type: bytes | None, occurred: bytes | None
) -> None:
    from consumer.contract.codec import decode_precisely

    raw = fields(game_id, event_type, occurred)

    def outcome(decode: object) -> object:
        try:
            return decode("7-7", raw)  # type: ignore[operator]
        except DecodeError as error:
            return (error.reason, str(error))

    assert outcome(decode_health_event) == outcome(decode_precisely)
