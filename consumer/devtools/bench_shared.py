"""``healthfsm bench --workers K --partitions N``: workers sharing one stream, measured.

For each K, K worker processes share a label of N partitions on one seeded stream (the
bench's hard workload) and one scratch store. Each registers before a common start, so
the shares are dealt at once; the run ends when every partition's offset is at the last
entry. Each worker reports its CPU seconds (``getrusage``) and the part spent applying
batches (its thread's CPU clock inside ``decode_batch`` and ``commit_batch``); the rest
is reading entries and skipping the ones of partitions it does not hold. Figures are per
1,000 stream entries, so they compare across K: with K workers each should spend about
1/K of one worker's applying, plus reading and skipping everything.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import resource
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from multiprocessing.synchronize import Barrier
from pathlib import Path
from queue import Empty
from typing import Any

import redis

from consumer.devtools import embedded
from consumer.devtools.bench import _cleanup, _shown, fresh_database, seed_stream, workload
from consumer.runtime.redis_client import last_entry_id
from store import open_database, partitions
from store.scratch import scratch_stores

LABEL = "bench"

SKIP_SHARE_TARGET = 0.15
"""Reading and skipping an entry may cost at most this share of one worker's per-entry CPU."""


@dataclass
class SharedConfig:
    """What the shared-stream bench runs."""

    workers: list[int]
    partitions: int
    events: int = 200_000
    games: int = 10_000
    batch_size: int = 1000
    seed: int = 1
    db: str | None = None


@dataclass
class WorkerFigures:
    """One worker's share of a run, per 1,000 stream entries."""

    entries_read: int
    applied: int
    cpu_ms: float
    apply_ms: float
    read_skip_ms: float


@dataclass
class SharedRun:
    """One K: the aggregate drain and each worker's figures."""

    workers: int
    seconds: float
    events_per_s: float
    per_worker: list[WorkerFigures] = field(default_factory=list)


@dataclass
class SharedReport:
    """Every figure, as ``--json`` prints it."""

    config: dict[str, object]
    backend: str = "sqlite"
    runs: list[SharedRun] = field(default_factory=list)
    one_worker_cpu_ms: float = 0.0
    skip_cost_ms: float = 0.0
    targets: dict[str, bool] = field(default_factory=dict)


def _worker_process(
    url: str,
    stream: str,
    lobby: str,
    location: str,
    batch_size: int,
    target: str,
    start: Barrier,
    results: Any,
) -> None:
    """One worker: register, wait for the others, consume until every partition is done."""
    from consumer.runtime.worker import Worker
    from consumer.settings import ConsumerSettings

    db = open_database(location)
    settings = ConsumerSettings(
        redis_url=url,
        stream=stream,
        lobby_stream=lobby,
        label=LABEL,
        db_path=location,
        batch_size=batch_size,
        block_ms=20,
        start_from="beginning",
    )
    worker = Worker(settings, db)
    worker.parts.join()
    start.wait()
    before = resource.getrusage(resource.RUSAGE_SELF)

    def all_done() -> None:
        watch = open_database(location)
        try:
            while not _finished(watch, target):
                time.sleep(0.02)
        finally:
            watch.close()
        worker.request_stop()

    watcher = threading.Thread(target=all_done, daemon=True)
    watcher.start()
    worker.run()
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    results.put((worker.totals.read, worker.totals.applied, cpu, worker.cpu.applying_s))
    db.close()


def _finished(db: Any, target: str) -> bool:
    count = partitions.count(db.conn, LABEL)
    if count == 1:
        from store import offsets

        return offsets.load(db.conn, LABEL) == target
    stored = partitions.load_offsets(db.conn, LABEL)
    return len(stored) == count and {o.entry_id for o in stored.values()} == {target}


def run_shared(
    cfg: SharedConfig, redis_url: str | None, progress: Callable[[str], object] | None = None
) -> SharedReport:
    """Seed once, then run each K on a fresh store; report the figures and the targets."""
    say = progress or (lambda _: None)
    report = SharedReport(config={**asdict(cfg), "db": _shown(cfg.db)})
    prefix = f"healthfsm-bench:{uuid.uuid4().hex[:8]}"
    context = multiprocessing.get_context("spawn")
    counts = sorted({1, *cfg.workers})
    with contextlib.ExitStack() as stack:
        url = redis_url or stack.enter_context(embedded.running()).url
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="healthfsm-bench-")))
        stores = stack.enter_context(scratch_stores(cfg.db, workdir))
        report.backend = stores.backend
        client = redis.Redis.from_url(url)
        stack.callback(client.close)
        stack.callback(lambda: _cleanup(client, prefix))
        stream = f"{prefix}:health"
        say(f"seeding {cfg.events:,} events over {cfg.games:,} games")
        seed_stream(client, stream, workload(cfg.events, cfg.games, cfg.seed))
        target = last_entry_id(client, stream) or "0-0"
        for k in counts:
            say(f"{k} worker(s) over {cfg.partitions} partition(s)")
            location = stores.new(f"shared{k}")
            fresh_database(location, cfg.games)
            if cfg.partitions > 1:
                from consumer.operations.partitions import repartition

                db = open_database(location)
                repartition(db, LABEL, cfg.partitions, int(time.time() * 1000))
                db.close()
            report.runs.append(
                _one_run(context, url, stream, f"{prefix}:out{k}", location, cfg, k, target)
            )
            client.delete(f"{prefix}:out{k}")
            stores.remove(location)
    _judge(report, cfg)
    return report


def _one_run(
    context: Any,
    url: str,
    stream: str,
    lobby: str,
    location: str,
    cfg: SharedConfig,
    k: int,
    target: str,
) -> SharedRun:
    start = context.Barrier(k + 1)
    results = context.Queue()
    processes = [
        context.Process(
            target=_worker_process,
            args=(url, stream, lobby, location, cfg.batch_size, target, start, results),
        )
        for _ in range(k)
    ]
    for process in processes:
        process.start()
    start.wait()
    began = time.perf_counter()
    watch = open_database(location)
    try:
        while not _finished(watch, target):
            time.sleep(0.01)
    finally:
        watch.close()
    seconds = time.perf_counter() - began
    figures = []
    for _ in processes:
        try:
            read, applied, cpu, applying = results.get(timeout=60)
        except Empty as error:
            raise RuntimeError("a bench worker did not report back") from error
        per = 1000 / cfg.events
        figures.append(
            WorkerFigures(
                entries_read=read,
                applied=applied,
                cpu_ms=round(cpu * 1000 * per, 2),
                apply_ms=round(applying * 1000 * per, 2),
                read_skip_ms=round((cpu - applying) * 1000 * per, 2),
            )
        )
    for process in processes:
        process.join(60)
    return SharedRun(k, round(seconds, 3), round(cfg.events / seconds), figures)


def _judge(report: SharedReport, cfg: SharedConfig) -> None:
    """The issue's targets, from figures of this one sitting."""
    one = next(run for run in report.runs if run.workers == 1)
    report.one_worker_cpu_ms = one.per_worker[0].cpu_ms
    shared = [run for run in report.runs if run.workers > 1]
    if not shared:
        return
    # reading and skipping an entry it does not apply: a worker's CPU beyond applying, less
    # one worker's reading cost of the entries it did apply, per entry it skipped; the
    # median over the workers of the widest run (most of what each reads is another's)
    widest = max(shared, key=lambda run: run.workers)
    alone = one.per_worker[0].read_skip_ms
    skips = []
    for w in widest.per_worker:
        applied = w.applied / max(1, w.entries_read)
        skips.append((w.read_skip_ms - alone * applied) / max(1e-9, 1 - applied))
    report.skip_cost_ms = round(statistics.median(skips), 3)
    report.targets[f"skip cost <= {SKIP_SHARE_TARGET:.0%} of one worker's per-entry CPU"] = (
        report.skip_cost_ms <= SKIP_SHARE_TARGET * report.one_worker_cpu_ms
    )
    for run in shared:
        bound = report.one_worker_cpu_ms / run.workers + report.skip_cost_ms
        report.targets[f"K={run.workers}: each worker's CPU <= 1/K of one worker's + skip"] = all(
            w.cpu_ms <= bound * 1.10 for w in run.per_worker
        )  # 10%: CPU clocks are noisy
