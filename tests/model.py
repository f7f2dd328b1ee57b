"""An independent reference model of the contract, written from the README, not from the code.

Plain strings and dicts only: nothing here imports the ``transitions`` configuration, so a
mistake in the machine cannot be copied into the expectation.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

STATUSES = [
    "starting",
    "running",
    "generation_in_progress",
    "generation_failed",
    "engine_unreachable",
    "stopped",
    "finished",
]

# event_type -> (summary, CAS source, CAS destination); None: summary only.
REACTION = {
    "container_started": ("healthy", None, None),
    "probe_recovered": ("healthy", "engine_unreachable", "running"),
    "probe_failed": ("probe_failed", None, None),
    "inspect_unhealthy": ("inspect_unhealthy", None, None),
    "container_exited": ("exited", "running", "engine_unreachable"),
    "container_oom": ("oom", "running", "engine_unreachable"),
    "container_disappeared": ("disappeared", "running", "engine_unreachable"),
}
EVENT_TYPES = list(REACTION)

ADMIN_SOURCE = "admin"
"""An admin change's snapshot has a source id of its own (``admin-`` and a number)."""

ADMIN_PAIRS = {
    ("starting", "running"),
    ("starting", "stopped"),
    ("running", "generation_in_progress"),
    ("generation_in_progress", "running"),
    ("generation_in_progress", "generation_failed"),
    ("generation_failed", "generation_in_progress"),
    ("generation_failed", "stopped"),
    ("running", "engine_unreachable"),
    ("engine_unreachable", "running"),
    ("running", "stopped"),
    ("generation_in_progress", "stopped"),
    ("engine_unreachable", "stopped"),
    ("stopped", "starting"),
    ("running", "finished"),
}


def step(status: str, event_type: str) -> tuple[str, str]:
    """(next status, summary) for one health event."""
    summary, source, dest = REACTION[event_type]
    if source is not None and status == source:
        assert dest is not None
        return dest, summary
    return status, summary


@dataclass
class ModelRecord:
    status: str
    engine_health: str = ""
    turn: int = 0
    last_emitted: str | None = None


@dataclass
class Model:
    """The store and the lobby stream as the contract says they must be."""

    records: dict[str, ModelRecord] = field(default_factory=dict)
    snapshots: list[dict[str, str]] = field(default_factory=list)
    dead: list[tuple[str, str]] = field(default_factory=list)
    offset: str = "0-0"
    edges: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """(trigger, status before, outcome: the status after, or 'summary_only' when it was
    kept) of every event applied and every admin change made."""
    changes: list[tuple[str, str, str, bool]] = field(default_factory=list)
    """(game, entry id, rule, snapshot queued) of each change to a record (its status or its
    summary), in order; rule is 'cas', 'summary_only' or 'admin'. An admin change's entry
    id is ``ADMIN_SOURCE``."""

    def health(
        self, entry_id: str, game_id: str | None, event_type: str | None, valid: bool = True
    ) -> None:
        """Apply one stream entry (``valid=False``: it breaks the decode rules)."""
        self.offset = entry_id
        if not valid or game_id is None or event_type is None:
            self.dead.append((entry_id, "malformed"))
            return
        if event_type not in REACTION:
            self.dead.append((entry_id, "unknown_event_type"))
            return
        record = self.records.get(game_id)
        if record is None:
            self.dead.append((entry_id, "unknown_game"))
            return
        before, summary_before = record.status, record.engine_health
        record.status, record.engine_health = step(record.status, event_type)
        moved = record.status != before
        self.edges[(event_type, before, record.status if moved else "summary_only")] += 1
        due = moved or record.engine_health != record.last_emitted
        if moved or record.engine_health != summary_before:
            self.changes.append((game_id, entry_id, "cas" if moved else "summary_only", due))
        if due:
            record.last_emitted = record.engine_health
            self.snapshots.append(
                {
                    "game_id": game_id,
                    "runtime_status": record.status,
                    "engine_health_summary": record.engine_health,
                    "current_turn": str(record.turn),
                    "source_entry_id": entry_id,
                }
            )

    def admin(self, game_id: str, expected: str, to: str) -> str:
        """The admin CAS: 'ok', 'conflict', 'not_allowed' or 'not_found'."""
        record = self.records.get(game_id)
        if record is None:
            return "not_found"
        if (expected, to) not in ADMIN_PAIRS:
            return "not_allowed"
        if record.status != expected:
            return "conflict"
        self.edges[("set_status", expected, to)] += 1
        self.changes.append((game_id, ADMIN_SOURCE, "admin", True))
        record.status = to
        record.last_emitted = record.engine_health
        self.snapshots.append(
            {
                "game_id": game_id,
                "runtime_status": to,
                "engine_health_summary": record.engine_health,
                "current_turn": str(record.turn),
                "source_entry_id": ADMIN_SOURCE,
            }
        )
        return "ok"
