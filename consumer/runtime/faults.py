"""Fault-injection points, so crash tests stop the worker at an exact step instead of sleeping.

Disarmed (the default) a point costs one dict lookup per batch. Tests arm a point in-process
with ``arm()``; the CLI arms one from ``HEALTHFSM_INJECT_FAULT=POINT[:N][:exit|stop|hang]`` so a
real subprocess can be killed at the N-th hit with ``os._exit`` (no cleanup, like
``kill -9``), can SIGSTOP itself there (a VM pause at an exact step; SIGCONT resumes), or can
hang there in the loop's thread alone (a wedged call; the HTTP probes still answer).
"""

from __future__ import annotations

import os
import signal
import time
from enum import StrEnum

from consumer.errors import InjectedFault


class FaultPoint(StrEnum):
    """Where in a batch a fault can be injected."""

    BEFORE_COMMIT = "before_commit"
    """Inside the batch transaction, after all writes, before COMMIT."""
    AFTER_COMMIT = "after_commit"
    """The batch is committed; its snapshots are in the outbox, none published."""
    AFTER_PUBLISH = "after_publish"
    """Snapshots are on the stream; the outbox rows are not deleted yet."""


class Action(StrEnum):
    """What an armed point does when it fires."""

    RAISE = "raise"
    """Raise ``InjectedFault`` (in-process tests)."""
    EXIT = "exit"
    """``os._exit(137)``: no cleanup, like ``kill -9``."""
    STOP = "stop"
    """SIGSTOP this process: paused exactly here until someone sends SIGCONT."""
    HANG = "hang"
    """Block this thread for good while the process's other threads go on: a loop wedged
    inside a call, as liveness probes must see it."""


_armed: dict[FaultPoint, tuple[int, Action]] = {}
"""Point -> (hits left before it fires, what it does then)."""


def arm(point: FaultPoint, after: int = 1, *, action: Action = Action.RAISE) -> None:
    """Fire at the ``after``-th time the point is reached."""
    _armed[point] = (after, action)


def disarm_all() -> None:
    """Remove every armed fault."""
    _armed.clear()


def arm_from_spec(spec: str) -> None:
    """Parse ``POINT[:N][:exit|stop|hang]`` as given in ``HEALTHFSM_INJECT_FAULT``."""
    parts = spec.split(":")
    point = FaultPoint(parts[0])
    after = int(parts[1]) if len(parts) > 1 and parts[1] else 1
    arm(point, after, action=Action(parts[2]) if len(parts) > 2 else Action.RAISE)


def hit(point: FaultPoint) -> None:
    """Mark that ``point`` was reached; fire if it is armed and its count is used up."""
    if not _armed:
        return
    armed = _armed.get(point)
    if armed is None:
        return
    left, action = armed
    if left > 1:
        _armed[point] = (left - 1, action)
        return
    del _armed[point]
    if action is Action.EXIT:
        os._exit(137)
    if action is Action.STOP:
        os.kill(os.getpid(), signal.SIGSTOP)
        return
    if action is Action.HANG:
        while True:
            time.sleep(3600)
    raise InjectedFault(point.value)
