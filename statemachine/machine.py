"""The one ``transitions`` machine every record goes through.

A single ``Machine(model=None)`` is built per process and records are driven with
``machine.events[name].trigger(record, ...)``: building a machine per record, or
``add_model``, costs 10-300x more per record and keeps references alive.

**The guards are the compare-and-swap.** Every status-changing transition is declared from
*every* status (``source='*'``), so ``transitions`` never filters it by the record's state;
its guard compares the record's status with the status the change expects, and only then
does the change apply. For a health event the expected status comes from the reaction
table, and a miss falls through to a ``source='*', dest=None`` fallback that only writes
the summary. For an admin ``set_status`` each allowed pair is one transition whose guards
check, in order, that the operator asked for that pair and that the record is in its
source status; which guard refused tells a conflict from a pair the table does not allow.
Declaring the edges from their source alone would have let the library do the check
before any guard ran, and a guard that can never fail documents a rule it does not hold.

Callbacks write the summary and decide whether a debounced snapshot is due.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, cast

from transitions import EventData, Machine

from statemachine.enums import EventType, Status
from statemachine.errors import StatusConflict, TransitionNotAllowed
from statemachine.lean import LeanMachine, LeanTransition
from statemachine.record import RuntimeRecord
from statemachine.table import ALLOWED_CHANGES, REACTIONS

ADMIN_TRIGGER = "set_status"
"""The trigger behind ``healthfsm runtime set-status``."""


@dataclass(slots=True)
class Effect:
    """What one trigger did to a record; filled in by the machine's guards and callbacks."""

    now_ms: int
    status_changed: bool = False
    snapshot_due: bool = False
    pair_allowed: bool = False
    """Admin: some transition matched the requested pair (so a refusal is a conflict)."""


class _Endpoints:
    """What the guards read off a transition: the status it expects and the one it leads to.

    Declared from every status, so ``source`` is whatever status it was expanded for; the
    status the change *expects* is ``expected``, set from the tables.
    """

    expected: Status | None = None
    dest_status: Status | None

    def __init__(self, source: str, dest: str | None, *args: Any, **kwargs: Any) -> None:
        super().__init__(source, dest, *args, **kwargs)  # type: ignore[call-arg]
        self.dest_status = Status[dest] if dest is not None else None


class _Transition(_Endpoints, LeanTransition):
    """The production transition: the lean execution path."""


def cas(event: EventData) -> bool:
    """Health-event guard, the compare-and-swap: the record is in the status the change
    expects (the reaction table's CAS source). A miss falls through to the summary-only
    fallback, which keeps the status."""
    transition = cast(_Transition, event.transition)
    return cast(RuntimeRecord, event.model).state is transition.expected


def admin_pair(event: EventData) -> bool:
    """Admin guard 1: this edge is the change the operator asked for (``--from``/``--to``)."""
    transition = cast(_Transition, event.transition)
    kwargs = event.kwargs
    if kwargs["expected"] is transition.expected and kwargs["to"] is transition.dest_status:
        kwargs["effect"].pair_allowed = True
        return True
    return False


def admin_cas(event: EventData) -> bool:
    """Admin guard 2, the compare-and-swap: the record is in the operator's ``--from``."""
    transition = cast(_Transition, event.transition)
    return cast(RuntimeRecord, event.model).state is transition.expected


SUMMARY_BY_TRIGGER: dict[str, str] = {e.value: r.summary.value for e, r in REACTIONS.items()}


def write_summary(event: EventData) -> None:
    """Write the event type's summary and decide the debounced snapshot."""
    record = cast(RuntimeRecord, event.model)
    effect: Effect = event.kwargs["effect"]
    summary = SUMMARY_BY_TRIGGER[event.event.name]
    record.engine_health = summary
    record.updated_at_ms = effect.now_ms
    effect.status_changed = cast(_Transition, event.transition).dest is not None
    if effect.status_changed or record.last_emitted_summary != summary:
        effect.snapshot_due = True
        record.last_emitted_summary = summary


def stamp_admin_change(event: EventData) -> None:
    """An admin change touches only the status and the update time."""
    cast(RuntimeRecord, event.model).updated_at_ms = event.kwargs["effect"].now_ms
    event.kwargs["effect"].status_changed = True


class _StatusMachine(LeanMachine):
    transition_cls = _Transition


class RuntimeMachine:
    """Applies health events and admin status changes to records through one shared machine."""

    def __init__(self, machine_cls: type[Machine] = _StatusMachine) -> None:
        self.machine = machine_cls(
            model=None,
            states=Status,
            initial=None,
            send_event=True,
            auto_transitions=False,
            ignore_invalid_triggers=False,
        )
        for event_type, reaction in REACTIONS.items():
            if reaction.cas is not None:
                source, dest = reaction.cas
                self._add_guarded(event_type.value, source, dest, [cas], write_summary)
            self.machine.add_transition(event_type.value, "*", None, after=write_summary)
        for source, dest in sorted(ALLOWED_CHANGES):
            self._add_guarded(
                ADMIN_TRIGGER, source, dest, [admin_pair, admin_cas], stamp_admin_change
            )
        self._triggers = {e: self.machine.events[e.value].trigger for e in EventType}
        self._admin_trigger = self.machine.events[ADMIN_TRIGGER].trigger

    def _add_guarded(
        self, trigger: str, expected: Status, dest: Status, guards: list[Any], after: Any
    ) -> None:
        """One status change declared from every status; ``guards`` decide when it applies."""
        self.machine.add_transition(trigger, "*", dest, conditions=guards, after=after)
        for transitions in self.machine.events[trigger].transitions.values():
            newest = cast(_Endpoints, transitions[-1])
            newest.expected = expected

    def apply(self, record: RuntimeRecord, event_type: EventType, now_ms: int) -> Effect:
        """Apply one health event: CAS status change when possible, summary always."""
        effect = Effect(now_ms=now_ms)
        self._triggers[event_type](record, effect=effect)
        return effect

    def set_status(
        self, record: RuntimeRecord, expected: Status, to: Status, now_ms: int
    ) -> Effect:
        """Admin compare-and-swap through the same table the health events use.

        The machine decides: ``TransitionNotAllowed`` when no edge is the requested pair,
        ``StatusConflict`` when the edge exists but the record is not in ``expected``.
        """
        effect = Effect(now_ms=now_ms)
        if self._admin_trigger(record, expected=expected, to=to, effect=effect):
            return effect
        if effect.pair_allowed:
            raise StatusConflict(
                f"game {record.game_id!r} is {record.state.value}, not {expected.value}"
            )
        raise TransitionNotAllowed(
            f"{expected.value} -> {to.value} is not an allowed status change"
            f" (game {record.game_id!r} is {record.state.value})"
        )


@functools.cache
def get_machine() -> RuntimeMachine:
    """The process-wide machine, built on first use."""
    return RuntimeMachine()
