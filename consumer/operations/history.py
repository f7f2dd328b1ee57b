"""Why a record is where it is: each change of its history with the rule of the table that
applied and what it did (``healthfsm runtime history GAME_ID --explain``)."""

from __future__ import annotations

from statemachine import ALLOWED_CHANGES, REACTIONS
from statemachine.edges import RULE_ADMIN, RULE_CAS, RULE_SUMMARY_ONLY
from statemachine.enums import EVENT_TYPE_BY_VALUE
from store.history import ADMIN_CAUSE


def rule_of(row: dict[str, object]) -> str:
    """The rule of the table a history row applied, read off the change it records and
    checked against this release's table: an allowed operator pair (``admin``), a health
    event's compare-and-swap from the status it expects (``cas``), a health event that kept
    the status (``summary_only``); anything else is ``RULE_NOT_IN_TABLE`` (a row another
    release or another writer made), never a rule it did not apply."""
    source, dest, cause = row["from_status"], row["to_status"], str(row["cause"])
    if cause == ADMIN_CAUSE:
        return RULE_ADMIN if _pair(source, dest) in ALLOWED else RULE_NOT_IN_TABLE
    event = EVENT_TYPE_BY_VALUE.get(cause)
    if event is None:
        return RULE_NOT_IN_TABLE
    if source == dest:
        return RULE_SUMMARY_ONLY
    cas = REACTIONS[event].cas
    return RULE_CAS if cas is not None and _pair(source, dest) == cas else RULE_NOT_IN_TABLE


RULE_NOT_IN_TABLE = "not_in_table"
"""A recorded change this release's table does not make."""

ALLOWED = {(a.value, b.value) for a, b in ALLOWED_CHANGES}


def _pair(source: object, dest: object) -> tuple[str, str]:
    return str(source), str(dest)


def _why(rule: str, row: dict[str, object]) -> str:
    """The rule of the table, in words, for this change."""
    source, dest, cause = row["from_status"], row["to_status"], row["cause"]
    if rule == RULE_ADMIN:
        return (
            f"operator set-status {source} -> {dest}: an allowed pair, the record was in {source}"
        )
    if rule == RULE_NOT_IN_TABLE:
        return (
            f"{cause} {source} -> {dest} is no change this release's table makes (written by"
            " another release or another writer)"
        )
    event = EVENT_TYPE_BY_VALUE[str(cause)]
    if rule == RULE_CAS:
        return f"{cause} [cas]: the record was in {source}, the status its change expects"
    cas = REACTIONS[event].cas
    if cas is None:
        return f"{cause} never changes the status: summary only"
    return (
        f"{cause} [cas] missed: it changes {cas[0].value} only, the record was in"
        f" {source}: summary only"
    )


def snapshot_words(queued: object) -> str:
    """A change's snapshot, as the table shows it."""
    if queued is None:
        return "not recorded"
    return "queued for Game Lobby" if queued else "held back (summary already sent)"


def explain(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Each history row with ``rule`` (``cas``, ``summary_only``, ``admin`` or
    ``not_in_table``), ``why``
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
