"""The closed vocabularies of the domain, as ``str`` enums so they compare equal to wire strings."""

from enum import StrEnum


class Status(StrEnum):
    """The runtime status of one game's engine, as Game Master records it."""

    STARTING = "starting"
    RUNNING = "running"
    GENERATION_IN_PROGRESS = "generation_in_progress"
    GENERATION_FAILED = "generation_failed"
    ENGINE_UNREACHABLE = "engine_unreachable"
    STOPPED = "stopped"
    FINISHED = "finished"


class EventType(StrEnum):
    """The ``event_type`` values Runtime Manager writes to ``runtime:health_events``."""

    CONTAINER_STARTED = "container_started"
    PROBE_RECOVERED = "probe_recovered"
    PROBE_FAILED = "probe_failed"
    INSPECT_UNHEALTHY = "inspect_unhealthy"
    CONTAINER_EXITED = "container_exited"
    CONTAINER_OOM = "container_oom"
    CONTAINER_DISAPPEARED = "container_disappeared"


class Summary(StrEnum):
    """The engine-health summary written to ``runtime_records.engine_health``."""

    HEALTHY = "healthy"
    PROBE_FAILED = "probe_failed"
    INSPECT_UNHEALTHY = "inspect_unhealthy"
    EXITED = "exited"
    OOM = "oom"
    DISAPPEARED = "disappeared"


STATUS_BY_VALUE: dict[str, Status] = {s.value: s for s in Status}
"""Wire string to ``Status``; a dict lookup is several times cheaper than ``Status(value)``."""

EVENT_TYPE_BY_VALUE: dict[str, EventType] = {e.value: e for e in EventType}
"""Wire string to ``EventType``; unknown strings are simply absent."""
