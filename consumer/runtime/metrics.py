"""Prometheus metrics for ``healthfsm consume --metrics-port``.

Names follow Prometheus conventions: ``healthfsm_`` prefix, ``_total`` counters, base units
(seconds), and only bounded label values (reason codes, statuses, event types; never a
game id). Each worker gets its own registry, so tests and embedded uses never collide.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from consumer.runtime import log_queue
from consumer.runtime.batch import BatchResult
from consumer.runtime.health import READINESS, HealthState

NAN = float("nan")

BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Every metric the worker exports, in one registry.

    ``health`` and ``identity`` (label, stream, lobby_stream) add what is read at scrape
    time: readiness with its reason, as ``/readyz`` answers it at that moment, and the info
    metric the rules join on to tell one deployment from another.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        health: HealthState | None = None,
        identity: Mapping[str, str] | None = None,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        if health is not None:
            r.register(ReadinessCollector(health))
        if identity is not None:
            r.register(IdentityCollector(identity))
        self.up = Gauge(
            "healthfsm_up", "1 while the consumer loop runs, 0 once stopped.", registry=r
        )
        self.consumed = Counter(
            "healthfsm_events_consumed_total",
            "Health events this worker applied or rejected: each entry of the stream is"
            " counted by one worker (entries read and left are events_skipped_total).",
            registry=r,
        )
        self.rejected = Counter(
            "healthfsm_events_rejected_total",
            "Health events kept as dead letters, by reason code.",
            ["reason"],
            registry=r,
        )
        self.transitions = Counter(
            "healthfsm_status_transitions_total",
            "Status changes made by health events, by the event type that made them.",
            ["from_status", "to_status", "trigger"],
            registry=r,
        )
        self.cas_conflicts = Counter(
            "healthfsm_cas_conflicts_total",
            "CAS misses: the status was held elsewhere, only the summary was written; by the"
            " event type and the status that held the record.",
            ["event_type", "status"],
            registry=r,
        )
        self.published = Counter(
            "healthfsm_snapshots_published_total",
            "runtime_snapshot_update entries published.",
            registry=r,
        )
        self.outbox_pending = Gauge(
            "healthfsm_outbox_pending", "Snapshots committed but not yet published.", registry=r
        )
        self.batch_size = Histogram(
            "healthfsm_batch_size",
            "Entries per applied batch.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.batch_duration = Histogram(
            "healthfsm_batch_duration_seconds",
            "Time to apply and commit one batch.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.lag_entries = Gauge(
            "healthfsm_consumer_lag_entries",
            "Entries in the input stream after the committed offset"
            " (exact on Redis 7+, counted up to 10000 before).",
            registry=r,
        )
        self.lag_seconds = Gauge(
            "healthfsm_consumer_lag_seconds",
            "Age of the oldest unread entry (0 when caught up).",
            registry=r,
        )
        self.reconnects = Counter(
            "healthfsm_redis_reconnects_total", "Redis connection failures waited out.", registry=r
        )
        self.gaps = Counter(
            "healthfsm_stream_gaps_total",
            "Times the offset was found older than the stream's first entry.",
            registry=r,
        )
        self.gap_entries = Counter(
            "healthfsm_stream_gap_entries_total",
            "Entries estimated lost to trimming before they were read"
            " (when Redis reports entries-added).",
            registry=r,
        )

        self.stream_resets = Counter(
            "healthfsm_stream_resets_total",
            "Times the stream was found behind the stored offset or recreated.",
            registry=r,
        )
        self.lease_held = Gauge(
            "healthfsm_lease_held",
            "1 while this worker holds its label's lease, or with partitions any of them"
            " (active), 0 while it stands by.",
            registry=r,
        )
        self.lease_takeovers = Counter(
            "healthfsm_lease_takeovers_total",
            "Leases this worker took from another holder (released, expired or dead).",
            registry=r,
        )

        self.applied = Counter(
            "healthfsm_events_applied_total",
            "Health events applied to a record (consumed minus rejected).",
            registry=r,
        )
        self.busy_retries = Counter(
            "healthfsm_store_busy_retries_total",
            "Times the database stayed locked by another writer and the worker waited.",
            registry=r,
        )
        self.store_reconnects = Counter(
            "healthfsm_store_reconnects_total",
            "Times the database server was unreachable and the worker backed off to reconnect.",
            registry=r,
        )
        self.lease_lost = Counter(
            "healthfsm_lease_lost_total",
            "Times this worker found its lease taken over (fenced off) and stood by again.",
            registry=r,
        )
        self.partitions_held = Gauge(
            "healthfsm_partitions_held",
            "Partitions of its label this worker holds (1 while active on a label with one"
            " partition).",
            registry=r,
        )
        self.rebalances = Counter(
            "healthfsm_rebalances_total",
            "Partitions this worker took or gave up while sharing its label with others.",
            ["change"],
            registry=r,
        )
        for change in ("taken", "released"):  # exported at 0 from the start, for rate()
            self.rebalances.labels(change)
        self.partition_lag_entries = Gauge(
            "healthfsm_partition_lag_entries",
            "Entries behind the stream's end, per partition this worker holds.",
            ["partition"],
            registry=r,
        )
        self.skipped = Counter(
            "healthfsm_events_skipped_total",
            "Entries read but not applied: another partition's, or already applied to the"
            " record or kept as a dead letter (a re-read after a takeover or a re-partition).",
            ["why"],
            registry=r,
        )

        r.register(LogDropsCollector())
        self.lag_unknown()

    def lag_unknown(self) -> None:
        """The lag is not known (not measured yet, standing by, or Redis or the store not
        reached): NaN, which no threshold compares true with, never a reassuring 0."""
        self.lag_entries.set(NAN)
        self.lag_seconds.set(NAN)
        self.partition_lag_entries.clear()

    def observe_batch(self, result: BatchResult, seconds: float) -> None:
        """Count one committed batch."""
        self.consumed.inc(result.applied + sum(result.rejected.values()))
        self.applied.inc(result.applied)
        if result.skipped:
            self.skipped.labels("applied_before").inc(result.skipped)
        self.batch_size.observe(result.entries)
        self.batch_duration.observe(seconds)
        for reason, n in result.rejected.items():
            self.rejected.labels(reason).inc(n)
        for (before, after, trigger), n in result.transitions.items():
            self.transitions.labels(before.value, after.value, trigger).inc(n)
        for (event_type, held), n in result.cas_misses.items():
            self.cas_conflicts.labels(event_type, held).inc(n)

    def total(self, counter: Counter) -> int:
        """A counter's value summed over its label sets, read back from the registry."""
        return _sum_samples(counter, "_total")

    def batches(self) -> int:
        """Committed batches: the count of the batch-size histogram."""
        return _sum_samples(self.batch_size, "_count")


class LogDropsCollector(Collector):
    """``healthfsm_log_records_dropped_total``, read from the process's log writer.

    The writer belongs to the process (set up at the CLI edge, before any worker), so the
    count is read at scrape time rather than copied into each worker's registry.
    """

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "healthfsm_log_records_dropped",
            "Log records dropped because log output was slower than the worker"
            " (stderr blocked or read late).",
            value=log_queue.dropped_total(),
        )


class ReadinessCollector(Collector):
    """``healthfsm_ready`` and ``healthfsm_readiness{reason}``, read from the probes' state
    at scrape time, so ``/metrics`` and ``/readyz`` agree from the first scrape on."""

    def __init__(self, health: HealthState) -> None:
        self._health = health

    def collect(self) -> Iterator[Metric]:
        reason = self._health.readiness()
        yield GaugeMetricFamily(
            "healthfsm_ready",
            "1 while /readyz passes (active or standing by, Redis and the store reached), else 0.",
            value=1 if reason == "ready" else 0,
        )
        why = GaugeMetricFamily(
            "healthfsm_readiness",
            "1 for the reason /readyz gives now (ready, fatal, redis, store, schema, starting,"
            " stopping), 0 for the others.",
            labels=["reason"],
        )
        for name in READINESS:
            why.add_metric([name], 1 if name == reason else 0)
        yield why
        yield GaugeMetricFamily(
            "healthfsm_live",
            "1 while /healthz passes (the loop finished an iteration within its bound), 0 when"
            " it is wedged inside a call.",
            value=1 if self._health.alive() else 0,
        )


class IdentityCollector(Collector):
    """``healthfsm_worker_info{label,stream,lobby_stream}`` 1: what this worker consumes,
    for rules and panels that tell one deployment (label) from another."""

    def __init__(self, identity: Mapping[str, str]) -> None:
        self._identity = dict(identity)

    def collect(self) -> Iterator[Metric]:
        yield InfoMetricFamily(
            "healthfsm_worker",
            "What this worker consumes: its offset label, input stream and lobby stream.",
            value=self._identity,
        )


def _sum_samples(metric: Counter | Histogram, suffix: str) -> int:
    """The sum of a metric's samples whose name ends with ``suffix`` (all label sets)."""
    return int(
        sum(
            sample.value
            for family in metric.collect()
            for sample in family.samples
            if sample.name.endswith(suffix)
        )
    )
