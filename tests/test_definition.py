"""Definition checks on the transition table, and an exhaustive walk with transition coverage."""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any

from transitions import EventData

from statemachine import (
    ALLOWED_CHANGES,
    REACTIONS,
    EventType,
    RuntimeMachine,
    RuntimeRecord,
    Status,
)
from statemachine.errors import StatusConflict, TransitionNotAllowed
from statemachine.machine import ADMIN_TRIGGER
from tests import model

COVERAGE: dict[str, tuple[int, int]] = {}
"""Filled by the exhaustive walk; printed by conftest's terminal summary."""


def live_edges(machine: RuntimeMachine) -> set[tuple[Status, Status, str]]:
    """Every status change the machine makes, found by firing each trigger in each status.

    Read off the structure it would be wrong: every guarded change is declared from every
    status, and only its guard (the compare-and-swap) decides where it applies.
    """
    edges = set()
    for status, event_type in itertools.product(Status, EventType):
        record = RuntimeRecord("g", status)
        if machine.apply(record, event_type, 1).status_changed:
            edges.add((status, record.state, event_type.value))
    for status, expected, to in itertools.product(Status, Status, Status):
        record = RuntimeRecord("g", status)
        try:
            machine.set_status(record, expected, to, 1)
        except (StatusConflict, TransitionNotAllowed):
            continue
        assert (status, record.state) == (expected, to)  # the guard is the CAS
        edges.add((status, to, ADMIN_TRIGGER))
    return edges


def test_every_status_is_reachable_from_starting() -> None:
    edges = live_edges(RuntimeMachine())
    seen = {Status.STARTING}
    queue = deque(seen)
    while queue:
        current = queue.popleft()
        for source, dest, _ in edges:
            if source is current and dest not in seen:
                seen.add(dest)
                queue.append(dest)
    assert seen == set(Status)


def test_no_dead_end_but_finished() -> None:
    edges = live_edges(RuntimeMachine())
    dead_ends = {s for s in Status if not any(src is s for src, _, _ in edges)}
    assert dead_ends == {Status.FINISHED}


def test_every_status_and_event_type_pair_is_handled() -> None:
    machine = RuntimeMachine()
    for event_type in EventType:
        handled = machine.machine.events[event_type.value].transitions
        assert {Status[name] for name in handled} == set(Status), event_type


def test_every_allowed_change_is_some_trigger_and_nothing_else_is() -> None:
    changes = {(src, dst) for src, dst, _ in live_edges(RuntimeMachine())}
    assert changes == set(ALLOWED_CHANGES)


def test_exhaustive_walk_covers_every_transition() -> None:
    machine = RuntimeMachine()
    fired: set[int] = set()

    def record_fired(event: EventData) -> None:
        if event.result and event.transition is not None:
            fired.add(id(event.transition))

    machine.machine.finalize_event.append(record_fired)
    all_transitions = {
        id(t): (source, name, t.dest)
        for name, event in machine.machine.events.items()
        for source, transitions in event.transitions.items()
        for t in transitions
    }
    cells = 0
    for status, event_type in itertools.product(Status, EventType):
        cells += 1
        record = RuntimeRecord("g", status)
        machine.apply(record, event_type, 1)
        assert (record.state.value, record.engine_health) == model.step(
            status.value, event_type.value
        )
    for expected, to in itertools.product(Status, Status):
        cells += 1
        _walk_admin_pair(machine, expected, to)
    COVERAGE["cells"] = (cells, len(Status) * len(EventType) + len(Status) ** 2)
    COVERAGE["transitions"] = (len(fired), len(all_transitions))
    # Never taken, by design: a guarded change expanded for a status other than the one it
    # expects (its guard refuses: the CAS), and a fallback in the status a CAS expects
    # (the change applies there instead).
    unfired = {all_transitions[key] for key in set(all_transitions) - fired}
    expected_by: dict[str, str] = {
        e.value: r.cas[0].name for e, r in REACTIONS.items() if r.cas is not None
    }
    for source, name, dest in unfired:
        if name == ADMIN_TRIGGER:
            continue  # 14 pairs x 7 statuses, each fired only from its own pair's source
        if dest is None:
            assert expected_by.get(name) == source, (source, name)
        else:
            assert expected_by[name] != source, (source, name)
    fired_cas = {all_transitions[key] for key in fired}
    assert {(src, name) for src, name, dest in fired_cas if dest and name != ADMIN_TRIGGER} == {
        (src, name) for name, src in expected_by.items()
    }


def _walk_admin_pair(machine: RuntimeMachine, expected: Status, to: Status) -> None:
    """The admin change from every status, against the model: the machine decides."""
    allowed = (expected.value, to.value) in model.ADMIN_PAIRS
    for status in Status:
        record = RuntimeRecord("g", status)
        state = model.Model(records={"g": model.ModelRecord(status.value)})
        outcome = state.admin("g", expected.value, to.value)
        try:
            machine.set_status(record, expected, to, 1)
            got = "ok"
        except StatusConflict:
            got = "conflict"
        except TransitionNotAllowed:
            got = "not_allowed"
        assert got == outcome, (status, expected, to)
        assert record.state is (to if got == "ok" else status)
    assert allowed == bool(_admin(machine, expected, to))


def _admin(machine: RuntimeMachine, expected: Status, to: Status) -> list[Any]:
    """The admin transitions for the pair (one per status it is declared from), if allowed."""
    found = []
    for transitions in machine.machine.events[ADMIN_TRIGGER].transitions.values():
        for t in transitions:
            if getattr(t, "expected", None) is expected and getattr(t, "dest_status", None) is to:
                found.append(t)
    return found
