"""Opening the worker's store when its server may not be up yet: waited for, not fatal."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from consumer.runtime.health import HealthState
from consumer.runtime.outage import Outage
from consumer.settings import ConsumerSettings
from store import open_database
from store.backend import Store
from store.errors import StoreUnavailable

log = logging.getLogger(__name__)


def open_when_reachable(
    s: ConsumerSettings,
    stop: threading.Event,
    health: HealthState | None = None,
    say: Callable[[str], None] | None = None,
) -> Store | None:
    """The worker's store; a database server that is not up yet is waited for, not fatal.

    Everything else (a wrong password, a missing or foreign store) fails at once. Returns
    None when ``stop`` is set while waiting; ``--drain`` gives up after ``give_up_after_s``.
    ``say`` tells systemd what it waits for (``STATUS=``).
    """
    delay = s.backoff_initial_s
    outage = Outage(s.give_up_after_s if s.drain else None)
    while not stop.is_set():
        try:
            store = open_database(s.db_path)
        except StoreUnavailable as error:
            if health is not None:
                health.failing("store", error)
                health.beat()
            if say is not None:
                say(f"waiting for the store: {error}")
            wait_s = outage.wait_for("the store", error, delay)
            log.warning("%s; retrying in %.1fs", error, wait_s)
            stop.wait(wait_s)
            delay = min(delay * 2, s.backoff_max_s)
        else:
            if health is not None:
                health.reached("store")
            return store
    log.info("stopped while waiting for the database")
    return None
