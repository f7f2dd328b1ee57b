"""Writing the diagram files that reviewers read: Mermaid always, SVG when ``dot`` exists."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from statemachine.diagram import render_dot, render_mermaid

MERMAID_FILE = "runtime_status.mmd"
SVG_FILE = "runtime_status.svg"


def write_diagrams(out: Path) -> list[Path]:
    """Write the diagram files into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    mermaid = out / MERMAID_FILE
    mermaid.write_text(render_mermaid(), encoding="utf-8")
    written = [mermaid]
    dot = shutil.which("dot")
    if dot:
        svg = subprocess.run(
            [dot, "-Tsvg"], input=render_dot().encode(), capture_output=True, check=True
        ).stdout
        (out / SVG_FILE).write_bytes(svg)
        written.append(out / SVG_FILE)
    return written
