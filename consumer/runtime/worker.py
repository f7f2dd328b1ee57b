"""A worker: its parts built in one place, and its lifecycle (start, signals, stop).

``Worker`` builds the three parts with everything they need, and nothing is set on them
afterwards: the loop (``consumer.runtime.loop``: read, apply, publish), ownership
(``consumer.runtime.ownership`` over the keeper: take, stand by, rebalance, let go) and
status (``consumer.runtime.status``: probes, metrics, systemd, totals). A signal only sets
a flag; the loop checks it between batches, so the batch in hand always finishes and
commits.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import FrameType

import redis

from consumer.errors import StreamReset
from consumer.runtime.batch import BatchTarget
from consumer.runtime.clock import wall_clock_ms
from consumer.runtime.cpu import CpuSplit
from consumer.runtime.cursor import Cursor
from consumer.runtime.health import HealthState, liveness_bound_s
from consumer.runtime.holdings import Holdings
from consumer.runtime.http_endpoints import serve
from consumer.runtime.in_flight import InFlight
from consumer.runtime.loop import ConsumeLoop
from consumer.runtime.metrics import Metrics
from consumer.runtime.monitor import Monitor
from consumer.runtime.offset_book import HeldOffsets
from consumer.runtime.ownership import Ownership
from consumer.runtime.partition_keeper import PartitionKeeper
from consumer.runtime.partition_map import PartitionMap
from consumer.runtime.position import PositionWatch
from consumer.runtime.read_ahead import ReadAhead
from consumer.runtime.redis_client import client_for
from consumer.runtime.relay import OutboxRelay
from consumer.runtime.start_offset import refuse_an_unconfirmed_new_label
from consumer.runtime.status import BatchObserver, Totals, WorkerStatus
from consumer.runtime.systemd import Notifier
from consumer.settings import ConsumerSettings
from statemachine import RuntimeMachine, get_machine
from store import outbox
from store.backend import Store

log = logging.getLogger(__name__)

GC_GEN0_THRESHOLD = 50_000
"""Allocations between young-generation collections while the loop runs (CPython: 700).

The loop allocates about ten short-lived objects per event and makes almost no reference
cycles; at the default threshold a collection runs every ~70 events and took ~7% of the
drain time. Cycles are still collected, just in larger, rarer passes.
"""


_gc_lock = threading.Lock()
_gc_users = 0
_gc_saved: tuple[int, int, int] | None = None


@contextlib.contextmanager
def fewer_gc_passes(gen0: int = GC_GEN0_THRESHOLD) -> Iterator[None]:
    """Raise the young-generation GC threshold for the block, then restore it.

    The threshold is process-wide: with several workers in one process (tests, embedding)
    the first one in raises it and the last one out restores it.
    """
    global _gc_users, _gc_saved
    with _gc_lock:
        if _gc_users == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(max(gen0, _gc_saved[0]), *_gc_saved[1:])
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0 and _gc_saved is not None:
                gc.set_threshold(*_gc_saved)


REDIS_LOOK_S = 2.0
"""How often a failed worker checks that Redis answers, so its probes' body stays true."""

__all__ = ["Totals", "Worker", "health_for", "metrics_for", "wall_clock_ms"]


def health_for(settings: ConsumerSettings) -> HealthState:
    """The probes' state for a worker with these settings (its liveness bound)."""
    bound = liveness_bound_s(settings.block_ms_read, settings.lease_ttl_s, settings.backoff_max_s)
    return HealthState(bound)


def metrics_for(settings: ConsumerSettings, health: HealthState) -> Metrics:
    """The metrics of a worker with these settings: readiness read from ``health`` at
    scrape time, and what it consumes as ``healthfsm_worker_info``."""
    identity = {
        "label": settings.label,
        "stream": settings.stream,
        "lobby_stream": settings.lobby_stream,
    }
    return Metrics(health=health, identity=identity)


class Worker:
    """Consumes ``runtime:health_events`` into the store and publishes snapshots."""

    def __init__(
        self,
        settings: ConsumerSettings,
        db: Store,
        *,
        client: redis.Redis | None = None,
        machine: RuntimeMachine | None = None,
        clock: Callable[[], int] = wall_clock_ms,
        metrics: Metrics | None = None,
        health: HealthState | None = None,
        notifier: Notifier | None = None,
        observers: Sequence[BatchObserver] = (),
        metrics_port: int | None = None,
    ) -> None:
        """``metrics_port``: the port the caller already serves the probes on (the CLI
        serves them before the store is open); otherwise ``run`` serves them if the
        settings ask. ``observers`` are called after each committed batch."""
        self.settings = settings
        self.db = db
        self.client = client = client or client_for(settings)
        self.machine = machine = machine or get_machine()
        self.clock = clock
        self.metrics_port = metrics_port
        self.health = health = health or health_for(settings)
        self.metrics = metrics = metrics or metrics_for(settings, health)
        self.notifier = notifier = notifier or Notifier()
        self.status = status = WorkerStatus(
            settings.label, metrics, health, notifier, list(observers), settings.progress_interval_s
        )
        self.totals: Totals = status.totals
        self._stop = stop = threading.Event()
        self._signals = 0
        self._closed = False
        # on the wall clock, whatever ``clock`` says: other machines compare its rows
        self.parts = keeper = PartitionKeeper(db, settings.label, settings.lease_ttl_s)
        holdings = Holdings(keeper, settings.lobby_stream, outbox.publisher_id(db.conn))
        self.holdings = holdings
        self.held_offsets = offsets = HeldOffsets(settings.label, holdings.owns, holdings.one_whole)
        self.relay = relay = OutboxRelay(
            db, client, settings.lobby_stream, fence=holdings.fence_for
        )
        self.read_ahead = read_ahead = ReadAhead(client)
        in_flight = InFlight(read_ahead, relay)
        self.cursor = cursor = Cursor()
        self.cache = db.record_loader()
        self.ownership = ownership = Ownership(
            settings,
            db,
            client,
            holdings,
            offsets,
            relay,
            read_ahead,
            in_flight,
            status,
            cursor,
            stop,
        )
        self.monitor = monitor = Monitor(
            client, db, settings, metrics, self.totals, clock, offsets, holdings.describe
        )
        self.position = position = PositionWatch(
            client, settings, metrics, db, keeper.fenced, clock, offsets
        )
        target = BatchTarget(
            db,
            machine,
            settings.stream,
            settings.label,
            cache=self.cache,
            fence=keeper.fence,
            save_offset=offsets.save_batch,
        )
        self.loop = ConsumeLoop(
            settings,
            db,
            client,
            target,
            clock,
            ownership,
            offsets,
            relay,
            read_ahead,
            in_flight,
            monitor,
            position,
            status,
            cursor,
            stop,
        )
        self._in_flight = in_flight

    # lifecycle -------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Finish the batch in hand, publish the outbox, then return from ``run()``."""
        self._stop.set()

    def handle_signal(self, signum: int, frame: FrameType | None) -> None:
        """First SIGINT/SIGTERM: stop after this batch. Second: stop now (the batch rolls back)."""
        self._signals += 1
        if self._signals > 1:
            raise KeyboardInterrupt
        log.info("received %s: stopping after the batch in hand", signal.Signals(signum).name)
        self.status.stopping()
        self.request_stop()

    def _stay_failed(self, error: StreamReset) -> None:
        """A reset needs an operator, and a restart would only meet it again (a unit's
        restart loop hid it behind "no active worker"): give every partition up (so
        ``offsets set`` may move the offset), say what happened on ``/readyz``,
        ``/metrics`` and to systemd, and wait for a stop, still beating (the watchdog and
        ``/healthz``: nothing is wedged). The stop then exits 1 with the remedy."""
        self.ownership.release_on_stop()
        self.status.failed(error)
        log.error("staying up in a failed state until stopped (SIGTERM): %s", error)
        looked = float("-inf")
        while not self._stop.is_set():
            self._stop.wait(self.status.beat_every_s)
            self.health.beat()
            if time.monotonic() - looked >= REDIS_LOOK_S:  # what the probes say stays true
                looked = time.monotonic()
                try:
                    self.client.ping()
                    self.health.reached("redis")
                except (redis.ConnectionError, redis.TimeoutError) as away:
                    self.health.failing("redis", away)

    def install_signal_handlers(self) -> None:
        """Route SIGINT and SIGTERM to ``handle_signal`` (main thread only)."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self.handle_signal)

    def close(self) -> None:
        """Release the Redis connection; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.notifier.close()
        self._in_flight.drop(unsettled=True)
        self.client.close()

    @property
    def offset(self) -> str:
        """The id of the last entry whose effects are committed."""
        return self.cursor.offset

    @property
    def holding(self) -> bool:
        """Whether this worker believes it may consume: it holds a partition."""
        return self.ownership.holding

    @property
    def cpu(self) -> CpuSplit:
        """The CPU the loop spent applying batches, apart from the rest (the bench)."""
        return self.loop.cpu

    @property
    def map(self) -> PartitionMap:
        """How game ids map to the label's partitions as this worker holds them."""
        return self.holdings.map

    def run(self) -> None:
        """Consume until stopped (or, with ``drain``, until caught up); failures raise.

        The loop runs only while this worker holds partitions of its label; without any, it
        stands by (``--drain`` raises ``LeaseHeld`` instead of waiting).
        """
        s = self.settings
        refuse_an_unconfirmed_new_label(self.db, s)  # before a word is logged: one line, exit 1
        if s.metrics_port is not None and self.metrics_port is None:  # not served by the CLI
            self.metrics_port = serve(
                self.metrics.registry, self.health, s.metrics_port, s.metrics_host
            )
        self.status.started()
        try:
            with fewer_gc_passes(), self.db.background():
                try:
                    self.loop.run()
                except StreamReset as error:
                    self.health.fatal(error)
                    if not s.drain:
                        self._stay_failed(error)
                    raise
                except BaseException as error:
                    self.health.fatal(error)
                    raise
                finally:
                    self.status.ending()
                    self.ownership.release_on_stop()  # first: a standby takes over at once
                    self.loop.target.rejections.say_all()
        finally:
            self.status.exited()
            self.close()
        log.info("stopped at %s: %s", self.cursor.offset, self.totals.stop_line())
