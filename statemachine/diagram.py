"""The status machine as a Mermaid state diagram, generated from the same table as the machine.

Rendered by the ``transitions`` diagram extension with the Mermaid engine (no system binary).
Only edges that change the status are drawn; the summary-only fallbacks that every health
event has in every status are described in a note instead of 49 self-loops.
"""

from __future__ import annotations

from typing import Any

from transitions.extensions.diagrams import GraphMachine

from statemachine.enums import Status
from statemachine.machine import ADMIN_TRIGGER, admin_cas, cas
from statemachine.table import ALLOWED_CHANGES, REACTIONS, TERMINAL_STATUSES

TITLE = "healthfsm runtime status"

FALLBACK_NOTE = (
    "Every health event in every status also writes engine_health;"
    " when its guarded change does not apply (CAS miss), only the summary is written"
)


class _Drawing:
    """A throwaway model: the diagram extension wants one to draw for."""

    state: str


def status_edges() -> list[tuple[str, str, str]]:
    """(source, dest, trigger) for every status-changing transition, in a stable order."""
    edges = [
        (reaction.cas[0].value, reaction.cas[1].value, event_type.value)
        for event_type, reaction in REACTIONS.items()
        if reaction.cas is not None
    ]
    edges += [(src.value, dst.value, ADMIN_TRIGGER) for src, dst in ALLOWED_CHANGES]
    return sorted(edges)


def _graph_machine() -> Any:
    states: list[dict[str, Any]] = [
        {"name": s.value, "final": s in TERMINAL_STATUSES} for s in Status
    ]
    transitions = [
        {
            "trigger": trigger,
            "source": source,
            "dest": dest,
            "conditions": admin_cas if trigger == ADMIN_TRIGGER else cas,
        }
        for source, dest, trigger in status_edges()
    ]
    return GraphMachine(
        model=_Drawing(),
        states=states,
        transitions=transitions,
        initial=Status.STARTING.value,
        graph_engine="mermaid",
        show_conditions=True,
        auto_transitions=False,
        title=TITLE,
    )


def render_mermaid() -> str:
    """The Mermaid source of the status diagram, ending with a newline."""
    machine = _graph_machine()
    machine.get_combined_graph()
    for graph in machine.model_graphs.values():
        graph.reset_styling()  # no "current state" highlight: this is the machine, not a record
    source: str = machine.get_combined_graph().source
    lines = source.rstrip("\n").split("\n")
    lines += [f"  {s.value} --> [*]" for s in Status if s in TERMINAL_STATUSES]
    lines.append(f"  note right of {Status.RUNNING.value}")
    lines.append(f"    {FALLBACK_NOTE}")
    lines.append("  end note")
    return "\n".join(lines) + "\n"


def render_dot() -> str:
    """The same diagram in Graphviz DOT, for an SVG when the ``dot`` binary is installed."""
    lines = ["digraph runtime_status {", "  rankdir=LR;", "  node [shape=box, style=rounded];"]
    lines.append('  __start [shape=point]; __start -> "starting";')
    for status in Status:
        shape = ", peripheries=2" if status in TERMINAL_STATUSES else ""
        lines.append(f'  "{status.value}" [label="{status.value}"{shape}];')
    labels: dict[tuple[str, str], list[str]] = {}
    for source, dest, trigger in status_edges():
        guard = "admin_cas" if trigger == ADMIN_TRIGGER else "cas"
        labels.setdefault((source, dest), []).append(f"{trigger} [{guard}]")
    for (source, dest), names in labels.items():
        label = "\\n".join(names)
        lines.append(f'  "{source}" -> "{dest}" [label="{label}"];')
    lines.append(f'  note [shape=note, label="{FALLBACK_NOTE}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"
