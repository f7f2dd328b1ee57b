"""The committed diagram can never drift from the machine, and says what the machine does."""

from __future__ import annotations

import re
from pathlib import Path

from consumer.cli.diagram_files import MERMAID_FILE, write_diagrams
from statemachine import get_machine
from statemachine.diagram import render_mermaid
from statemachine.machine import ADMIN_TRIGGER

DIAGRAMS = Path(__file__).resolve().parent.parent / "diagrams"
EDGE = re.compile(r"^\s*(\w+) --> (\w+): (.+)$")


def machine_edges() -> set[tuple[str, str, str]]:
    """The status changes the machine makes, found by firing it (see test_definition)."""
    from tests.test_definition import live_edges

    return {(src.value, dst.value, name) for src, dst, name in live_edges(get_machine())}


def mermaid_edges(text: str) -> set[tuple[str, str, str]]:
    edges = set()
    for line in text.splitlines():
        match = EDGE.match(line)
        if match:
            for label in match.group(3).split(" | "):
                name = label.split(" [")[0]
                edges.add(
                    (match.group(1), match.group(2), ADMIN_TRIGGER if name == "admin" else name)
                )
    return edges


def test_committed_mermaid_matches_the_code() -> None:
    committed = (DIAGRAMS / MERMAID_FILE).read_text(encoding="utf-8")
    assert committed == render_mermaid(), "run: healthfsm diagram"


def test_mermaid_states_and_edges_equal_the_machine() -> None:
    text = render_mermaid()
    states = set(re.findall(r'^\s*state "(\w+)" as \w+$', text, re.M))
    assert states == {s.lower() for s in get_machine().machine.states}
    assert {e for e in mermaid_edges(text) if e[0] != "[*]"} == machine_edges()
    assert "[*] --> running: runtime add" in text and "finished --> [*]" in text


def test_guards_admin_edges_and_the_legend() -> None:
    text = render_mermaid()
    assert "container_exited [cas]" in text
    assert "[admin_cas]" not in text  # fourteen operator edges are one kind: "admin"
    assert not re.search(r"^\s*(\w+) --> \1:", text, re.M)  # no self-loops
    legend = text.split("note right of", 1)[1]
    for name in ("container_started", "probe_failed", "inspect_unhealthy", "debounce", "admin"):
        assert name in legend
    assert "classDef" not in text


def test_committed_svg_was_drawn_from_the_current_source() -> None:
    from consumer.cli.diagram_files import SVG_FILE, SVG_SOURCE_MARK, dot_digest

    svg = (DIAGRAMS / SVG_FILE).read_text(encoding="utf-8")
    assert SVG_SOURCE_MARK.format(digest=dot_digest()) in svg, "run: healthfsm diagram"


def test_diagram_command_writes_files(tmp_path: Path) -> None:
    written = write_diagrams(tmp_path / "out")
    assert (tmp_path / "out" / MERMAID_FILE) in written
    assert (tmp_path / "out" / MERMAID_FILE).read_text() == render_mermaid()


def test_diagrams_readme_embeds_the_mermaid() -> None:
    readme = (DIAGRAMS / "README.md").read_text(encoding="utf-8")
    body = readme.split("```mermaid\n", 1)[1].split("```", 1)[0]
    assert body == render_mermaid()
