"""Definition checks on the transition table, and an exhaustive walk with transition coverage."""

from __future__ import annotations

import itertools
from collections import deque

from transitions import EventData

from statemachine import ALLOWED_CHANGES, EventType, RuntimeMachine, RuntimeRecord, Status
from statemachine.errors import TransitionNotAllowed
from statemachine.machine import ADMIN_TRIGGER
from tests import model

COVERAGE: dict[str, tuple[int, int]] = {}
"""Filled by the exhaustive walk; printed by conftest's terminal summary."""


def live_edges(machine: RuntimeMachine) -> set[tuple[Status, Status, str]]:
    edges = set()
    for name, event in machine.machine.events.items():
        for source, transitions in event.transitions.items():
            for transition in transitions:
                if transition.dest is not None:
                    edges.add((Status[source], Status[transition.dest], name))
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
        record = RuntimeRecord("g", expected)
        if (expected.value, to.value) in model.ADMIN_PAIRS:
            machine.set_status(record, expected, to, 1)
            assert record.state is to
        else:
            try:
                machine.set_status(record, expected, to, 1)
            except TransitionNotAllowed:
                pass
            else:
                raise AssertionError(f"{expected} -> {to} was allowed")
    COVERAGE["cells"] = (cells, len(Status) * len(EventType) + len(Status) ** 2)
    COVERAGE["transitions"] = (len(fired), len(all_transitions))
    # The only transitions never taken are the catch-all fallbacks in a CAS event's own source
    # status: there the guarded change always applies, so the fallback is shadowed by design.
    shadowed = {all_transitions[key] for key in set(all_transitions) - fired}
    cas_sources = {
        (src.name, name, None) for src, _, name in live_edges(machine) if name != ADMIN_TRIGGER
    }
    assert shadowed == cas_sources
    admin = machine.machine.events[ADMIN_TRIGGER].transitions
    assert sum(len(ts) for ts in admin.values()) == len(model.ADMIN_PAIRS)
