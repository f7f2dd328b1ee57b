"""The committed diagrams can never drift from the machine, and say what the machine does."""

from __future__ import annotations

import html
import re
import shutil
import struct
from pathlib import Path

import pytest

from consumer.operations.diagrams import (
    README_FILE,
    SVG_SOURCE_MARK,
    dot_digest,
    mermaid_file,
    render_readme,
    svg_file,
    write_diagrams,
)
from statemachine import get_machine
from statemachine.diagram import (
    ADMIN,
    DIAGRAMS,
    FONT,
    FONT_ADVANCES,
    FONT_UNITS_PER_EM,
    LEGEND_PADDING,
    STATUS,
    Diagram,
    render_dot,
    render_mermaid,
    text_width,
)
from statemachine.machine import ADMIN_TRIGGER

DIAGRAMS_DIR = Path(__file__).resolve().parent.parent / "diagrams"
EDGE = re.compile(r"^\s*(\w+) --> (\w+)(?:: (.+))?$")
LINK = re.compile(r"\]\(([^)]+)\)")
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
"""Where Debian's fonts-dejavu-core puts the font the SVGs name."""


def machine_edges(trigger_is_admin: bool) -> set[tuple[str, str, str]]:
    """The status changes the machine makes, found by firing it (see test_definition)."""
    from tests.test_definition import live_edges

    return {
        (src.value, dst.value, name)
        for src, dst, name in live_edges(get_machine())
        if (name == ADMIN_TRIGGER) == trigger_is_admin
    }


def mermaid_edges(text: str) -> set[tuple[str, str, str]]:
    """(source, dest, trigger) of every drawn edge between statuses; unlabelled is admin."""
    edges = set()
    for line in text.splitlines():
        match = EDGE.match(line)
        if match:
            for label in (match.group(3) or ADMIN_TRIGGER).split(" | "):
                edges.add((match.group(1), match.group(2), label.split(" [")[0]))
    return edges


@pytest.mark.parametrize("diagram", DIAGRAMS, ids=lambda d: d.name)
def test_committed_mermaid_matches_the_code(diagram: Diagram) -> None:
    committed = (DIAGRAMS_DIR / mermaid_file(diagram)).read_text(encoding="utf-8")
    assert committed == render_mermaid(diagram), "run: healthfsm diagram"


def test_committed_readme_matches_the_code() -> None:
    """It embeds both Mermaid sources and links the committed SVGs."""
    committed = (DIAGRAMS_DIR / README_FILE).read_text(encoding="utf-8")
    assert committed == render_readme(svg=True), "run: healthfsm diagram (with Graphviz)"


@pytest.mark.parametrize("diagram", DIAGRAMS, ids=lambda d: d.name)
def test_committed_svg_was_drawn_from_the_current_source(diagram: Diagram) -> None:
    svg = (DIAGRAMS_DIR / svg_file(diagram)).read_text(encoding="utf-8")
    assert SVG_SOURCE_MARK.format(digest=dot_digest(diagram)) in svg, "run: healthfsm diagram"


@pytest.mark.parametrize("diagram", DIAGRAMS, ids=lambda d: d.name)
def test_every_status_is_drawn_with_the_entry_and_the_end(diagram: Diagram) -> None:
    text = render_mermaid(diagram)
    states = set(re.findall(r'^\s*state "(\w+)" as \w+$', text, re.M))
    assert states == {s.lower() for s in get_machine().machine.states}
    assert "[*] --> running: runtime add" in text and "finished --> [*]" in text
    assert not re.search(r"^\s*(\w+) --> \1\b", text, re.M)  # no self-loops
    assert "classDef" not in text
    assert ": " not in diagram.title  # Mermaid's front matter is YAML


def test_status_diagram_draws_the_health_events_and_nothing_else() -> None:
    text = render_mermaid(STATUS)
    assert mermaid_edges(text) == machine_edges(trigger_is_admin=False)
    assert "container_exited [cas]" in text
    assert "admin" not in text.split("note right of", 1)[0]


def test_admin_diagram_draws_every_pair_set_status_allows() -> None:
    text = render_mermaid(ADMIN)
    assert mermaid_edges(text) == machine_edges(trigger_is_admin=True)
    drawn = [match for line in text.splitlines() if (match := EDGE.match(line))]
    assert len(drawn) == 14 and not any(match.group(3) for match in drawn)  # one kind


def test_the_legends_say_what_is_not_drawn() -> None:
    status = render_mermaid(STATUS).split("note right of", 1)[1]
    for name in ("container_started", "probe_failed", "inspect_unhealthy", "debounce"):
        assert name in status
    assert "runtime_admin" in status and "set-status" in status
    admin = render_mermaid(ADMIN).split("note right of", 1)[1]
    for name in ("set-status", "admin_pair", "admin_cas", "runtime_status"):
        assert name in admin


@pytest.mark.parametrize("diagram", DIAGRAMS, ids=lambda d: d.name)
def test_the_legend_is_a_table_sized_for_the_font_the_svg_names(diagram: Diagram) -> None:
    """A table node: each cell at least as wide as its widest line in ``FONT``, whatever
    Graphviz measured. A note's ``\\l`` lines overflowed their box in another font."""
    source = render_dot(diagram)
    legend = re.search(
        r"^  legend \[shape=plain, fontsize=10, label=<<TABLE (.+)>>\];$", source, re.M
    )
    assert legend is not None, "the legend is not an HTML-like table node"
    cells = re.findall(r'<TD ALIGN="LEFT" WIDTH="(\d+)">(.*?)</TD>', legend.group(1))
    assert [html.unescape(text) for _, text in cells] == diagram.legend
    padding = 2 * LEGEND_PADDING
    for width, text in cells:
        assert int(width) - padding >= text_width(html.unescape(text), 10), text
    assert source.count(f'fontname="{FONT}"') == 3  # graph, nodes, edges: nothing else named


def _u16(data: bytes, at: int) -> int:
    return int(struct.unpack_from(">H", data, at)[0])


def _glyph_advances(font: Path) -> tuple[dict[str, int], int]:
    """Advance width of each printable ASCII character, and the font's units per em, read
    from its TrueType tables (``cmap`` format 4, ``hhea``, ``hmtx``)."""
    data = font.read_bytes()
    tables = {
        data[12 + 16 * i : 16 + 16 * i].decode(): int.from_bytes(data[20 + 16 * i : 24 + 16 * i])
        for i in range(_u16(data, 4))
    }
    cmap = tables["cmap"]
    for i in range(_u16(data, cmap + 2)):
        platform, encoding, offset = struct.unpack_from(">HHI", data, cmap + 4 + 8 * i)
        if (platform, encoding) == (3, 1):  # Windows Unicode BMP: format 4
            sub = cmap + offset
    count = _u16(data, sub + 6) // 2
    ends = sub + 14
    starts = ends + 2 * count + 2
    deltas = starts + 2 * count
    ranges = deltas + 2 * count
    metrics = _u16(data, tables["hhea"] + 34)
    advances = {}
    for code in range(32, 127):
        seg = next(s for s in range(count) if _u16(data, ends + 2 * s) >= code)
        glyph = code
        if _u16(data, ranges + 2 * seg):
            at = ranges + 2 * seg + _u16(data, ranges + 2 * seg)
            glyph = _u16(data, at + 2 * (code - _u16(data, starts + 2 * seg)))
        glyph = (glyph + _u16(data, deltas + 2 * seg)) & 0xFFFF
        advances[chr(code)] = _u16(data, tables["hmtx"] + 4 * min(glyph, metrics - 1))
    return advances, _u16(data, tables["head"] + 18)


@pytest.mark.skipif(not DEJAVU.exists(), reason="fonts-dejavu-core is not installed")
def test_the_advance_widths_are_the_installed_fonts() -> None:
    advances, units = _glyph_advances(DEJAVU)
    assert units == FONT_UNITS_PER_EM
    assert tuple(advances[chr(code)] for code in range(32, 127)) == FONT_ADVANCES


@pytest.mark.skipif(not DEJAVU.exists(), reason="fonts-dejavu-core is not installed")
@pytest.mark.parametrize("diagram", DIAGRAMS, ids=lambda d: d.name)
def test_the_committed_legend_fits_its_box_in_the_font_it_names(diagram: Diagram) -> None:
    """Measured with the font's own advance widths: each legend line ends inside the box."""
    svg = (DIAGRAMS_DIR / svg_file(diagram)).read_text(encoding="utf-8")
    node = svg.split("<title>legend</title>", 1)[1].split("</g>", 1)[0]
    right = max(float(x) for x in re.findall(r"(-?[\d.]+),-?[\d.]+", node))
    texts = re.findall(
        r'<text text-anchor="start" x="([\d.]+)" y="[^"]+" font-family="([^"]+)"'
        r' font-size="([\d.]+)">([^<]*)</text>',
        node,
    )
    assert len(texts) == len(diagram.legend)
    advances, units = _glyph_advances(DEJAVU)
    for x, family, size, text in texts:
        assert family == FONT
        line = html.unescape(text)
        width = sum(advances[c] for c in line) * float(size) / units
        assert float(x) + width <= right, line


def test_write_diagrams_without_graphviz_links_only_what_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ``dot``: the README must not link an SVG, not even a stale one left in the folder."""
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    out = tmp_path / "out"
    out.mkdir()
    (out / svg_file(STATUS)).write_text("<svg>stale</svg>")
    written = write_diagrams(out)
    assert {p.name for p in written} == {mermaid_file(d) for d in DIAGRAMS} | {README_FILE}
    readme = (out / README_FILE).read_text(encoding="utf-8")
    targets = [t for t in LINK.findall(readme) if not t.startswith(("#", "http"))]
    assert targets and all((out / t).exists() for t in targets), targets
    assert ".svg" not in readme and "dot" in readme
    for diagram in DIAGRAMS:
        assert (out / mermaid_file(diagram)).read_text() == render_mermaid(diagram)


def test_write_diagrams_with_graphviz_links_every_svg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in ``dot`` that echoes an SVG: each diagram's SVG carries its source mark."""
    fake = tmp_path / "dot"
    fake.write_text("#!/bin/sh\ncat >/dev/null\necho '<svg></svg>'\n")
    fake.chmod(0o755)
    monkeypatch.setattr(shutil, "which", lambda _name: str(fake))
    out = tmp_path / "out"
    written = write_diagrams(out)
    readme = (out / README_FILE).read_text(encoding="utf-8")
    assert readme == render_readme(svg=True)
    targets = [t for t in LINK.findall(readme) if not t.startswith(("#", "http"))]
    assert {svg_file(d) for d in DIAGRAMS} <= set(targets)
    assert all((out / t).exists() and out / t in written for t in targets), targets
    for diagram in DIAGRAMS:
        svg = (out / svg_file(diagram)).read_text()
        assert SVG_SOURCE_MARK.format(digest=dot_digest(diagram)) in svg
