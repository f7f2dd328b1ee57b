"""How much of untrusted input is ever copied into a message, a log line or a stored row.

An entry's fields come from another service and may be any size. Whatever healthfsm keeps
or prints of them is cut here, so a 10 MB ``game_id`` costs a few hundred bytes of log and
a few KiB of ``dead_letters``, not 10 MB each time.
"""

from __future__ import annotations

SHOWN_CHARS = 200
"""Characters of an id or value quoted in a message or log line."""

DETAIL_CHARS = 1024
"""Characters of a dead letter's ``detail`` (its one-line reason)."""


def shorten(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` cut to ``limit`` characters, with how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text) - limit} more chars)"
