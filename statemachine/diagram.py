"""The status machine as a Mermaid state diagram and as Graphviz DOT, from the same tables.

Drawn from ``ALLOWED_CHANGES`` and ``REACTIONS``, the tables the machine is built from;
``tests/test_diagram.py`` checks the drawn edges against the changes the machine actually
makes when fired. Only edges that change the status are drawn. Health events carry their
``[cas]`` guard; the fourteen operator changes are one kind, labelled ``admin`` and
explained once in the legend, so they do not drown out the health edges.
"""

from __future__ import annotations

from statemachine.enums import EventType, Status
from statemachine.table import ALLOWED_CHANGES, REACTIONS, TERMINAL_STATUSES

TITLE = "healthfsm runtime status"

ADMIN_LABEL = "admin"
"""How an operator change (``healthfsm runtime set-status``) is labelled on an edge."""

ENTRY_LABEL = "runtime add"
"""``runtime add`` registers a game in ``running`` unless ``--status`` says otherwise."""

SUMMARY_ONLY = [e.value for e, r in REACTIONS.items() if r.cas is None]
"""Event types that never change the status: drawn nowhere, named in the legend."""

LEGEND = [
    "EVENT [cas]: a health event; the change applies only from this status (compare-and-swap),",
    "  elsewhere the event writes its summary and the status stays",
    f"{ADMIN_LABEL}: healthfsm runtime set-status --from A --to B (guards admin_pair, admin_cas)",
    f"summary only, in every status: {', '.join(SUMMARY_ONLY)}",
    "snapshot to Game Lobby: on every status change, and when the summary differs",
    "  from the last one sent (debounce)",
    f"{ENTRY_LABEL}: a new record starts in running, or in the status given with --status",
]


def edge_labels() -> dict[tuple[str, str], list[str]]:
    """(source, dest) -> the labels of every status change between them, health first."""
    labels: dict[tuple[str, str], list[str]] = {}
    for event_type in EventType:
        cas = REACTIONS[event_type].cas
        if cas is not None:
            labels.setdefault((cas[0].value, cas[1].value), []).append(f"{event_type.value} [cas]")
    for source, dest in sorted(ALLOWED_CHANGES):
        labels.setdefault((source.value, dest.value), []).append(ADMIN_LABEL)
    return dict(sorted(labels.items()))


def render_mermaid() -> str:
    """The Mermaid source of the status diagram, ending with a newline."""
    lines = ["---", f"title: {TITLE}", "---", "stateDiagram-v2", "  direction LR"]
    lines += [f'  state "{s.value}" as {s.value}' for s in Status]
    lines.append(f"  [*] --> {Status.RUNNING.value}: {ENTRY_LABEL}")
    for (source, dest), names in edge_labels().items():
        lines.append(f"  {source} --> {dest}: {' | '.join(names)}")
    lines += [f"  {s.value} --> [*]" for s in Status if s in TERMINAL_STATUSES]
    lines.append(f"  note right of {Status.FINISHED.value}")
    lines += [f"    {line}" for line in LEGEND]
    lines.append("  end note")
    return "\n".join(lines) + "\n"


def render_dot() -> str:
    """The same diagram in Graphviz DOT (top to bottom, so it fits a page's width)."""
    lines = [
        "digraph runtime_status {",
        "  rankdir=TB; nodesep=0.5; ranksep=0.6;",
        '  node [shape=box, style=rounded, fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
        f'  __start [shape=point]; __start -> "running" [label="{ENTRY_LABEL}", style=dotted];',
    ]
    for status in Status:
        extra = ", peripheries=2" if status in TERMINAL_STATUSES else ""
        lines.append(f'  "{status.value}" [label="{status.value}"{extra}];')
    for (source, dest), names in edge_labels().items():
        health = [n for n in names if n != ADMIN_LABEL]
        if health:
            label = "\\n".join(health)
            lines.append(f'  "{source}" -> "{dest}" [label="{label}", penwidth=2];')
        if ADMIN_LABEL in names:
            lines.append(
                f'  "{source}" -> "{dest}" [label="{ADMIN_LABEL}", style=dashed, color=gray40,'
                " fontcolor=gray40];"
            )
    legend = "\\l".join(LEGEND) + "\\l"
    lines.append(f'  legend [shape=note, label="{legend}", fontsize=10];')
    lines.append("}")
    return "\n".join(lines) + "\n"
