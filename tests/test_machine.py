"""The shared machine against the reference model: every status x event type, every admin pair."""

from __future__ import annotations

import itertools

import pytest

from statemachine import (
    ALLOWED_CHANGES,
    EventType,
    RuntimeRecord,
    Status,
    StatusConflict,
    TransitionNotAllowed,
    get_machine,
)
from tests import model

PAIRS = list(itertools.product(model.STATUSES, model.EVENT_TYPES))


@pytest.mark.parametrize(("status", "event_type"), PAIRS)
def test_every_event_type_in_every_status(status: str, event_type: str) -> None:
    record = RuntimeRecord("g", Status(status), "", 0, 0, None)
    effect = get_machine().apply(record, EventType(event_type), 123)
    want_status, want_summary = model.step(status, event_type)
    assert record.state.value == want_status
    assert record.engine_health == want_summary
    assert record.updated_at_ms == 123
    assert effect.status_changed == (want_status != status)
    assert effect.snapshot_due  # first summary for this game: always due


@pytest.mark.parametrize(("status", "event_type"), PAIRS)
def test_debounce_repeats_only_on_change(status: str, event_type: str) -> None:
    want_status, summary = model.step(status, event_type)
    record = RuntimeRecord("g", Status(status), summary, 0, 0, summary)
    effect = get_machine().apply(record, EventType(event_type), 1)
    assert effect.snapshot_due == (want_status != status)


def test_cas_miss_keeps_status_and_writes_summary() -> None:
    record = RuntimeRecord("g", Status.GENERATION_IN_PROGRESS, "healthy", 5, 0, "healthy")
    effect = get_machine().apply(record, EventType.CONTAINER_OOM, 9)
    assert (record.state, record.engine_health, effect.status_changed) == (
        Status.GENERATION_IN_PROGRESS,
        "oom",
        False,
    )
    assert effect.snapshot_due and record.last_emitted_summary == "oom"


@pytest.mark.parametrize(("expected", "to"), list(itertools.product(Status, Status)))
def test_admin_pairs(expected: Status, to: Status) -> None:
    machine = get_machine()
    record = RuntimeRecord("g", expected, "healthy", 0, 0, "healthy")
    if (expected.value, to.value) in model.ADMIN_PAIRS:
        effect = machine.set_status(record, expected, to, 77)
        assert record.state is to and effect.status_changed and not effect.snapshot_due
        assert record.updated_at_ms == 77 and record.engine_health == "healthy"
    else:
        with pytest.raises(TransitionNotAllowed, match=expected.value):
            machine.set_status(record, expected, to, 77)
        assert record.state is expected


def test_admin_conflict_names_the_current_status() -> None:
    record = RuntimeRecord("g", Status.STOPPED)
    with pytest.raises(StatusConflict, match="'g' is stopped, not running"):
        get_machine().set_status(record, Status.RUNNING, Status.FINISHED, 1)
    assert record.state is Status.STOPPED


def test_table_matches_the_contract() -> None:
    assert {(a.value, b.value) for a, b in ALLOWED_CHANGES} == model.ADMIN_PAIRS


def test_machine_is_shared_and_holds_no_models() -> None:
    machine = get_machine()
    assert machine is get_machine()
    for index in range(1000):
        machine.apply(RuntimeRecord(f"g{index}", Status.RUNNING), EventType.PROBE_FAILED, 1)
    assert machine.machine.models == []
