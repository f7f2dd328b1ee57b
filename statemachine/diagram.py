"""The status machine as two diagrams, each as Mermaid and as Graphviz DOT, from the tables.

Drawn from ``REACTIONS`` and ``ALLOWED_CHANGES``, the tables the machine is built from;
``tests/test_diagram.py`` checks the drawn edges against the changes the machine actually
makes when fired. ``runtime_status`` draws what health events do, ``runtime_admin`` the
pairs ``healthfsm runtime set-status`` allows: fourteen operator edges in the same picture
as the health edges made both hard to read, and labels hard to match to their edges. Both
draw every status, so the two pictures are the same map with different roads.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

from statemachine.enums import EventType, Status
from statemachine.table import ALLOWED_CHANGES, REACTIONS, TERMINAL_STATUSES

FONT = "DejaVu Sans"
"""The font the SVG names. Debian ships it (``fonts-dejavu-core``, which fontconfig pulls
in) and its usual stand-ins (Helvetica, Arial, Liberation Sans) are narrower, so text sized
for it fits in any of them. Helvetica, which each machine substitutes differently, overflowed."""

FONT_UNITS_PER_EM = 2048
FONT_ADVANCES = (
    651, 821, 942, 1716, 1303, 1946, 1597, 563, 799, 799, 1024, 1716, 651, 739, 651, 690,
    1303, 1303, 1303, 1303, 1303, 1303, 1303, 1303, 1303, 1303, 690, 690, 1716, 1716, 1716,
    1087, 2048, 1401, 1405, 1430, 1577, 1294, 1178, 1587, 1540, 604, 604, 1343, 1141, 1767,
    1532, 1612, 1235, 1612, 1423, 1300, 1251, 1499, 1401, 2025, 1403, 1251, 1403, 799, 690,
    799, 1716, 1024, 1024, 1255, 1300, 1126, 1300, 1260, 721, 1300, 1298, 569, 569, 1186,
    569, 1995, 1298, 1253, 1300, 1300, 842, 1067, 803, 1298, 1212, 1675, 1212, 1212, 1075,
    1303, 690, 1303, 1716,
)  # fmt: skip
"""``FONT``'s advance widths of the printable ASCII characters, space to tilde, from its
``hmtx`` table (``tests/test_diagram.py`` reads them off the installed font). Graphviz's
own measure runs a few per cent short (hinted, or a guess without its pango plugin)."""

LEGEND_FONTSIZE = 10
LEGEND_PADDING = 3
"""Points between a legend cell's border and its text."""

ENTRY_LABEL = "runtime add"
"""``runtime add`` registers a game in ``running`` unless ``--status`` says otherwise."""

SUMMARY_ONLY = [e.value for e, r in REACTIONS.items() if r.cas is None]
"""Event types that never change the status: drawn nowhere, named in the legend."""

_ENTRY_LINE = f"{ENTRY_LABEL}: a new record starts in running, or in the status given with --status"


@dataclass(frozen=True, slots=True)
class Diagram:
    """One diagram: its file stem, title, labelled edges and legend lines."""

    name: str
    title: str
    edges: dict[tuple[str, str], list[str]]
    """(source, dest) -> the labels drawn on that edge (none: every edge is the same kind)."""
    legend: list[str]
    edge_style: str
    """DOT attributes of every edge between statuses."""
    untouched_label: str = ""
    """The SVG stacks the statuses no edge touches in a box with this label."""

    def untouched(self) -> list[Status]:
        """The statuses no drawn edge enters or leaves."""
        touched = {status for pair in self.edges for status in pair}
        return [s for s in Status if s.value not in touched]


def health_edges() -> dict[tuple[str, str], list[str]]:
    """(source, dest) -> the health events that make that change, with their ``[cas]`` guard."""
    labels: dict[tuple[str, str], list[str]] = {}
    for event_type in EventType:
        cas = REACTIONS[event_type].cas
        if cas is not None:
            labels.setdefault((cas[0].value, cas[1].value), []).append(f"{event_type.value} [cas]")
    return dict(sorted(labels.items()))


def admin_edges() -> dict[tuple[str, str], list[str]]:
    """Every pair ``set-status`` allows, unlabelled, in the statuses' lifecycle order."""
    order = list(Status)
    pairs = sorted(ALLOWED_CHANGES, key=lambda p: (order.index(p[0]), order.index(p[1])))
    return {(source.value, dest.value): [] for source, dest in pairs}


STATUS = Diagram(
    name="runtime_status",
    title="healthfsm runtime status (health events)",
    edges=health_edges(),
    legend=[
        "EVENT [cas]: a health event that changes the status only from the status drawn",
        "[cas]: compare-and-swap; from any other status the event writes its summary only",
        f"summary only, in every status: {', '.join(SUMMARY_ONLY)}",
        "snapshot to Game Lobby: on each status change and each new summary (debounce)",
        _ENTRY_LINE,
        "operator changes (healthfsm runtime set-status): see runtime_admin",
    ],
    edge_style="penwidth=2",
    untouched_label="changed by operators only",
)

ADMIN = Diagram(
    name="runtime_admin",
    title="healthfsm runtime status (operator changes)",
    edges=admin_edges(),
    legend=[
        "every edge: healthfsm runtime set-status GAME_ID --from A --to B",
        "guards: admin_pair (the pair asked for), admin_cas (the record is in --from)",
        "each change publishes a snapshot to Game Lobby",
        _ENTRY_LINE,
        "health events: see runtime_status",
    ],
    edge_style="color=gray30",
)

DIAGRAMS = (STATUS, ADMIN)


def render_mermaid(diagram: Diagram) -> str:
    """The Mermaid source of ``diagram``, ending with a newline."""
    lines = ["---", f"title: {diagram.title}", "---", "stateDiagram-v2", "  direction LR"]
    lines += [f'  state "{s.value}" as {s.value}' for s in Status]
    lines.append(f"  [*] --> {Status.RUNNING.value}: {ENTRY_LABEL}")
    for (source, dest), names in diagram.edges.items():
        label = f": {' | '.join(names)}" if names else ""
        lines.append(f"  {source} --> {dest}{label}")
    lines += [f"  {s.value} --> [*]" for s in Status if s in TERMINAL_STATUSES]
    lines.append(f"  note right of {Status.FINISHED.value}")
    lines += [f"    {line}" for line in diagram.legend]
    lines.append("  end note")
    return "\n".join(lines) + "\n"


def text_width(text: str, size: float) -> float:
    """How wide ``text`` is drawn in ``FONT`` at ``size`` points, without kerning (which only
    narrows it); a character outside printable ASCII counts as a full em."""
    units = sum(FONT_ADVANCES[ord(c) - 32] if " " <= c <= "~" else FONT_UNITS_PER_EM for c in text)
    return units * size / FONT_UNITS_PER_EM


def legend_table(lines: list[str]) -> str:
    """The legend as an HTML-like table whose cells are at least as wide as ``text_width``
    says: Graphviz sizes a cell to the wider of that and its own measure, where a note's
    ``\\l`` lines overflowed their box as soon as the viewer's font was not the measured one."""
    width = math.ceil(max(text_width(line, LEGEND_FONTSIZE) for line in lines))
    width += 2 * LEGEND_PADDING
    rows = "".join(
        f'<TR><TD ALIGN="LEFT" WIDTH="{width}">{html.escape(line, quote=False)}</TD></TR>'
        for line in lines
    )
    table = f'BORDER="1" CELLBORDER="0" CELLSPACING="0" CELLPADDING="{LEGEND_PADDING}"'
    return f"<<TABLE {table}>{rows}</TABLE>>"


def _node(status: Status) -> str:
    extra = ", peripheries=2" if status in TERMINAL_STATUSES else ""
    return f'"{status.value}" [label="{status.value}"{extra}];'


def _untouched_box(diagram: Diagram) -> list[str]:
    """The untouched statuses stacked in a dashed box, not spread along the top rank; the
    invisible edges only stack them and are no status change."""
    untouched = diagram.untouched()
    if not untouched:
        return []
    lines = [
        "  subgraph cluster_untouched {",
        f'    label="{diagram.untouched_label}"; fontsize=10; style="rounded,dashed";'
        " color=gray50;",
        *(f"    {_node(s)}" for s in untouched),
    ]
    if len(untouched) > 1:
        chain = " -> ".join(f'"{s.value}"' for s in untouched)
        lines.append(f"    {chain} [style=invis];")
    return [*lines, "  }"]


def render_dot(diagram: Diagram) -> str:
    """``diagram`` in Graphviz DOT (top to bottom, so it fits a page's width)."""
    untouched = diagram.untouched()
    lines = [
        f"digraph {diagram.name} {{",
        "  rankdir=TB; nodesep=0.5; ranksep=0.6;",
        f'  graph [fontname="{FONT}", label="{diagram.title}", labelloc=t, fontsize=14];',
        f'  node [shape=box, style=rounded, fontname="{FONT}"];',
        f'  edge [fontname="{FONT}", fontsize=10];',
        f'  __start [shape=point]; __start -> "running" [label="{ENTRY_LABEL}", style=dotted];',
        *(f"  {_node(s)}" for s in Status if s not in untouched),
        *_untouched_box(diagram),
    ]
    for (source, dest), names in diagram.edges.items():
        joined = "\\n".join(names)
        label = f'label="{joined}", ' if names else ""
        lines.append(f'  "{source}" -> "{dest}" [{label}{diagram.edge_style}];')
    legend = legend_table(diagram.legend)
    lines.append(f"  legend [shape=plain, fontsize={LEGEND_FONTSIZE}, label={legend}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
