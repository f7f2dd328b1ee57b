"""``healthfsm consume``: the worker, with its probes served before the store opens."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer

from consumer.cli.common import (
    LabelOption,
    LobbyOption,
    StreamOption,
    settings_for,
)
from consumer.cli.options import DEFAULT_DB, DbOption, RedisOptions, setting, with_redis_options
from consumer.runtime import faults, logs
from consumer.runtime.health import HealthState
from consumer.runtime.systemd import Notifier
from consumer.settings import ConsumerSettings, ResetPolicy, default
from store.backend import Store

ENV_INJECT_FAULT = "HEALTHFSM_INJECT_FAULT"
"""Test hook: ``POINT[:N][:exit]`` makes ``consume`` fail at a batch step (see
``consumer.runtime.faults``)."""


ENV_TEST_HOOKS = "HEALTHFSM_TEST_HOOKS"
"""Test-only switch: ``HEALTHFSM_INJECT_FAULT`` is honoured only when this is ``1``."""


def _arm_test_hooks() -> None:
    """Arm ``HEALTHFSM_INJECT_FAULT`` for crash tests, only behind the test-only switch."""
    spec = os.environ.get(ENV_INJECT_FAULT)
    if not spec:
        return
    if os.environ.get(ENV_TEST_HOOKS) != "1":
        raise typer.BadParameter(
            f"{ENV_INJECT_FAULT} is a test hook that crashes the worker on purpose;"
            f" it is honoured only with {ENV_TEST_HOOKS}=1",
            param_hint=ENV_INJECT_FAULT,
        )
    faults.arm_from_spec(spec)
    logging.getLogger("consumer.runtime.faults").warning("test hook armed: %s", spec)


@with_redis_options
def consume(
    redis: RedisOptions,
    stream: StreamOption = default("stream"),
    lobby_stream: LobbyOption = default("lobby_stream"),
    label: LabelOption = default("label"),
    db: DbOption = DEFAULT_DB,
    block_ms: Annotated[int, setting("block_ms", metavar="MS")] = default("block_ms"),
    batch_size: Annotated[int, setting("batch_size", metavar="N")] = default("batch_size"),
    drain: Annotated[bool, setting("drain", metavar="")] = default("drain"),
    give_up_after: Annotated[float, setting("give_up_after_s", metavar="SECONDS")] = default(
        "give_up_after_s"
    ),
    log_level: Annotated[
        str, setting("log_level", metavar="LEVEL", case_sensitive=False)
    ] = default("log_level"),
    log_format: Annotated[str, setting("log_format", metavar="FORMAT")] = default("log_format"),
    metrics_port: Annotated[int | None, setting("metrics_port", metavar="PORT")] = default(
        "metrics_port"
    ),
    metrics_host: Annotated[str, setting("metrics_host", metavar="HOST")] = default("metrics_host"),
    lease_ttl: Annotated[float, setting("lease_ttl_s", metavar="SECONDS")] = default("lease_ttl_s"),
    redis_timeout: Annotated[float | None, setting("redis_timeout_s", metavar="SECONDS")] = default(
        "redis_timeout_s"
    ),
    on_stream_reset: Annotated[ResetPolicy, setting("on_stream_reset", metavar="stop|rewind")] = (
        default("on_stream_reset")
    ),
    start_from: Annotated[str | None, setting("start_from", metavar="beginning|end|ID")] = default(
        "start_from"
    ),
) -> None:
    """Consume health events into the store and publish runtime snapshots."""
    settings = settings_for(
        db,
        redis,
        stream=stream,
        lobby_stream=lobby_stream,
        label=label,
        block_ms=block_ms,
        batch_size=batch_size,
        drain=drain,
        give_up_after_s=give_up_after,
        log_level=log_level,
        log_format=log_format,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        lease_ttl_s=lease_ttl,
        redis_timeout_s=redis_timeout,
        on_stream_reset=on_stream_reset,
        start_from=start_from,
    )
    logs.configure(settings.log_level, settings.log_format)
    _arm_test_hooks()
    _consume(settings)


def _consume(settings: ConsumerSettings) -> None:
    """Serve the probes first (they answer while the store is away), open the store, run."""
    from consumer.runtime.http_endpoints import serve
    from consumer.runtime.worker import Worker, health_for, metrics_for

    health = health_for(settings)
    metrics = metrics_for(settings, health)
    notifier = Notifier()  # the worker's, from the first wait on: STATUS= says what for
    port = None
    if settings.metrics_port is not None:
        port = serve(metrics.registry, health, settings.metrics_port, settings.metrics_host)
    database = _open_unless_stopped(settings, health, notifier)
    if database is None:
        notifier.stopping()  # a signal while the database was unreachable: nothing started
        notifier.close()
        return
    try:
        progress = settings.drain and sys.stderr.isatty()
        observers = []
        if progress:
            from consumer.display import drain_progress

            observers.append(drain_progress(metrics))
        worker = Worker(
            settings,
            database,
            metrics=metrics,
            health=health,
            notifier=notifier,
            observers=observers,
            metrics_port=port,
        )
        worker.install_signal_handlers()
        try:
            worker.run()
        finally:
            if progress:
                sys.stderr.write("\n")  # end the live line before anything else is printed
    finally:
        database.close()


def _open_unless_stopped(
    settings: ConsumerSettings, health: HealthState, notifier: Notifier
) -> Store | None:
    """The worker's store, waiting while its server is unreachable; None if SIGINT or
    SIGTERM came first (the worker installs its own handlers once it exists)."""
    import signal
    import threading

    from consumer.runtime.open_store import open_when_reachable

    stop = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stop.set())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        return open_when_reachable(settings, stop, health, notifier.status)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
