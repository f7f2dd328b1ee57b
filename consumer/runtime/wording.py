"""Counts in messages: ``1 entry``, ``2 entries``, never ``1 entries``."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun`` in agreement: ``plural`` when given, else ``noun`` + ``s`` (a
    noun ending in ``y`` after a consonant takes ``ies``)."""
    if n == 1:
        return f"{n} {noun}"
    if plural is None:
        consonant_y = noun.endswith("y") and noun[-2:-1] not in "aeiou"
        plural = noun[:-1] + "ies" if consonant_y else noun + "s"
    return f"{n} {plural}"
