"""Model-based tests: the real code and the reference model (tests/model.py), side by side.

- ``InProcessComparison``: many games, all event types, malformed entries, unknown games and
  admin ``set-status`` calls, applied in batches of random size against a real SQLite file.
- ``CrashComparison``: the real worker against the real Redis, killed at a random point of a
  batch (fault-injection hooks, no sleeps) and restarted from the same database.
- batch-size invariance: any entry sequence, batch size 1 versus any other.
"""

from __future__ import annotations

import contextlib
import itertools
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
import redis
from hypothesis import given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from consumer.contract.codec import encode_snapshot
from consumer.contract.partitions import partition_of
from consumer.errors import InjectedFault
from consumer.operations.partitions import repartition
from consumer.runtime import faults
from consumer.runtime.batch import BatchTarget, apply_batch
from consumer.runtime.faults import FaultPoint
from consumer.runtime.worker import Worker
from consumer.settings import ConsumerSettings
from statemachine import Status, get_machine
from statemachine.errors import StatusConflict, TransitionNotAllowed
from store import Store, dead_letters, offsets, open_database, outbox, partitions, records
from store.admin import add_game, set_status
from store.offsets import entry_id_key
from tests import model, pg
from tests.conftest import FIXED_NOW_MS
from tests.contract_schema import HEALTH_EVENT, SNAPSHOT, violations
from tests.streams import as_id, entries, newest_id

pytestmark = pytest.mark.backends("sqlite", "postgres")

MALFORMED = [
    {b"event_type": b"probe_failed", b"occurred_at_ms": b"5"},
    {b"game_id": b"  ", b"event_type": b"probe_failed", b"occurred_at_ms": b"5"},
    {b"game_id": b"g0", b"event_type": b"probe_failed", b"occurred_at_ms": b"-5"},
    {b"game_id": b"g0", b"event_type": b"probe_failed", b"occurred_at_ms": b"1_0"},
    {b"game_id": b"\xff", b"event_type": b"probe_failed", b"occurred_at_ms": b"5"},
    {b"game_id": b"g0", b"occurred_at_ms": b"5"},
    {b"game_id": b"g0", b"event_type": b"probe_failed", b"occurred_at_ms": b" 5"},
    {b"game_id": b"g0", b"event_type": b"probe_failed", b"occurred_at_ms": b"+5"},
]
DECODE_REASONS = {"missing_field", "invalid_field"}
game_ids = st.sampled_from([f"g{i}" for i in range(6)])
statuses = st.sampled_from(model.STATUSES)
event_types = st.sampled_from(model.EVENT_TYPES)


def model_reason(reason: str) -> str:
    return "malformed" if reason in DECODE_REASONS else reason


def fields_of(game_id: str, event_type: str) -> dict[bytes, bytes]:
    return {
        b"game_id": game_id.encode(),
        b"event_type": event_type.encode(),
        b"occurred_at_ms": b"1700000000000",
    }


def _model_source(source: str) -> str:
    """``admin-N`` as the model names it; a stream entry id as it is."""
    if source.startswith("admin-") and source[len("admin-") :].isdigit():
        return model.ADMIN_SOURCE
    return source


def snapshot_view(row: outbox.OutboxRow) -> dict[str, str]:
    source = _model_source(row.source_entry_id)
    return {
        "game_id": row.game_id,
        "runtime_status": row.runtime_status,
        "engine_health_summary": row.engine_health_summary,
        "current_turn": str(row.current_turn),
        "source_entry_id": source,
    }


class InProcessComparison(RuleBasedStateMachine):
    """The batch applier and admin CAS on a real database, step by step against the model."""

    games = Bundle("games")

    BACKEND = "sqlite"

    def __init__(self) -> None:
        super().__init__()
        self.tmp, location = new_location(self.BACKEND, "model.db")
        self.db = open_database(location, create=True)
        # operators write through a connection of their own, as another process would, so
        # the worker's record cache must notice them (PRAGMA data_version), and on
        # PostgreSQL the batch must see their committed status (SELECT ... FOR UPDATE)
        self.operator = open_database(location)
        self.cache = self.db.record_loader()
        self.model = model.Model()
        self.pending: list[
            tuple[bytes, dict[bytes, bytes], tuple[str | None, str | None, bool]]
        ] = []
        self.sequence = itertools.count(1)
        self.snapshots: list[dict[str, str]] = []
        self.offset_history: list[str] = []

    def teardown(self) -> None:
        self.db.close()
        self.operator.close()
        self.tmp.cleanup()

    def _entry_id(self) -> bytes:
        return f"{next(self.sequence)}-0".encode()

    @rule(target=games, game_id=game_ids, status=statuses, turn=st.integers(0, 50))
    def register(self, game_id: str, status: str, turn: int) -> str:
        if game_id in self.model.records:
            return game_id
        add_game(self.operator, game_id, Status(status), turn, FIXED_NOW_MS)
        self.model.records[game_id] = model.ModelRecord(status, turn=turn)
        return game_id

    @rule(game_id=games, event_type=event_types)
    def health_event(self, game_id: str, event_type: str) -> None:
        self.pending.append(
            (self._entry_id(), fields_of(game_id, event_type), (game_id, event_type, True))
        )

    @rule(game_id=st.sampled_from(["ghost", "g 9", "G0"]), event_type=event_types)
    def event_for_unknown_game(self, game_id: str, event_type: str) -> None:
        self.pending.append(
            (self._entry_id(), fields_of(game_id, event_type), (game_id, event_type, True))
        )

    @rule(game_id=games, event_type=st.sampled_from(["PROBE_FAILED", "rebooted", "probe_failed "]))
    def unknown_event_type(self, game_id: str, event_type: str) -> None:
        self.pending.append(
            (self._entry_id(), fields_of(game_id, event_type), (game_id, event_type, True))
        )

    @rule(fields=st.sampled_from(MALFORMED))
    def malformed(self, fields: dict[bytes, bytes]) -> None:
        self.pending.append((self._entry_id(), fields, (None, None, False)))

    @precondition(lambda self: self.pending)
    @rule(size=st.integers(1, 12))
    def apply(self, size: int) -> None:
        chunk, self.pending = self.pending[:size], self.pending[size:]
        result = apply_batch(
            BatchTarget(self.db, get_machine(), "s", "l", cache=self.cache),
            [(i, f) for i, f, _ in chunk],
            now_ms=FIXED_NOW_MS,
        )
        misses = changes = 0
        for entry_id, _, (game_id, event_type, valid) in chunk:
            record = self.model.records.get(game_id or "")
            if valid and record is not None and event_type in model.REACTION:
                status = record.status
                cas_source = model.REACTION[event_type][1]
                if cas_source is not None and status != cas_source:
                    misses += 1
                elif cas_source is not None:
                    changes += 1
            self.model.health(entry_id.decode(), game_id, event_type, valid)
        # a CAS miss never changes the status; a CAS hit always does
        assert sum(result.cas_misses.values()) == misses
        assert sum(result.transitions.values()) == changes
        self.snapshots += [snapshot_view(row) for _, row in result.snapshots]

    @rule(game_id=games, expected=statuses, to=statuses)
    def admin_set_status(self, game_id: str, expected: str, to: str) -> None:
        outcome = self.model.admin(game_id, expected, to)
        try:
            set_status(self.operator, game_id, Status(expected), Status(to), FIXED_NOW_MS)
            got = "ok"
        except StatusConflict:
            got = "conflict"
        except TransitionNotAllowed:
            got = "not_allowed"
        assert got == outcome

    @rule(game_id=games, data=st.data())
    def admin_allowed_change(self, game_id: str, data: st.DataObject) -> None:
        """An operator change that applies (the arbitrary rule above mostly conflicts), so
        records the worker holds in its cache really do change underneath it."""
        current = self.model.records[game_id].status
        choices = sorted(to for src, to in model.ADMIN_PAIRS if src == current)
        if choices:
            self.admin_set_status(game_id, current, data.draw(st.sampled_from(choices)))

    @invariant()
    def store_equals_model(self) -> None:
        stored = {r.game_id: r for r in records.iter_all(self.db.conn)}
        assert set(stored) == set(self.model.records)
        for game_id, want in self.model.records.items():
            got = stored[game_id]
            assert got.state.value in model.STATUSES
            assert (got.state.value, got.engine_health, got.current_turn) == (
                want.status,
                want.engine_health,
                want.turn,
            )
            assert got.last_emitted_summary == want.last_emitted

    @invariant()
    def snapshots_equal_model(self) -> None:
        queued = [snapshot_view(row) for _, row in outbox.peek(self.db.conn, 1_000_000)]
        assert queued == self.model.snapshots  # health and admin snapshots, in commit order
        assert self.snapshots == [s for s in queued if s["source_entry_id"] != "admin"]

    @invariant()
    def queued_snapshots_follow_the_contract(self) -> None:
        """Every snapshot, as it will be published, is valid by docs/asyncapi.yaml."""
        for _, row in outbox.peek(self.db.conn, 1_000_000):
            assert not violations(SNAPSHOT, encode_snapshot(row)), row

    @invariant()
    def dead_letters_equal_model(self) -> None:
        kept = dead_letters.list_recent(self.db.conn, limit=10_000)[::-1]
        assert [(r["entry_id"], model_reason(str(r["reason"]))) for r in kept] == self.model.dead

    @invariant()
    def offset_never_moves_backwards(self) -> None:
        offset = offsets.load(self.db.conn, "l") or "0-0"
        if self.offset_history:
            assert entry_id_key(offset) >= entry_id_key(self.offset_history[-1])
        self.offset_history.append(offset)
        assert offset == self.model.offset


# Scaled from the active profile: ``--hypothesis-profile=deep`` runs more.
InProcessComparison.TestCase.settings = settings(
    max_examples=3 * settings().max_examples, stateful_step_count=40
)
TestInProcess = InProcessComparison.TestCase


class InProcessComparisonPostgres(InProcessComparison):
    """The same machine on PostgreSQL, each example in a schema of its own."""

    BACKEND = "postgres"


# A third of SQLite's examples: each costs a schema and more round trips (CI time).
InProcessComparisonPostgres.TestCase.settings = settings(
    max_examples=settings().max_examples, stateful_step_count=40
)
TestInProcessPostgres = InProcessComparisonPostgres.TestCase


def new_location(backend: str, name: str) -> tuple[tempfile.TemporaryDirectory[str], str]:
    """A temp folder and the store's location: a file ``name`` in it on SQLite, a new
    schema's URL on PostgreSQL. The folder is removed at once if the server cannot be
    reached, so a failed start never leaks it into a later test's warnings."""
    tmp = tempfile.TemporaryDirectory()
    try:
        location = pg.new_schema_url() if backend == "postgres" else str(Path(tmp.name) / name)
    except BaseException:
        tmp.cleanup()
        raise
    return tmp, location


class CrashComparison(RuleBasedStateMachine):
    """The real worker on the real Redis, crashed at random points and restarted."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp, self.path = new_location(BACKEND[0], "crash.db")
        self.client = redis.Redis.from_url(REDIS_URL[0])
        self.client.flushall()
        self.model = model.Model()
        db = open_database(self.path, create=True)
        for i in range(4):
            add_game(db, f"g{i}", Status.RUNNING, i, FIXED_NOW_MS)
            self.model.records[f"g{i}"] = model.ModelRecord("running", turn=i)
        db.close()
        self.history: dict[str, dict[str, tuple[str, str]]] = {"0-0": self._view()}
        self.last = "0-0"
        self.valid_inputs: list[dict[bytes, bytes]] = []

    def _view(self) -> dict[str, tuple[str, str]]:
        return {g: (r.status, r.engine_health) for g, r in self.model.records.items()}

    def teardown(self) -> None:
        faults.disarm_all()
        self.client.close()
        self.tmp.cleanup()

    def _xadd(
        self, fields: dict[bytes, bytes], game_id: str | None, event_type: str | None, valid: bool
    ) -> None:
        added = self.client.xadd("runtime:health_events", fields)  # type: ignore[arg-type]
        entry_id = as_id(added)
        self.model.health(entry_id, game_id, event_type, valid)
        if valid:
            self.valid_inputs.append(fields)
        self.last = entry_id
        self.history[self.last] = self._view()

    @rule(game_id=st.sampled_from(["g0", "g1", "g2", "g3", "ghost"]), event_type=event_types)
    def event(self, game_id: str, event_type: str) -> None:
        self._xadd(fields_of(game_id, event_type), game_id, event_type, True)

    @rule(fields=st.sampled_from(MALFORMED))
    def malformed(self, fields: dict[bytes, bytes]) -> None:
        self._xadd(fields, None, None, False)

    @rule(
        batch_size=st.integers(1, 5),
        point=st.sampled_from(list(FaultPoint)),
        after=st.integers(1, 4),
    )
    def crash_and_restart(self, batch_size: int, point: FaultPoint, after: int) -> None:
        faults.arm(point, after)
        try:
            self._run(batch_size)
            note(f"no crash: {point.value} was reached fewer than {after} times")
        except InjectedFault:
            note(f"crashed at {point.value} #{after}")
        faults.disarm_all()

    @rule(game_id=st.sampled_from(["g0", "g1", "g2", "g3"]), data=st.data())
    def admin_change(self, game_id: str, data: st.DataObject) -> None:
        """An operator's ``set-status`` between two runs, once every entry so far is applied:
        its snapshot waits in the outbox and goes out in its place, whatever crashes follow."""
        self._run(7)
        current = self.model.records[game_id].status
        choices = sorted(to for src, to in model.ADMIN_PAIRS if src == current)
        if not choices:
            return
        to = data.draw(st.sampled_from(choices))
        assert self.model.admin(game_id, current, to) == "ok"
        db = open_database(self.path)
        try:
            set_status(db, game_id, Status(current), Status(to), FIXED_NOW_MS)
        finally:
            db.close()
        self.history[self.last] = self._view()  # the store is at the last entry's offset

    @rule(batch_size=st.integers(1, 7))
    def run_clean(self, batch_size: int) -> None:
        self._run(batch_size)
        self.check_complete()

    @rule(
        batch_size=st.integers(1, 5),
        first_batches=st.integers(0, 4),
        second_batches=st.integers(0, 4),
        second_first=st.booleans(),
    )
    def second_worker_overlaps(
        self, batch_size: int, first_batches: int, second_batches: int, second_first: bool
    ) -> None:
        """A second worker on the same store and label, as in a deploy: both start, one is
        active and the other stands by; each stops after a random number of batches (or
        once caught up), and the standby takes over when the active one lets go."""
        workers = [_standby_capable_worker(self.path, batch_size) for _ in range(2)]
        limits = [first_batches, second_batches]
        if second_first:
            workers.reverse()
        target = newest_id(self.client, "runtime:health_events", empty="0-0")
        for worker, limit in zip(workers, limits, strict=True):
            _stop_when_due(worker, limit, target, workers)
        _run_together(workers, target)
        note(f"batches per worker: {[w.totals.batches for w in workers]}")

    @rule(count=st.integers(1, 4))
    def change_partition_count(self, count: int) -> None:
        """``healthfsm partitions set``: each new partition starts at the lowest offset of the
        old ones whose games it takes; the invariants below hold per partition."""
        db = open_database(self.path)
        try:
            repartition(db, "health_events", count, FIXED_NOW_MS)
        finally:
            db.close()

    @rule(
        batch_size=st.integers(1, 5),
        workers=st.integers(2, 3),
        die_after=st.integers(0, 3),
        leave_after=st.integers(0, 3),
        join_late=st.booleans(),
    )
    def workers_join_leave_and_die(
        self, batch_size: int, workers: int, die_after: int, leave_after: int, join_late: bool
    ) -> None:
        """Workers share the label (its partitions, or one active and the rest standing by):
        one dies after ``die_after`` batches (0: it does not) without releasing anything, as
        after kill -9, so its leases and heartbeat expire; one leaves after ``leave_after``
        batches (a handover); the last joins late. The survivors apply everything."""
        target = newest_id(self.client, "runtime:health_events", empty="0-0")
        if target == "0-0":
            return
        crew = [_sharing_worker(self.path, batch_size) for _ in range(workers)]
        died: list[float] = []
        if die_after:
            _dies_after(crew[0], die_after, died)
        if leave_after and (workers > 2 or not die_after):  # one is left to finish
            _leaves_after(crew[1], leave_after)
        try:
            _run_sharing(crew, join_late, lambda: _all_applied(self.path, target))
        finally:
            if died:  # what the dead one held binds until its lease runs out, as after kill -9
                time.sleep(max(0.0, died[0] + crew[0].settings.lease_ttl_s + 0.05 - time.time()))
        note(f"batches per worker: {[w.totals.batches for w in crew]}, died: {bool(died)}")

    def _run(self, batch_size: int) -> None:
        db = open_database(self.path)  # a restart: a fresh connection, no memory of the last
        try:
            settings_ = ConsumerSettings(
                redis_url=REDIS_URL[0], db_path=str(self.path), drain=True, batch_size=batch_size
            )
            Worker(settings_, db, clock=lambda: FIXED_NOW_MS).run()
        finally:
            db.close()

    def check_complete(self) -> None:
        db = open_database(self.path)
        try:
            for game_id, want in self.model.records.items():
                got = records.get(db.conn, game_id)
                assert (got.state.value, got.engine_health) == (want.status, want.engine_health)
            assert outbox.pending(db.conn) == 0
            kept = dead_letters.list_recent(db.conn, limit=10_000)[::-1]
            # one each; in stream order per partition (workers of other partitions add theirs
            # side by side)
            assert (
                sorted(
                    ((str(r["entry_id"]), model_reason(str(r["reason"]))) for r in kept),
                    key=lambda dead: entry_id_key(dead[0]),
                )
                == self.model.dead
            )
        finally:
            db.close()
        published = [
            {k.decode(): v.decode() for k, v in fields.items()}
            for _, fields in entries(self.client, "gm:lobby_events")
        ]
        firsts = [
            {**s, "source_entry_id": _model_source(s["source_entry_id"])}
            for s in {s["source_entry_id"]: s for s in published}.values()
        ]
        keys = (
            "game_id",
            "runtime_status",
            "engine_health_summary",
            "current_turn",
            "source_entry_id",
        )
        by_game: dict[str, list[dict[str, str]]] = {}
        for snapshot in firsts:
            by_game.setdefault(snapshot["game_id"], []).append({k: snapshot[k] for k in keys})
        due: dict[str, list[dict[str, str]]] = {}
        for snapshot in self.model.snapshots:
            due.setdefault(snapshot["game_id"], []).append(snapshot)
        assert by_game == due  # each game's in order; nothing is promised across games

    @invariant()
    def store_is_the_model_at_the_stored_offset(self) -> None:
        """Exactly the entries up to the offset are applied: none lost, none applied twice
        (with partitions: each game's, up to its partition's offset)."""
        db = open_database(self.path)
        try:
            at = _offset_of_each_game(db, self.model.records)
            stored = {
                r.game_id: (r.state.value, r.engine_health) for r in records.iter_all(db.conn)
            }
        finally:
            db.close()
        assert stored == {game: self.history[at[game]][game] for game in stored}

    @invariant()
    def no_snapshot_is_lost(self) -> None:
        """Whatever the crash: each snapshot due up to the stored offset is out or in the outbox."""
        db = open_database(self.path)
        try:
            at = _offset_of_each_game(db, self.model.records)
            waiting = {row.source_entry_id for _, row in outbox.peek(db.conn, 100_000)}
        finally:
            db.close()
        out = {f[b"source_entry_id"].decode() for _, f in entries(self.client, "gm:lobby_events")}
        admins = {s for s in out | waiting if _model_source(s) == model.ADMIN_SOURCE}
        due = [(s["game_id"], s["source_entry_id"]) for s in self.model.snapshots]
        assert len(admins) == [source for _, source in due].count(model.ADMIN_SOURCE)
        for game, source in due:
            if source != model.ADMIN_SOURCE and entry_id_key(source) <= entry_id_key(at[game]):
                assert source in out | waiting, source

    @invariant()
    def both_streams_follow_the_contract(self) -> None:
        """Every published snapshot is valid by docs/asyncapi.yaml, and so is every health
        event the model counts as valid (the malformed ones are meant to be rejected)."""
        for _, fields in entries(self.client, "gm:lobby_events"):
            assert not violations(SNAPSHOT, fields), fields
        for fields in self.valid_inputs:
            assert not violations(HEALTH_EVENT, fields), fields

    @invariant()
    def first_sightings_keep_event_order(self) -> None:
        """A repeat is only ever a snapshot already published; each game's first sightings
        keep the order of the events that caused them (nothing is promised across games:
        with partitions, workers publish side by side)."""
        firsts: dict[str, list[str]] = {}
        seen: set[str] = set()
        for _, fields in entries(self.client, "gm:lobby_events"):
            source = fields[b"source_entry_id"].decode()
            if source not in seen and _model_source(source) != model.ADMIN_SOURCE:
                firsts.setdefault(fields[b"game_id"].decode(), []).append(source)
                seen.add(source)
        for sources in firsts.values():
            assert sources == sorted(sources, key=entry_id_key)


def _standby_capable_worker(path: str, batch_size: int) -> Worker:
    settings_ = ConsumerSettings(
        redis_url=REDIS_URL[0],
        db_path=str(path),
        batch_size=batch_size,
        block_ms=5,
        lease_poll_s=0.005,
        backoff_initial_s=0.005,
    )
    return Worker(settings_, open_database(path), clock=lambda: FIXED_NOW_MS)


def _offset_of_each_game(db: Store, games: Iterable[str]) -> dict[str, str]:
    """Each game's committed offset: the label's, or its partition's."""
    count = partitions.count(db.conn, "health_events")
    if count == 1:
        offset = offsets.load(db.conn, "health_events") or "0-0"
        return dict.fromkeys(games, offset)
    stored = partitions.load_offsets(db.conn, "health_events")
    return {
        game: stored[p].entry_id if (p := partition_of(game, count)) in stored else "0-0"
        for game in games
    }


def _all_applied(path: str, target: str) -> bool:
    """Every partition (or the label) is at ``target`` and the outbox is empty."""
    db = open_database(path)
    try:
        count = partitions.count(db.conn, "health_events")
        if count == 1:
            at = {offsets.load(db.conn, "health_events")}
        else:
            stored = partitions.load_offsets(db.conn, "health_events")
            at = {o.entry_id for o in stored.values()} if len(stored) == count else {None}
        return at == {target} and outbox.pending(db.conn) == 0
    finally:
        db.close()


def _sharing_worker(path: str, batch_size: int) -> Worker:
    """A consuming worker with a short lease, so a dead one's partitions are soon taken."""
    settings_ = ConsumerSettings(
        redis_url=REDIS_URL[0],
        db_path=str(path),
        batch_size=batch_size,
        block_ms=5,
        lease_ttl_s=0.6,
        lease_poll_s=0.01,
        backoff_initial_s=0.005,
        backoff_max_s=0.05,
    )
    return Worker(settings_, open_database(path), clock=lambda: FIXED_NOW_MS)


class _Died(Exception):
    """A worker's thread ends here as a killed process would, after a commit."""


def _dies_after(worker: Worker, batches: int, died: list[float]) -> None:
    """After ``batches`` commits the worker stops dead: nothing released, nothing published
    (its leases and heartbeat expire; the next holder publishes its outbox rows). The wall
    time of its death goes into ``died``."""

    def observe(result: object, seconds: float) -> None:
        if worker.totals.batches >= batches:
            died.append(time.time())
            raise _Died

    release = worker.ownership.release_on_stop

    def release_unless_dead() -> None:
        if not died:  # stopped before its time came: a clean stop
            release()

    worker.ownership.release_on_stop = release_unless_dead  # type: ignore[method-assign]
    worker.status.observers.append(observe)


def _leaves_after(worker: Worker, batches: int) -> None:
    def observe(result: object, seconds: float) -> None:
        if worker.totals.batches >= batches:
            worker.request_stop()

    worker.status.observers.append(observe)


def _run_quietly(worker: Worker) -> None:
    with contextlib.suppress(_Died):
        worker.run()


def _run_sharing(crew: list[Worker], join_late: bool, done: Callable[[], bool]) -> None:
    """Run the workers in threads (the last one a little later if ``join_late``) until
    ``done()``; then stop them and close their stores."""
    threads = [threading.Thread(target=_run_quietly, args=(w,)) for w in crew]
    for thread in threads[:-1] if join_late else threads:
        thread.start()
    try:
        if join_late:
            time.sleep(0.05)
            threads[-1].start()
        deadline = time.monotonic() + 30
        while not done():
            assert time.monotonic() < deadline, "the survivors did not finish"
            time.sleep(0.01)
    finally:
        for worker in crew:
            worker.request_stop()
        for thread in threads:
            if thread.ident is not None:
                thread.join(timeout=10)
        for worker in crew:
            worker.db.close()


def _stop_when_due(worker: Worker, limit: int, target: str, workers: list[Worker]) -> None:
    """Stop ``worker`` after ``limit`` batches (0: before it starts), everyone once caught up.

    From the worker's own thread, right after a batch: a stop requested while it blocks
    on an XREAD waits for Redis's timeout tick (100 ms), which would slow the suite.
    """

    def observe(result: object, seconds: float) -> None:
        if worker.offset == target:
            for each in workers:
                each.request_stop()
        elif worker.totals.batches >= limit:
            worker.request_stop()

    worker.status.observers.append(observe)
    if limit == 0:
        worker.request_stop()


def _run_together(workers: list[Worker], target: str) -> None:
    """Run the workers in threads at once until each has stopped; close their stores."""
    threads = [threading.Thread(target=w.run) for w in workers]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        for worker in workers:
            if worker.holding and worker.offset == target:
                worker.request_stop()  # took over with nothing left to read
        time.sleep(0.002)
    for worker, thread in zip(workers, threads, strict=True):
        worker.request_stop()
        thread.join(timeout=10)
        worker.db.close()
    assert not any(t.is_alive() for t in threads)


REDIS_URL: list[str] = []
BACKEND: list[str] = ["sqlite"]


@pytest.fixture
def crash_redis(redis_url: str, backend: str) -> str:
    REDIS_URL[:] = [redis_url]
    BACKEND[:] = [backend]
    return redis_url


@pytest.mark.slow
def test_crash_comparison(crash_redis: str, backend: str) -> None:
    from hypothesis.stateful import run_state_machine_as_test

    examples = settings().max_examples
    if backend == "postgres":  # a third: its steps cost about three times as much (CI time)
        examples = max(1, examples // 3)
    run_state_machine_as_test(
        CrashComparison, settings=settings(max_examples=examples, stateful_step_count=15)
    )


entries_strategy = st.lists(
    st.one_of(
        st.tuples(game_ids | st.just("ghost"), event_types).map(lambda t: fields_of(*t)),
        st.sampled_from(MALFORMED),
    ),
    min_size=1,
    max_size=40,
)


@given(
    entries=entries_strategy,
    batch_size=st.integers(2, 50),
    initial=st.lists(statuses, min_size=6, max_size=6),
)
def test_batch_size_invariance(
    backend: str, entries: list[dict[bytes, bytes]], batch_size: int, initial: list[str]
) -> None:
    outcomes = []
    for size in (1, batch_size):  # the second run also keeps records in the cache
        tmp, location = new_location(backend, "b.db")
        with tmp:
            db = open_database(location, create=True)
            try:
                cache = db.record_loader() if size == batch_size else None
                for i, status in enumerate(initial):
                    add_game(db, f"g{i}", Status(status), i, FIXED_NOW_MS)
                raw = [(f"{n + 1}-0".encode(), fields) for n, fields in enumerate(entries)]
                published = []
                for start in range(0, len(raw), size):
                    result = apply_batch(
                        BatchTarget(db, get_machine(), "s", "l", cache=cache),
                        raw[start : start + size],
                        now_ms=FIXED_NOW_MS,
                    )
                    published += [row for _, row in result.snapshots]
                outcomes.append(
                    (
                        [records.as_dict(r) for r in records.iter_all(db.conn)],
                        published,
                        [
                            (r["entry_id"], r["reason"])
                            for r in dead_letters.list_recent(db.conn, limit=100)
                        ],
                        offsets.load(db.conn, "l"),
                    )
                )
            finally:
                db.close()
    assert outcomes[0] == outcomes[1]
