"""Why a record is where it is: each change of its history with the rule of the table that
applied and what it did (``healthfsm runtime history GAME_ID --explain``)."""

from __future__ import annotations

from statemachine import REACTIONS
from statemachine.edges import RULE_ADMIN, RULE_CAS, RULE_SUMMARY_ONLY
from statemachine.enums import EVENT_TYPE_BY_VALUE

ADMIN_CAUSE = "admin"
"""The history's cause of an operator's ``set-status``."""


def rule_of(row: dict[str, object]) -> str:
    """The rule of the table a history row applied, from the change it records: an
    operator's pair, else a health event that changed the status (only its CAS does), else
    the summary-only fallback. The table cannot make these disagree: no allowed change
    keeps the status, and a health event changes it through its CAS alone."""
    if row["cause"] == ADMIN_CAUSE:
        return RULE_ADMIN
    return RULE_CAS if row["from_status"] != row["to_status"] else RULE_SUMMARY_ONLY


def _why(rule: str, row: dict[str, object]) -> str:
    """The rule of the table, in words, for this change."""
    source, dest = row["from_status"], row["to_status"]
    if rule == RULE_ADMIN:
        return (
            f"operator set-status {source} -> {dest}: an allowed pair, the record was in {source}"
        )
    event = EVENT_TYPE_BY_VALUE.get(str(row["cause"]))
    if rule == RULE_CAS:
        return f"{row['cause']} [cas]: the record was in {source}, the status its change expects"
    cas = REACTIONS[event].cas if event is not None else None
    if cas is None:
        return f"{row['cause']} never changes the status: summary only"
    return (
        f"{row['cause']} [cas] missed: it changes {cas[0].value} only, the record was in"
        f" {source}: summary only"
    )


def snapshot_words(queued: object) -> str:
    """A change's snapshot, as the table shows it."""
    if queued is None:
        return "not recorded"
    return "queued for Game Lobby" if queued else "held back (summary already sent)"


def explain(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Each history row with ``rule`` (``cas``, ``summary_only`` or ``admin``), ``why``
    (the rule in words), ``status`` (the change, or the status kept) and ``snapshot`` (true
    when the change queued one, false when debounce held it back, null in rows written
    before schema version 6)."""
    explained = []
    for row in rows:
        rule = rule_of(row)
        source, dest = row["from_status"], row["to_status"]
        explained.append(
            {
                **row,
                "rule": rule,
                "why": _why(rule, row),
                "status": f"{source} -> {dest}" if source != dest else f"kept {source}",
                "snapshot": None if row.get("snapshot") is None else bool(row["snapshot"]),
            }
        )
    return explained
