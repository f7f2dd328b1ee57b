"""What the machine did in production: the store's edge counts over a window, for
``healthfsm diagram --traffic`` (drawn or as JSON)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from consumer.runtime.clock import format_ms
from statemachine.edges import ALL_EDGES, KNOWN_EDGES, Edge
from store import traffic
from store.backend import Store

_DURATION = re.compile(r"^([0-9]+)([smhdw])$", re.ASCII)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``90m``, ``12h``, ``7d``, ``2w`` (or ``45s``) in seconds, above zero and at most the
    90 days the store keeps; ``ValueError`` otherwise."""
    found = _DURATION.match(text.strip())
    if found is None:
        raise ValueError(f"{text!r} is not a duration: a whole number and a unit, as 90m or 7d")
    seconds = int(found.group(1)) * _UNIT_S[found.group(2)]
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a duration above zero")
    if seconds * 1000 > traffic.KEEP_MS:
        raise ValueError(f"{text!r} is longer than the 90 days the store keeps; use at most 90d")
    return float(seconds)


@dataclass(frozen=True, slots=True)
class TrafficReport:
    """The counts of a window and the window itself, as stated to the reader."""

    counts: dict[Edge, int]
    since_ms: int | None
    """Where the window starts (the hour holding now - ``--since``); None: every bucket kept."""
    until_ms: int
    first_bucket_ms: int | None
    last_bucket_ms: int | None

    def window(self) -> str:
        """``from 2026-12-01 10:00 to 2026-12-07 11:25 UTC (hour buckets)``, for titles."""
        start = self.since_ms if self.since_ms is not None else self.first_bucket_ms
        if start is None:
            return "(nothing counted in the store yet)"
        return f"from {_minute(start)} to {_minute(self.until_ms)} UTC (hour buckets)"

    def as_json(self) -> dict[str, object]:
        """Every edge of the table with its count (zeros included), the rows the table does
        not know (from another release's machine) apart, and the window."""
        return {
            "window": {
                "since_ms": self.since_ms,
                "until_ms": self.until_ms,
                "first_bucket_ms": self.first_bucket_ms,
                "last_bucket_ms": self.last_bucket_ms,
                "bucket_ms": traffic.BUCKET_MS,
                "kept_ms": traffic.KEEP_MS,
            },
            "edges": [_edge_json(edge, self.counts.get(edge, 0)) for edge in ALL_EDGES],
            "unknown_edges": [
                _edge_json(edge, n)
                for edge, n in sorted(self.counts.items())
                if edge not in KNOWN_EDGES
            ],
        }


def _minute(at_ms: int) -> str:
    return format_ms(at_ms)[:16]


def _edge_json(edge: Edge, count: int) -> dict[str, object]:
    """An edge with its rule, whether it is a CAS event's miss, and its count."""
    return {**edge._asdict(), "rule": edge.rule, "cas_missed": edge.cas_missed, "count": count}


def read_traffic(db: Store, since_s: float | None, now_ms: int) -> TrafficReport:
    """The store's counts from ``since_s`` ago (its hour's start) up to now."""
    since_ms = traffic.bucket_of(now_ms - int(since_s * 1000)) if since_s is not None else None
    found = traffic.read(db.conn, since_ms)
    return TrafficReport(
        found.counts, since_ms, now_ms, found.first_bucket_ms, found.last_bucket_ms
    )
