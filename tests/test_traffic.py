"""The machine as production runs it: its edges counted per trigger in the metrics and in the
store, drawn with their counts, and explained per record, each equal to the model's count of
the same generated run (tests/model.py, written from the README, not from the table)."""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from pathlib import Path

import pytest
import redis

from consumer.operations.partitions import repartition
from consumer.runtime.metrics import Metrics
from consumer.runtime.worker import Worker
from statemachine import Status
from store import Store, open_database, partitions, traffic
from store.admin import set_status
from tests.conftest import FIXED_NOW_MS, WorkerFactory, add_games, xadd_event
from tests.model import ADMIN_PAIRS, EVENT_TYPES, REACTION, STATUSES, Model, ModelRecord
from tests.processes import cli_in_process, run_cli, wait_for
from tests.streams import newest_id

pytestmark = pytest.mark.backends("sqlite", "postgres")

STREAM = "runtime:health_events"
LABEL = "health_events"
CAS_TYPES = {event for event, (_, source, _) in REACTION.items() if source is not None}


def _register(db: Store, model: Model, games: dict[str, str]) -> None:
    add_games(db, *[(game, Status(status)) for game, status in games.items()])
    for game, status in games.items():
        model.records[game] = ModelRecord(status)


def _write(client: redis.Redis, model: Model, events: list[tuple[str, str]]) -> str:
    """Append ``events`` (game, event type) to the stream and apply them to the model."""
    for game, event_type in events:
        entry_id = xadd_event(client, game, event_type)
        model.health(entry_id, game, event_type)
    return newest_id(client, STREAM)


def _generated(rng: random.Random, games: list[str], n: int) -> list[tuple[str, str]]:
    """``n`` events of random types over ``games``, an unregistered game now and then."""
    return [
        (rng.choice(games) if rng.random() > 0.02 else "nobody", rng.choice(EVENT_TYPES))
        for _ in range(n)
    ]


def _metric_counts(
    workers: list[Worker],
) -> tuple[Counter[tuple[str, ...]], Counter[tuple[str, ...]]]:
    """(from, to, trigger) of the status changes and (event type, status) of the CAS misses
    the workers' counters hold, summed over the workers."""
    changes: Counter[tuple[str, ...]] = Counter()
    misses: Counter[tuple[str, ...]] = Counter()
    for worker in workers:
        for family in worker.metrics.registry.collect():
            for sample in family.samples:
                labels = sample.labels
                if sample.name == "healthfsm_status_transitions_total":
                    change = (labels["from_status"], labels["to_status"], labels["trigger"])
                    changes[change] += int(sample.value)
                elif sample.name == "healthfsm_cas_conflicts_total":
                    misses[(labels["event_type"], labels["status"])] += int(sample.value)
    return +changes, +misses


def _model_metrics(
    edges: Counter[tuple[str, str, str]],
) -> tuple[Counter[tuple[str, ...]], Counter[tuple[str, ...]]]:
    """What the counters must say about the model's health events."""
    changes: Counter[tuple[str, ...]] = Counter()
    misses: Counter[tuple[str, ...]] = Counter()
    for (trigger, before, outcome), n in edges.items():
        if trigger == "set_status":
            continue
        if outcome != "summary_only":
            changes[(before, outcome, trigger)] += n
        elif trigger in CAS_TYPES:
            misses[(trigger, before)] += n
    return changes, misses


def _stored(db: Store) -> Counter[tuple[str, str, str]]:
    counts = traffic.read(db.conn).counts
    return Counter({(e.trigger, e.from_status, e.outcome): n for e, n in counts.items()})


def test_counters_and_the_store_s_counts_equal_the_model_across_a_restart_and_two_workers(
    db: Store,
    db_location: str,
    rclient: redis.Redis,
    make_worker: WorkerFactory,
) -> None:
    rng = random.Random(28)
    model = Model()
    games = {f"{status}-{i}": status for status in STATUSES for i in range(4)}
    _register(db, model, games)
    names = sorted(games)

    # one worker drains a generated stream: its counters equal the model's
    _write(rclient, model, _generated(rng, names, 400))
    first = make_worker(metrics=Metrics())
    first.run()
    assert _metric_counts([first]) == _model_metrics(model.edges)
    assert _stored(db) == model.edges

    # operators change some records; a restarted worker (counters from zero) goes on
    for game in rng.sample(names, 10):
        source = model.records[game].status
        pairs = sorted(pair for pair in ADMIN_PAIRS if pair[0] == source)
        if pairs:
            _, to = rng.choice(pairs)
            set_status(db, game, Status(source), Status(to), FIXED_NOW_MS)
            assert model.admin(game, source, to) == "ok"
    before_restart = Counter(model.edges)
    _write(rclient, model, _generated(rng, names, 400))
    second = make_worker(metrics=Metrics())
    second.run()
    assert _metric_counts([second]) == _model_metrics(model.edges - before_restart)
    assert _stored(db) == model.edges

    # two workers share four partitions: the counts add up exactly, once each
    repartition(db, LABEL, 4, FIXED_NOW_MS)
    before_sharing = Counter(model.edges)
    sharing = [
        make_worker(
            open_database(db_location),
            metrics=Metrics(),
            drain=False,
            lease_ttl_s=1.5,
            lease_poll_s=0.05,
            block_ms=50,
        )
        for _ in range(2)
    ]
    threads = [threading.Thread(target=worker.run) for worker in sharing]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: all(len(w.parts.held) == 2 for w in sharing), 20, "two partitions each")
        last = _write(rclient, model, _generated(rng, names, 600))
        wait_for(
            lambda: (
                {o.entry_id for o in partitions.load_offsets(db.conn, LABEL).values()} == {last}
            ),
            30,
            "every partition at the last entry",
        )
    finally:
        for worker in sharing:
            worker.request_stop()
        for thread in threads:
            thread.join(10)
        for worker in sharing:
            worker.db.close()
    assert all(_metric_counts([worker])[0] for worker in sharing), "both applied some"
    assert _metric_counts(sharing) == _model_metrics(model.edges - before_sharing)
    assert _stored(db) == model.edges


def test_every_edge_through_the_cli_equals_the_model_in_traffic_and_explain(
    db_location: str, redis_url: str, rclient: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each cell of the model's reaction table, then a generated stream, through ``consume``;
    each allowed pair through ``runtime set-status``: ``diagram --traffic --json`` and
    ``runtime history --explain --json`` say what the model says."""
    rng = random.Random(7)
    model = Model()
    cells = {f"{status}/{event}": status for status in STATUSES for event in EVENT_TYPES}
    admin = {f"admin/{a}/{b}": a for a, b in sorted(ADMIN_PAIRS)}
    for game, status in {**cells, **admin}.items():
        code, _, err = cli_in_process(
            capsys, "runtime", "add", game, "--status", status, "--db", db_location
        )
        assert code == 0, err
        model.records[game] = ModelRecord(status)
    _write(rclient, model, [(game, game.split("/")[1]) for game in cells])
    _write(rclient, model, _generated(rng, sorted(cells), 300))
    drained = run_cli("consume", "--drain", "--redis-url", redis_url, "--db", db_location)
    assert drained.returncode == 0, drained.stderr
    for game in admin:
        _, source, to = game.split("/")
        args = ("runtime", "set-status", game, "--from", source, "--to", to, "--db", db_location)
        code, _, err = cli_in_process(capsys, *args)
        assert code == 0, err
        assert model.admin(game, source, to) == "ok"

    code, out, err = cli_in_process(capsys, "diagram", "--traffic", "--json", "--db", db_location)
    assert code == 0, err
    report = json.loads(out)
    counted = Counter(
        {(e["trigger"], e["from_status"], e["outcome"]): e["count"] for e in report["edges"]}
    )
    assert +counted == model.edges
    assert report["unknown_edges"] == []
    assert len(report["edges"]) == len(STATUSES) * len(EVENT_TYPES) + len(ADMIN_PAIRS)

    for game in {**cells, **admin}:
        code, out, err = cli_in_process(
            capsys, "runtime", "history", game, "--explain", "--json", "--db", db_location
        )
        assert code == 0, err
        explained = [
            (row["entry_id"] if row["rule"] != "admin" else "admin", row["rule"], row["snapshot"])
            for row in json.loads(out)
        ]
        expected = [(entry, rule, due) for g, entry, rule, due in model.changes if g == game]
        assert explained == expected[-50:], game


def test_the_counts_agree_with_the_records_when_a_worker_is_killed_mid_batch(
    db: Store, db_location: str, redis_url: str, rclient: redis.Redis
) -> None:
    """``kill -9`` inside a batch's transaction and right after its commit: the counts are
    the batch's own writes, so they come and go with it, never twice and never lost."""
    rng = random.Random(9)
    model = Model()
    games = {f"{status}-{i}": status for status in STATUSES for i in range(3)}
    _register(db, model, games)
    _write(rclient, model, _generated(rng, sorted(games), 500))
    base = ["consume", "--drain", "--batch-size", "40", "--redis-url", redis_url]
    base += ["--db", db_location]
    for spec in ("before_commit:3:exit", "after_commit:3:exit"):
        env = {"HEALTHFSM_INJECT_FAULT": spec, "HEALTHFSM_TEST_HOOKS": "1"}
        crashed = run_cli(*base, env=env)
        assert crashed.returncode == 137, crashed.stderr
    done = run_cli(*base)
    assert done.returncode == 0, done.stderr
    assert _stored(db) == model.edges


def test_explain_of_changes_recorded_before_schema_version_6(
    db: Store, db_location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A migrated store's older history rows: the rule follows from the change they
    record; whether a snapshot went out was not recorded, and is said so."""
    add_games(db, ("g", Status.RUNNING))
    with db.write() as sql:
        for entry, cause, source, dest in [
            ("1-0", "probe_failed", "running", "running"),
            ("2-0", "container_exited", "running", "engine_unreachable"),
            ("admin-7", "admin", "engine_unreachable", "stopped"),
            ("3-0", "container_started", "starting", "running"),  # no change the table makes
        ]:
            sql.execute(
                "INSERT INTO runtime_history (game_id, entry_id, cause, from_status, to_status,"
                " engine_health, at_ms) VALUES ('g', ?, ?, ?, ?, 'x', 1)",
                [entry, cause, source, dest],
            )
    code, out, err = cli_in_process(
        capsys, "runtime", "history", "g", "--explain", "--json", "--db", db_location
    )
    assert code == 0, err
    rows = json.loads(out)
    assert [(r["rule"], r["snapshot"]) for r in rows] == [
        ("summary_only", None),
        ("cas", None),
        ("admin", None),
        ("not_in_table", None),
    ]
    assert "no change this release's table makes" in rows[3]["why"]
    assert "never changes the status" in rows[0]["why"]
    code, out, _ = cli_in_process(
        capsys, "runtime", "history", "g", "--explain", "--db", db_location
    )
    assert code == 0 and out.count("not recorded") == 4


def test_explain_says_when_debounce_held_a_change_s_snapshot_back(
    db: Store,
    db_location: str,
    rclient: redis.Redis,
    make_worker: WorkerFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A summary that changes back to the one Game Lobby last got (the record's summary was
    written by someone else meanwhile) is a change without a snapshot: recorded as such."""
    add_games(db, ("g", Status.RUNNING))
    with db.write() as sql:
        sql.execute(
            "UPDATE runtime_records SET engine_health = 'healthy',"
            " last_emitted_summary = 'probe_failed' WHERE game_id = 'g'"
        )
    held = xadd_event(rclient, "g", "probe_failed")
    sent = xadd_event(rclient, "g", "container_started")
    make_worker().run()
    code, out, err = cli_in_process(
        capsys, "runtime", "history", "g", "--explain", "--json", "--db", db_location
    )
    assert code == 0, err
    assert [(r["entry_id"], r["snapshot"]) for r in json.loads(out)] == [
        (held, False),
        (sent, True),
    ]
    code, out, _ = cli_in_process(
        capsys, "runtime", "history", "g", "--explain", "--db", db_location
    )
    assert "held back" in out and "queued for Game Lobby" in out


def test_the_rule_of_every_edge_follows_from_the_change_it_makes() -> None:
    """``--explain`` reads a change's rule off its cause, source and destination: that holds
    for every edge only while no allowed change keeps the status and a health event changes
    it through its CAS alone (a table row breaking either fails here)."""
    from consumer.operations.history import rule_of
    from statemachine.edges import ALL_EDGES, SUMMARY_ONLY
    from store.history import ADMIN_CAUSE

    for edge in ALL_EDGES:
        admin = edge.trigger == "set_status"
        dest = edge.from_status if edge.outcome == SUMMARY_ONLY else edge.outcome
        row: dict[str, object] = {
            "cause": ADMIN_CAUSE if admin else edge.trigger,
            "from_status": edge.from_status,
            "to_status": dest,
        }
        assert rule_of(row) == edge.rule, edge


def test_counts_are_kept_per_hour_and_dropped_after_ninety_days(db: Store) -> None:
    hour = traffic.BUCKET_MS
    start = 1_764_000_000_000 - 1_764_000_000_000 % hour
    edge = traffic.Edge("probe_failed", "running", traffic.SUMMARY_ONLY)
    other = traffic.Edge("container_exited", "running", "engine_unreachable")
    with db.write() as sql:
        traffic.add(sql, {edge: 2, other: 1}, start + 5)
        traffic.add(sql, {edge: 3}, start + hour - 1)  # the same hour
        traffic.add(sql, {edge: 4}, start + hour)  # the next one
    rows = db.conn.execute(
        "SELECT bucket_ms, trigger, count FROM runtime_traffic ORDER BY bucket_ms, trigger"
    ).fetchall()
    assert [tuple(row) for row in rows] == [
        (start, "container_exited", 1),
        (start, "probe_failed", 5),
        (start + hour, "probe_failed", 4),
    ]
    assert traffic.read(db.conn).counts == {edge: 9, other: 1}
    assert traffic.read(db.conn, since_ms=start + hour + 10).counts == {edge: 4}
    counter = traffic.HourlyWriter()  # a worker's: it drops old hours at its first write of each
    with db.write() as sql:
        counter.add(sql, {other: 1}, start + hour + 1)
    with db.write() as sql:  # 90 days after the second hour: the first is dropped
        counter.add(sql, {other: 1}, start + hour + traffic.KEEP_MS)
    found = traffic.read(db.conn)
    assert found.counts == {edge: 4, other: 2}
    assert found.first_bucket_ms == start + hour


def test_diagram_traffic_writes_files_of_its_own_and_refuses_bad_windows(
    db_location: str, db: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "diagrams"
    code, _, _ = cli_in_process(capsys, "diagram", "--out", str(out))
    assert code == 0
    committed = {path.name: path.read_bytes() for path in out.iterdir()}
    with db.write() as sql:
        traffic.add(
            sql,
            {traffic.Edge("container_oom", "generation_in_progress", "summary_only"): 3},
            FIXED_NOW_MS,
        )
    code, written, err = cli_in_process(
        capsys, "diagram", "--traffic", "--db", db_location, "--out", str(out)
    )
    assert code == 0, err
    names = {Path(line).name for line in written.split()}
    assert {"runtime_status.traffic.mmd", "runtime_admin.traffic.mmd"} <= names
    assert not names & set(committed)
    assert all(out.joinpath(name).read_bytes() == body for name, body in committed.items())
    mermaid = out.joinpath("runtime_status.traffic.mmd").read_text()
    assert "container_oom [cas missed] 3" in mermaid
    assert "3 health events from 2023-11-14T22:00 to " in mermaid  # the window it covers
    for args, hint in [
        (["--traffic", "--since", "soon"], "--since"),
        (["--traffic", "--since", "0h"], "--since"),
        (["--traffic", "--since", "1.5h"], "--since"),
        (["--traffic", "--since", "91d"], "--since"),  # beyond the 90 days kept
        (["--traffic", "--since", "999999999999d"], "--since"),
        (["--traffic", "--since", "\u0661h"], "--since"),  # an Arabic-Indic 1: not a digit here
        (["--since", "7d"], "--since"),
        (["--json"], "--json"),
    ]:
        code, _, err = cli_in_process(
            capsys, "diagram", *args, "--db", db_location, "--out", str(out)
        )
        assert code == 2 and hint in err and len(err.strip().splitlines()) == 1, err
    code, _, err = cli_in_process(capsys, "diagram", "--db", db_location, "--out", str(out))
    assert code == 2 and "--db" in err and "only with --traffic" in err  # not silently ignored


def test_the_traffic_diagrams_parse_and_say_what_they_leave_out(
    db_location: str, db: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Mermaid front matter's title is one quoted YAML scalar (a title with ': ' in it
    broke Mermaid's parser); counts on edges this release does not have (a newer one wrote
    them) are drawn nowhere, and both the legends and stderr say how many."""
    with db.write() as sql:
        traffic.add(
            sql, {traffic.Edge("container_rebooted", "running", "running"): 7}, FIXED_NOW_MS
        )
        traffic.add(sql, {traffic.Edge("probe_failed", "running", "summary_only"): 2}, FIXED_NOW_MS)
    out = tmp_path / "out"
    code, _, err = cli_in_process(
        capsys, "diagram", "--traffic", "--db", db_location, "--out", str(out)
    )
    assert code == 0
    assert "7 counted on edges this release's table does not have" in err
    for name in ("runtime_status.traffic.mmd", "runtime_admin.traffic.mmd"):
        text = out.joinpath(name).read_text()
        front = text.split("---\n")[1]
        [title] = [line for line in front.splitlines() if line.startswith("title: ")]
        assert json.loads(title.removeprefix("title: ")).startswith("healthfsm runtime status")
        assert "not drawn: 7 counted" in text
    code, out_json, _ = cli_in_process(
        capsys, "diagram", "--traffic", "--json", "--db", db_location
    )
    report = json.loads(out_json)
    assert [(e["trigger"], e["count"]) for e in report["unknown_edges"]] == [
        ("container_rebooted", 7)
    ]
    missed = {(e["trigger"], e["from_status"]): e["cas_missed"] for e in report["edges"]}
    assert missed[("container_exited", "stopped")] and not missed[("probe_failed", "stopped")]
    assert not missed[("container_exited", "running")]
    with db.write() as sql:  # the suite's edge coverage reads this store: no foreign edge left
        sql.execute("DELETE FROM runtime_traffic WHERE trigger = 'container_rebooted'")


def test_explain_on_a_narrow_terminal_prints_a_block_per_change(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    from rich.console import Console

    from consumer import display
    from consumer.operations.history import explain

    text = io.StringIO()
    monkeypatch.setattr(display, "console", lambda: Console(width=80, file=text))
    row = {
        "id": 1,
        "entry_id": "1796640058918-0",
        "cause": "container_oom",
        "at_ms": 1,
        "from_status": "generation_in_progress",
        "to_status": "generation_in_progress",
        "engine_health": "oom",
        "snapshot": 1,
    }
    display.explained_history(explain([row]), "history of g, explained")
    lines = text.getvalue().splitlines()
    assert "1796640058918-0  container_oom" in lines[2]  # the id whole, on the head line
    assert any("[cas] missed" in line for line in lines)
    assert all(len(line) <= 80 for line in lines)
