"""The one ``transitions`` machine every record goes through.

A single ``Machine(model=None)`` is built per process and records are driven with
``machine.events[name].trigger(record, ...)``: building a machine per record, or
``add_model``, costs 10-300x more per record and keeps references alive.

Each health trigger has two transitions, tried in order: the compare-and-swap status
change (its source is the expected status, its guard checks it) and a catch-all
``source='*', dest=None`` fallback that only writes the summary. Callbacks write the
summary and decide whether a debounced snapshot is due.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, cast

from transitions import EventData

from statemachine.enums import EventType, Status
from statemachine.errors import StatusConflict, TransitionNotAllowed
from statemachine.lean import LeanMachine, LeanTransition
from statemachine.record import RuntimeRecord
from statemachine.table import ALLOWED_CHANGES, REACTIONS

ADMIN_TRIGGER = "set_status"
"""The trigger behind ``healthfsm runtime set-status``."""


@dataclass(slots=True)
class Effect:
    """What one trigger did to a record; filled in by the machine's callbacks."""

    now_ms: int
    from_status: Status | None = None
    status_changed: bool = False
    snapshot_due: bool = False


class _Transition(LeanTransition):
    """A transition that also knows its endpoints as ``Status`` members, for the guards."""

    def __init__(self, source: str, dest: str | None, *args: Any, **kwargs: Any) -> None:
        super().__init__(source, dest, *args, **kwargs)  # type: ignore[arg-type]  # None: internal
        self.source_status = Status[source] if source in Status.__members__ else None
        self.dest_status = Status[dest] if dest is not None else None


def cas(event: EventData) -> bool:
    """Health-event guard (compare-and-swap): the record is in the status the change expects.

    A miss falls through to the summary-only fallback transition.
    """
    transition = cast(_Transition, event.transition)
    return bool(cast(RuntimeRecord, event.model).state is transition.source_status)


def admin_cas(event: EventData) -> bool:
    """Admin guard: the record is in the operator's ``--from`` and this edge leads to ``--to``."""
    kwargs = event.kwargs
    transition = cast(_Transition, event.transition)
    record = cast(RuntimeRecord, event.model)
    return bool(
        record.state == kwargs["expected"] == transition.source_status
        and kwargs["to"] == transition.dest_status
    )


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

    def __init__(self) -> None:
        self.machine = _StatusMachine(
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
                self.machine.add_transition(
                    event_type.value,
                    source,
                    dest,
                    conditions=cas,
                    after=write_summary,
                )
            self.machine.add_transition(event_type.value, "*", None, after=write_summary)
        for source, dest in sorted(ALLOWED_CHANGES):
            self.machine.add_transition(
                ADMIN_TRIGGER,
                source,
                dest,
                conditions=admin_cas,
                after=stamp_admin_change,
            )
        self._triggers = {e: self.machine.events[e.value].trigger for e in EventType}
        self._admin_trigger = self.machine.events[ADMIN_TRIGGER].trigger

    def apply(self, record: RuntimeRecord, event_type: EventType, now_ms: int) -> Effect:
        """Apply one health event: CAS status change when possible, summary always."""
        effect = Effect(now_ms=now_ms, from_status=record.state)
        self._triggers[event_type](record, effect=effect)
        return effect

    def set_status(
        self, record: RuntimeRecord, expected: Status, to: Status, now_ms: int
    ) -> Effect:
        """Admin compare-and-swap through the same table the health events use."""
        if (expected, to) not in ALLOWED_CHANGES:
            raise TransitionNotAllowed(
                f"{expected.value} -> {to.value} is not an allowed status change"
                f" (game {record.game_id!r} is {record.state.value})"
            )
        if record.state != expected:
            raise StatusConflict(
                f"game {record.game_id!r} is {record.state.value}, not {expected.value}"
            )
        effect = Effect(now_ms=now_ms, from_status=record.state)
        if not self._admin_trigger(record, expected=expected, to=to, effect=effect):
            raise TransitionNotAllowed(  # unreachable while machine and table agree
                f"the machine refused {expected.value} -> {to.value} for {record.game_id!r}"
            )
        return effect


@functools.cache
def get_machine() -> RuntimeMachine:
    """The process-wide machine, built on first use."""
    return RuntimeMachine()
