"""Every edge of the machine as the tables give it: what the store's traffic counts, the
traffic diagram and the suite's end-to-end coverage are measured against.

An edge is a cell of the reaction table, (health event, status the record is in), with the
outcome the table gives it: the CAS's destination when the status is its source, else the
summary-only fallback. Each pair ``set-status`` allows is an edge too (trigger
``set_status``). 7 events x 7 statuses + 14 pairs = 63 edges.
"""

from __future__ import annotations

from typing import NamedTuple

from statemachine.enums import EventType, Status
from statemachine.machine import ADMIN_TRIGGER
from statemachine.table import ALLOWED_CHANGES, REACTIONS

SUMMARY_ONLY = "summary_only"
"""The outcome of an event that kept the record's status and wrote its summary only."""

RULE_CAS = "cas"
"""A health event's compare-and-swap hit: the record was in the status its change expects."""
RULE_SUMMARY_ONLY = SUMMARY_ONLY
"""The fallback: the event kept the status and wrote its summary (a CAS miss, or an event
that never changes the status)."""
RULE_ADMIN = "admin"
"""An operator's ``set-status``: one of the allowed pairs, its source checked."""

CAS_TRIGGERS = frozenset(e.value for e, r in REACTIONS.items() if r.cas is not None)
"""Event types that attempt a status change: their summary-only edges are CAS misses."""


class Edge(NamedTuple):
    """One edge of the machine: what fired, from which status, and what it did."""

    trigger: str
    """The event type, or ``set_status`` for an operator's change."""
    from_status: str
    outcome: str
    """The status the record went to, or ``SUMMARY_ONLY``."""

    @property
    def rule(self) -> str:
        """Which rule of the table this edge is: ``cas``, ``summary_only`` or ``admin``."""
        if self.trigger == ADMIN_TRIGGER:
            return RULE_ADMIN
        return RULE_SUMMARY_ONLY if self.outcome == SUMMARY_ONLY else RULE_CAS

    @property
    def cas_missed(self) -> bool:
        """A CAS event's summary-only edge: the record was not in the status it expects."""
        return self.outcome == SUMMARY_ONLY and self.trigger in CAS_TRIGGERS

    def __str__(self) -> str:
        return f"{self.trigger}: {self.from_status} -> {self.outcome}"


def outcome_of(event_type: EventType, status: Status) -> str:
    """What the table says ``event_type`` does to a record in ``status``."""
    cas = REACTIONS[event_type].cas
    return cas[1].value if cas is not None and cas[0] is status else SUMMARY_ONLY


HEALTH_EDGES: tuple[Edge, ...] = tuple(
    Edge(e.value, s.value, outcome_of(e, s)) for e in EventType for s in Status
)
"""Every cell of the reaction table, in the enums' order."""

ADMIN_EDGES: tuple[Edge, ...] = tuple(
    Edge(ADMIN_TRIGGER, source.value, dest.value)
    for source, dest in sorted(
        ALLOWED_CHANGES, key=lambda p: (list(Status).index(p[0]), list(Status).index(p[1]))
    )
)
"""Every pair ``set-status`` allows, in the statuses' lifecycle order."""

ALL_EDGES: tuple[Edge, ...] = HEALTH_EDGES + ADMIN_EDGES

KNOWN_EDGES: frozenset[Edge] = frozenset(ALL_EDGES)
"""For telling a counted edge this release's table does not have (a newer one wrote it)."""
