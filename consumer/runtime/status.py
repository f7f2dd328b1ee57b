"""What a worker tells the outside about itself: the probes, Prometheus, systemd, totals.

The loop and the ownership part say what happened ("took these partitions", "lost the
lease", "Redis failed"); this part turns each into the role the probes report, the gauges
and counters Prometheus scrapes, and systemd's READY/STATUS/STOPPING lines. Every role
change and every gauge the worker sets is one method here, so a new metric or a new state
touches this module alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from consumer.runtime.batch import BatchResult
from consumer.runtime.health import HealthState, Role
from consumer.runtime.metrics import Metrics
from consumer.runtime.systemd import Notifier
from consumer.runtime.wording import counted
from store import SCHEMA_VERSION
from store.backend import Store
from store.errors import LeaseLost, Repartitioned
from store.partitions import PartitionLease

BatchObserver = Callable[[BatchResult, float], None]
"""Called after each committed batch with its result and the seconds it took."""


class Totals:
    """Running counts over the worker's lifetime, read from its Prometheus metrics.

    The metrics are the one place anything is counted; this is a view with plain names
    for logs, tests and the bench. One count is its own: ``snapshots_committed``, what
    this worker's batches queued, so the stop line tells them from rows others left in a
    shared outbox.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics
        self.snapshots_committed = 0

    def committed(self, result: BatchResult) -> None:
        """Count what a batch queued for publishing."""
        self.snapshots_committed += len(result.snapshots)

    def stop_line(self) -> str:
        """``8 entries, 8 applied, 0 rejected, 6 snapshots published`` and, when the relay
        also published rows it found in the outbox (an earlier run's, an admin change's,
        another label's), how many of those."""
        published = self.snapshots_published
        own = min(published, self.snapshots_committed)
        line = (
            f"{counted(self.entries, 'entry')}, {self.applied} applied, {self.rejected}"
            f" rejected, {counted(own, 'snapshot')} published"
        )
        if published > own:
            line += f", and {published - own} more found in the outbox"
        return line

    @property
    def entries(self) -> int:
        return self._m.total(self._m.consumed)

    @property
    def read(self) -> int:
        """Entries read: applied or rejected here, or skipped (another partition's, or
        applied before)."""
        return self.entries + self._m.total(self._m.skipped)

    @property
    def applied(self) -> int:
        return self._m.total(self._m.applied)

    @property
    def rejected(self) -> int:
        return self._m.total(self._m.rejected)

    @property
    def snapshots_published(self) -> int:
        return self._m.total(self._m.published)

    @property
    def batches(self) -> int:
        return self._m.batches()

    @property
    def reconnects(self) -> int:
        return self._m.total(self._m.reconnects)

    @property
    def busy_retries(self) -> int:
        return self._m.total(self._m.busy_retries)


class WorkerStatus:
    """The probes' state, the metrics, systemd's notifications and the totals of one
    worker, kept in step."""

    def __init__(
        self,
        label: str,
        metrics: Metrics,
        health: HealthState,
        notifier: Notifier,
        observers: list[BatchObserver],
        schema_every_s: float,
    ) -> None:
        self.label = label
        self.metrics = metrics
        self.health = health
        self.notifier = notifier
        self.totals = Totals(metrics)
        self.observers = [metrics.observe_batch, *observers]
        """Called after each committed batch, the metrics first: they are the counts."""
        self._schema_every_s = schema_every_s
        self._looked_at_schema = float("-inf")
        health.listeners.append(lambda _: notifier.watchdog())

    @property
    def beat_every_s(self) -> float:
        """The longest a wait may go without a beat: a quarter of systemd's watchdog (so its
        pings, due at a quarter too, are never more than half of it apart), or 1 s."""
        return min(1.0, self.notifier.watchdog_interval_s or 1.0)

    # roles -----------------------------------------------------------------------------

    def started(self) -> None:
        self.metrics.up.set(1)

    def standing_by(self, holder: PartitionLease) -> None:
        """Another live worker holds what this one waits for."""
        self.health.role = Role.STANDBY
        self.health.holding(holder.describe(), holder.expires_at_ms)
        self.notifier.ready(f"standby: label {self.label!r} is held by {holder.holder}")

    def active(self, holder: str, expires_at_ms: int, held: str) -> None:
        """Partitions were taken (``held``: which, as ``0,3 of 8``)."""
        self.health.holding(holder, expires_at_ms)
        self.notifier.ready(f"active: label {self.label!r}, partitions {held}")

    def holding(self, partitions: int) -> None:
        """What this worker holds changed: ``partitions`` of them now (0: standing by)."""
        self.health.role = Role.ACTIVE if partitions else Role.STANDBY
        self.metrics.partitions_held.set(partitions)
        self.metrics.lease_held.set(1 if partitions else 0)
        self._lag_unknown()

    def lost(self, error: LeaseLost) -> None:
        """The fence failed: nothing held is this worker's any more. A re-partition is
        planned (a rebalance); anything else is a lost lease."""
        if isinstance(error, Repartitioned):
            self.metrics.rebalances.labels("repartitioned").inc()
        else:
            self.metrics.lease_lost.inc()
        self.holding(0)

    def took(self, taken: int, planned: int, from_others: int) -> None:
        """``taken`` partitions taken: ``planned`` of them free or released (the rest from
        a holder that neither released nor renewed them), ``from_others`` last held by
        another worker, released or not."""
        self.metrics.rebalances.labels("taken").inc(planned)
        self.metrics.rebalances.labels("taken_over").inc(taken - planned)
        self.metrics.lease_takeovers.inc(from_others)

    def released(self, count: int) -> None:
        """Extra partitions given up at a batch boundary (a fair share shrank)."""
        self.metrics.rebalances.labels("released").inc(count)

    def stopping(self) -> None:
        """A stop was asked for (a signal): the probes and systemd hear it at once."""
        self.health.role = Role.STOPPING
        self.notifier.stopping()

    def failed(self, error: Exception) -> None:
        """Stopped consuming on an error that needs an operator; still up, holding nothing
        (``let_go`` said so as the partitions were given up)."""
        self.health.role = Role.FAILED
        self._lag_unknown()
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        self.notifier.status(f"failed: {first_line}"[:200])

    def ending(self) -> None:
        """The loop ended, whatever the reason (a signal, the end of ``--drain``, an error):
        systemd hears STOPPING=1 on every way out."""
        self.health.role = Role.STOPPING
        self.notifier.stopping()

    def let_go(self) -> None:
        """Every partition is being given up (stopping, or a take that failed half-way)."""
        self.metrics.lease_held.set(0)
        self.metrics.partitions_held.set(0)
        self.health.holder = self.health.holder_until_ms = None

    def exited(self) -> None:
        self.metrics.up.set(0)

    # what the loop reports -------------------------------------------------------------

    def committed(self, result: BatchResult, seconds: float) -> None:
        """Tell the observers about a batch."""
        self.totals.committed(result)
        for observer in self.observers:
            observer(result, seconds)

    def published(self, count: int) -> None:
        if count:
            self.metrics.published.inc(count)

    def skipped_others(self, count: int) -> None:
        """Entries of partitions this worker does not hold, read for their ids alone."""
        if count:
            self.metrics.skipped.labels("other_partition").inc(count)

    def progressed(self, lag_entries: int, lag_seconds: float) -> None:
        """The monitor measured the lag: the probes and systemd's status line show it."""
        self.health.lag_entries, self.health.lag_seconds = lag_entries, lag_seconds
        self.notifier.status(
            f"active: label {self.label!r}, lag {counted(lag_entries, 'entry')}"
            f" ({lag_seconds:.1f}s)"
        )

    def _lag_unknown(self) -> None:
        """The worker cannot read now: no lag figure, on /metrics or in the probes' body."""
        self.metrics.lag_unknown()
        self.health.lag_entries = self.health.lag_seconds = None

    def lease_until(self, expires_at_ms: int) -> None:
        """The held leases were renewed to ``expires_at_ms`` (the probes show it)."""
        self.health.holder_until_ms = expires_at_ms

    def redis_failed(self, error: Exception) -> None:
        self.metrics.reconnects.inc()
        self._lag_unknown()
        self.health.failing("redis", error)
        self.notifier.status(f"waiting for redis: {error}")

    def store_failed(self, error: Exception) -> None:
        self.metrics.store_reconnects.inc()
        self._lag_unknown()
        self.health.failing("store", error)
        self.notifier.status(f"waiting for the store: {error}")

    def store_busy(self) -> None:
        self.metrics.busy_retries.inc()

    def look_at_schema(self, db: Store) -> None:
        """Readiness fails while the store's schema is not the one this worker runs on (a
        newer release migrated it, say); looked at once per progress interval."""
        now = time.monotonic()
        if now - self._looked_at_schema < self._schema_every_s:
            return
        self._looked_at_schema = now
        found = db.schema_version()
        if found == SCHEMA_VERSION:
            self.health.reached("schema")
        else:
            self.health.failing(
                "schema",
                f"the store's schema is version {found}, this worker runs on {SCHEMA_VERSION}"
                " (healthfsm migrate, or run the release that matches it)",
            )
