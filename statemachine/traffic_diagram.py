"""The two diagrams again, with how often production took each edge (``diagram --traffic``).

The same statuses and edges as ``statemachine.diagram``, each labelled with its count from
the store's traffic table; an edge never taken in the window is drawn faint. What the
plain diagrams leave undrawn is drawn here too: each status's loop counts the events that
kept it and wrote their summary only, a CAS event's misses named as such (the record was
in another status than its change expects), so "how often does an exit meet a game in turn
generation" is read off the picture. Pure: counts in, text out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from statemachine.diagram import FONT, LEGEND_FONTSIZE, legend_table
from statemachine.edges import ADMIN_EDGES, HEALTH_EDGES, KNOWN_EDGES, SUMMARY_ONLY, Edge
from statemachine.enums import Status
from statemachine.table import TERMINAL_STATUSES

FAINT_DOT = 'color="gray80", fontcolor="gray60", style=dashed'
FAINT_MERMAID = "stroke:#cccccc,stroke-dasharray:4 4,color:#999999"


@dataclass(frozen=True, slots=True)
class DrawnEdge:
    """One arrow: its ends, its label lines and the count that decides how it is drawn."""

    source: str
    dest: str
    lines: list[str]
    count: int


@dataclass(frozen=True, slots=True)
class TrafficDiagram:
    """A diagram with counts: its file stem, title, arrows and legend lines."""

    name: str
    title: str
    subtitle: str
    """What was counted and the window it covers."""
    edges: list[DrawnEdge]
    legend: list[str]


def _n(count: int) -> str:
    return f"{count:,}"


def status_traffic(counts: Mapping[Edge, int], window: str) -> TrafficDiagram:
    """The health events' diagram: CAS edges with each event's hits, and per status a loop
    with the events that wrote their summary only there."""
    arrows: dict[tuple[str, str], list[tuple[str, int]]] = {}
    loops: dict[str, list[tuple[str, int]]] = {s.value: [] for s in Status}
    for edge in HEALTH_EDGES:
        n = counts.get(edge, 0)
        if edge.outcome != SUMMARY_ONLY:
            arrows.setdefault((edge.from_status, edge.outcome), []).append(
                (f"{edge.trigger} [cas]", n)
            )
        elif n:
            missed = " [cas missed]" if edge.cas_missed else ""
            loops[edge.from_status].append((f"{edge.trigger}{missed}", n))
    drawn = [
        DrawnEdge(source, dest, [f"{name} {_n(n)}" for name, n in named], sum(n for _, n in named))
        for (source, dest), named in sorted(arrows.items())
    ]
    for status, named in loops.items():
        total = sum(n for _, n in named)
        lines = ["summary only:", *(f"{name} {_n(n)}" for name, n in named)] if named else []
        drawn.append(DrawnEdge(status, status, lines or ["summary only: 0"], total))
    health = sum(counts.get(edge, 0) for edge in HEALTH_EDGES)
    return TrafficDiagram(
        name="runtime_status.traffic",
        title="healthfsm runtime status, traffic (health events)",
        subtitle=f"{_n(health)} health events {window}",
        edges=drawn,
        legend=[
            "each edge: the events that took it in the window, from the store's traffic table",
            "faint: never taken in the window",
            "a loop: events that kept the status and wrote their summary only there",
            "[cas missed]: the event changes another status; the record was in this one",
            "operator changes: see runtime_admin.traffic",
        ],
    )


def admin_traffic(counts: Mapping[Edge, int], window: str) -> TrafficDiagram:
    """The operator's diagram: every pair ``set-status`` allows, with how often it was used."""
    drawn = [
        DrawnEdge(e.from_status, e.outcome, [_n(counts.get(e, 0))], counts.get(e, 0))
        for e in ADMIN_EDGES
    ]
    total = sum(edge.count for edge in drawn)
    return TrafficDiagram(
        name="runtime_admin.traffic",
        title="healthfsm runtime status, traffic (operator changes)",
        subtitle=f"{_n(total)} operator changes {window}",
        edges=drawn,
        legend=[
            "each edge: healthfsm runtime set-status --from A --to B, times used in the window",
            "faint: never used in the window",
            "health events: see runtime_status.traffic",
        ],
    )


def traffic_diagrams(counts: Mapping[Edge, int], window: str) -> tuple[TrafficDiagram, ...]:
    """Both diagrams with ``counts``; ``window`` says what they cover, for their titles.
    Counts on edges this release's table does not have (a newer release wrote them) are
    drawn nowhere, so both legends say how many there are."""
    diagrams = status_traffic(counts, window), admin_traffic(counts, window)
    unknown = unknown_count(counts)
    if unknown:
        line = f"not drawn: {_n(unknown)} counted on edges this release's table does not have"
        for diagram in diagrams:
            diagram.legend.append(line + " (see --json)")
    return diagrams


def unknown_count(counts: Mapping[Edge, int]) -> int:
    """How many counts are on edges this release's table does not have."""
    return sum(n for edge, n in counts.items() if edge not in KNOWN_EDGES)


def render_traffic_mermaid(diagram: TrafficDiagram) -> str:
    """A Mermaid flowchart (its state diagrams cannot style an edge): faint edges dashed."""
    title = json.dumps(f"{diagram.title}: {diagram.subtitle}")  # a YAML double-quoted string
    lines = ["---", f"title: {title}", "---", "flowchart TB"]
    lines += [f'  {s.value}(["{s.value}"])' for s in Status]
    faint = []
    for index, edge in enumerate(diagram.edges):
        label = "<br/>".join(edge.lines)
        lines.append(f'  {edge.source} -->|"{label}"| {edge.dest}')
        if edge.count == 0:
            faint.append(str(index))
    if faint:
        lines.append(f"  linkStyle {','.join(faint)} {FAINT_MERMAID}")
    legend = "<br/>".join(diagram.legend)
    lines.append(f'  legend["{legend}"]')
    return "\n".join(lines) + "\n"


def render_traffic_dot(diagram: TrafficDiagram) -> str:
    """Graphviz DOT: taken edges bold (thicker for more traffic), the rest faint."""
    lines = [
        f'digraph "{diagram.name}" {{',
        "  rankdir=TB; nodesep=0.5; ranksep=0.6;",
        f'  graph [fontname="{FONT}", label="{diagram.title}\\n{diagram.subtitle}", labelloc=t,'
        " fontsize=14];",
        f'  node [shape=box, style=rounded, fontname="{FONT}"];',
        f'  edge [fontname="{FONT}", fontsize=10];',
    ]
    for status in Status:
        extra = ", peripheries=2" if status in TERMINAL_STATUSES else ""
        lines.append(f'  "{status.value}" [label="{status.value}"{extra}];')
    for edge in diagram.edges:
        label = "\\n".join(edge.lines)
        style = f"penwidth={1 + min(len(str(edge.count)), 6) / 2:g}" if edge.count else FAINT_DOT
        lines.append(f'  "{edge.source}" -> "{edge.dest}" [label="{label}", {style}];')
    legend = legend_table(diagram.legend)
    lines.append(f"  legend [shape=plain, fontsize={LEGEND_FONTSIZE}, label={legend}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
