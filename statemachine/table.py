"""The contract as data: which status changes exist and how each health event reacts.

Everything else (the machine, the diagram, the admin compare-and-swap) is built from these
two tables, so there is exactly one place to read or change the rules.
"""

from dataclasses import dataclass

from statemachine.enums import EventType, Status, Summary

S = Status

ALLOWED_CHANGES: frozenset[tuple[Status, Status]] = frozenset(
    {
        (S.STARTING, S.RUNNING),
        (S.STARTING, S.STOPPED),
        (S.RUNNING, S.GENERATION_IN_PROGRESS),
        (S.GENERATION_IN_PROGRESS, S.RUNNING),
        (S.GENERATION_IN_PROGRESS, S.GENERATION_FAILED),
        (S.GENERATION_FAILED, S.GENERATION_IN_PROGRESS),
        (S.GENERATION_FAILED, S.STOPPED),
        (S.RUNNING, S.ENGINE_UNREACHABLE),
        (S.ENGINE_UNREACHABLE, S.RUNNING),
        (S.RUNNING, S.STOPPED),
        (S.GENERATION_IN_PROGRESS, S.STOPPED),
        (S.ENGINE_UNREACHABLE, S.STOPPED),
        (S.STOPPED, S.STARTING),
        (S.RUNNING, S.FINISHED),
    }
)
"""Every allowed status change, for health events and admin operations alike."""

TERMINAL_STATUSES: frozenset[Status] = frozenset({S.FINISHED})
"""Statuses with no way out."""


@dataclass(frozen=True, slots=True)
class Reaction:
    """What one event type does: the summary it writes and the CAS it attempts, if any."""

    summary: Summary
    cas: tuple[Status, Status] | None = None


_UNREACHABLE = (S.RUNNING, S.ENGINE_UNREACHABLE)

REACTIONS: dict[EventType, Reaction] = {
    EventType.CONTAINER_STARTED: Reaction(Summary.HEALTHY),
    EventType.PROBE_RECOVERED: Reaction(Summary.HEALTHY, (S.ENGINE_UNREACHABLE, S.RUNNING)),
    EventType.PROBE_FAILED: Reaction(Summary.PROBE_FAILED),
    EventType.INSPECT_UNHEALTHY: Reaction(Summary.INSPECT_UNHEALTHY),
    EventType.CONTAINER_EXITED: Reaction(Summary.EXITED, _UNREACHABLE),
    EventType.CONTAINER_OOM: Reaction(Summary.OOM, _UNREACHABLE),
    EventType.CONTAINER_DISAPPEARED: Reaction(Summary.DISAPPEARED, _UNREACHABLE),
}
"""The reaction table: one row per event type Runtime Manager emits."""


def _check_reactions() -> None:
    for event_type, reaction in REACTIONS.items():
        if reaction.cas is not None and reaction.cas not in ALLOWED_CHANGES:
            raise AssertionError(f"{event_type.value}: CAS {reaction.cas} is not in the table")


_check_reactions()
