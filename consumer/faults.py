"""Fault-injection points, so crash tests stop the worker at an exact step instead of sleeping.

Disarmed (the default) a point costs one dict lookup per batch. Tests arm a point in-process
with ``arm()``; the CLI arms one from ``HEALTHFSM_INJECT_FAULT=POINT[:N][:exit]`` so a real
subprocess can be killed at the N-th hit with ``os._exit`` (no cleanup, like ``kill -9``).
"""

from __future__ import annotations

import os
from enum import StrEnum


class FaultPoint(StrEnum):
    """Where in a batch a fault can be injected."""

    BEFORE_COMMIT = "before_commit"
    """Inside the batch transaction, after all writes, before COMMIT."""
    AFTER_COMMIT = "after_commit"
    """The batch is committed; its snapshots are in the outbox, none published."""
    AFTER_PUBLISH = "after_publish"
    """Snapshots are on the stream; the outbox rows are not deleted yet."""


class InjectedFault(BaseException):
    """Raised at an armed point; a BaseException so no ``except Exception`` swallows it."""


_armed: dict[FaultPoint, tuple[int, bool]] = {}
"""Point -> (hits left before it fires, whether it kills the process)."""


def arm(point: FaultPoint, after: int = 1, *, hard_exit: bool = False) -> None:
    """Fire at the ``after``-th time the point is reached."""
    _armed[point] = (after, hard_exit)


def disarm_all() -> None:
    """Remove every armed fault."""
    _armed.clear()


def arm_from_spec(spec: str) -> None:
    """Parse ``POINT[:N][:exit]`` as given in ``HEALTHFSM_INJECT_FAULT``."""
    parts = spec.split(":")
    point = FaultPoint(parts[0])
    after = int(parts[1]) if len(parts) > 1 and parts[1] else 1
    arm(point, after, hard_exit=len(parts) > 2 and parts[2] == "exit")


def hit(point: FaultPoint) -> None:
    """Mark that ``point`` was reached; fire if it is armed and its count is used up."""
    if not _armed:
        return
    armed = _armed.get(point)
    if armed is None:
        return
    left, hard_exit = armed
    if left > 1:
        _armed[point] = (left - 1, hard_exit)
        return
    del _armed[point]
    if hard_exit:
        os._exit(137)
    raise InjectedFault(point.value)
