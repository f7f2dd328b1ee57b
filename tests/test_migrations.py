"""Every released store migrates to today's schema, keeps its rows and then works like a new one."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from statemachine import Status
from store import (
    SCHEMA_VERSION,
    Store,
    migrations,
    offsets,
    open_database,
    outbox,
    partitions,
    records,
    traffic,
)
from store.admin import set_status
from store.errors import StoreError
from store.sql import Sql
from tests import old_stores, pg
from tests.processes import cli_in_process as run_cli

pytestmark = pytest.mark.backends("sqlite", "postgres")


def columns(sql: Sql) -> dict[str, list[tuple[object, ...]]]:
    """Each healthfsm table's columns as (name, type, not null, default, key), in order."""
    tables = sorted(
        migrations.MARKER_TABLES | {"runtime_history", "leases", "outbox", "runtime_traffic"}
    )
    tables.append("dead_letters")
    if sql.dialect == "sqlite":
        return {
            table: [
                (name, kind.upper(), bool(notnull), default, pk)
                for _, name, kind, notnull, default, pk in sql.execute(
                    f"PRAGMA table_info({table})"
                )
            ]
            for table in tables
        }
    rows = sql.execute(
        "SELECT table_name, column_name, data_type, is_nullable, column_default, is_identity"
        " FROM information_schema.columns WHERE table_schema = current_schema()"
        " ORDER BY table_name, ordinal_position"
    ).fetchall()
    found: dict[str, list[tuple[object, ...]]] = {}
    for table, *rest in rows:
        found.setdefault(table, []).append(tuple(rest))
    return {table: found.get(table, []) for table in tables}


def old_store(backend: str, version: int, tmp_path: Path) -> str:
    """The ``--db`` of a store exactly as the release with schema ``version`` left it."""
    if backend == "sqlite":
        return str(old_stores.write_sqlite(version, tmp_path / f"v{version}.db"))
    url = pg.new_schema_url()
    old_stores.load_postgres(version, url)
    return url


def released(backend: str) -> tuple[int, ...]:
    return old_stores.SQLITE_VERSIONS if backend == "sqlite" else old_stores.POSTGRES_VERSIONS


def test_every_released_store_migrates_keeps_its_rows_and_works(
    backend: str, db: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fresh = columns(db.conn)
    for version in released(backend):
        location = old_store(backend, version, tmp_path)
        code, out, err = run_cli(capsys, "migrate", "--db", location)
        assert code == 0, err
        report = json.loads(out)
        assert (report["from_version"], report["to_version"]) == (version, SCHEMA_VERSION)
        assert report["applied"] == [step.name for step in migrations.MIGRATIONS[version:]]
        store = open_database(location, upgrade=False)
        try:
            assert store.schema_version() == SCHEMA_VERSION
            assert columns(store.conn) == fresh, f"version {version} migrated to other columns"
            names = store.conn.execute("SELECT version, name FROM schema_migrations ORDER BY 1")
            assert [tuple(row) for row in names] == [
                (n, step.name) for n, step in enumerate(migrations.MIGRATIONS, start=1)
            ]
            kept = records.load_many(store.conn, ["game-1", "game-2"])
            assert kept["game-1"].state is Status.RUNNING and kept["game-1"].current_turn == 7
            assert kept["game-2"].state is Status.STOPPED
            offset = offsets.load(store.conn, "default")
            assert offset == "1764000000000-5"
            assert offsets.entries_read(store.conn, "default") == (5 if version >= 2 else 0)
            row = outbox.OutboxRow("1764000000000-9", "game-1", "running", "healthy", 8, 1)
            with store.write() as sql:  # the outbox seq goes on, never reused
                outbox.enqueue(sql, [row])
            assert [seq for seq, _ in outbox.peek(store.conn, 10)] == [1, 2]
        finally:
            store.close()
        if version >= 3:
            _assert_one_ownership_model(location, version)
        _assert_traffic_and_explained_history(location, version)
        code, out, _ = run_cli(capsys, "dead-letters", "list", "--json", "--db", location)
        assert code == 0 and [row["entry_id"] for row in json.loads(out)] == ["1764000000000-3"]


def _assert_one_ownership_model(location: str, version: int) -> None:
    """A label's lease and offset became its partition 0's; a label with partitions kept
    its rows; ``leases`` and ``partition_leases`` read as their releases showed them."""
    store = open_database(location, upgrade=False)
    try:
        assert len(outbox.publisher_id(store.conn)) >= 16  # a store of its own at Redis
        assert partitions.count(store.conn, "default") == 1
        [lease] = partitions.read_leases(store.conn, "default").values()
        assert (lease.partition, lease.holder, lease.node, lease.epoch) == (
            0,
            "worker-a",
            "node-a",
            3,
        )
        assert lease.expires_at_ms == 1764000015000
        [offset] = partitions.load_offsets(store.conn, "default").values()
        assert (offset.partition, offset.entry_id, offset.entries_read) == (0, "1764000000000-5", 5)
        view = store.conn.execute("SELECT * FROM leases ORDER BY label").fetchall()
        assert [tuple(row) for row in view] == [
            ("default", "worker-a", "node-a", 3, 1764000000000, 1764000015000)
        ]
        if version >= 4:
            assert partitions.count(store.conn, "shared") == 2
            shared = partitions.read_leases(store.conn, "shared")
            assert [(p, row.holder, row.epoch) for p, row in shared.items()] == [
                (0, "worker-b", 4),
                (1, "", 4),
            ]
            kept = partitions.load_offsets(store.conn, "shared")
            assert [o.entry_id for o in kept.values()] == ["1764000000000-5", "1764000000000-2"]
            view = store.conn.execute(
                "SELECT * FROM partition_leases WHERE label = 'shared' ORDER BY partition"
            ).fetchall()
            assert [tuple(row) for row in view] == [
                ("shared", 0, "worker-b", "node-b", 4, 1764000000000, 1764000015000),
                ("shared", 1, "", "", 4, 0, 0),
            ]
        for table in ("leases", "partition_leases"):  # what an earlier release writes
            refused = (sqlite3.OperationalError, StoreError)  # PostgreSQL's, as the store says
            with pytest.raises(refused, match="view"), store.write() as sql:
                sql.execute(f"UPDATE {table} SET expires_at_ms = 0")
    finally:
        store.close()


def _assert_traffic_and_explained_history(location: str, version: int) -> None:
    """Version 6's counts are kept; older history rows say nothing of their snapshot
    (NULL), and a store of any version counts from its migration on."""
    store = open_database(location, upgrade=False)
    try:
        found = traffic.read(store.conn)
        rules = store.conn.execute(
            "SELECT entry_id, snapshot FROM runtime_history ORDER BY id"
        ).fetchall()
        if version >= 6:
            assert found.counts == {
                traffic.Edge("container_exited", "running", "engine_unreachable"): 3,
                traffic.Edge("set_status", "running", "stopped"): 1,
            }
            assert [tuple(row) for row in rules][-1] == ("1764000000000-5", 1)
        else:
            assert found.counts == {}
        if version >= 2:
            assert tuple(rules[0]) == ("1764000000000-4", None)
        set_status(store, "game-1", Status.RUNNING, Status.STOPPED, 1764000000000)
        edge = traffic.Edge("set_status", "running", "stopped")
        assert traffic.read(store.conn).counts[edge] == (2 if version >= 6 else 1)
    finally:
        store.close()


def test_a_store_newer_than_this_build_is_refused_untouched(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    location = old_store(backend, released(backend)[-1], tmp_path)
    store = open_database(location)
    old_stores.record_a_future_version(store)
    before = columns(store.conn), _versions(store.conn)
    store.close()
    code, _, err = run_cli(capsys, "migrate", "--db", location)
    assert code == 1 and "newer than this healthfsm" in err and err.count("\n") == 1
    store = open_database(location, upgrade=False)
    try:
        assert (columns(store.conn), _versions(store.conn)) == before
    finally:
        store.close()


def _versions(sql: Sql) -> list[tuple[object, ...]]:
    return [tuple(row) for row in sql.execute("SELECT * FROM schema_migrations ORDER BY 1")]


def test_each_step_renders_for_both_dialects() -> None:
    for step in migrations.MIGRATIONS:
        for dialect in ("sqlite", "postgres"):
            assert all("{" not in statement for statement in step.sql(dialect)), step.name
        assert step.why, step.name
    assert len({step.name for step in migrations.MIGRATIONS}) == SCHEMA_VERSION
