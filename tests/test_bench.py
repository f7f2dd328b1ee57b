"""``healthfsm bench`` end to end on a small workload: every figure is there and consistent."""

from __future__ import annotations

import json

import pytest
import redis

from consumer.cli import main
from consumer.devtools.bench import BenchConfig, run_bench, workload
from consumer.settings import default


def test_workload_is_the_documented_hard_mix() -> None:
    events = list(workload(20_000, 500, seed=3))
    malformed = sum(e["occurred_at_ms"] == "1e3" for e in events) / len(events)
    terminal = sum(
        e["event_type"].startswith("container_") and e["event_type"] != "container_started"
        for e in events
    ) / len(events)
    assert 0.005 < malformed < 0.015
    assert 0.03 < terminal < 0.07
    assert list(workload(100, 500, seed=3)) == events[:100]  # seeded: the same run twice


def test_bench_reports_medians_of_rounds_and_cleans_up(
    redis_url: str, rclient: redis.Redis
) -> None:
    cfg = BenchConfig(
        events=3000,
        games=60,
        batch_size=200,
        single_events=300,
        rate=400,
        steady_seconds=0.5,
        memory_events=2000,
        rounds=3,
    )
    lines: list[str] = []
    report = run_bench(cfg, redis_url, lines.append)
    assert len(report.rounds) == 3
    drains = sorted(r["drain_events_per_s"] for r in report.rounds)
    assert report.drain_events_per_s == drains[1]
    ratios = sorted(r["ratio_vs_single"] for r in report.rounds)
    assert report.ratio_vs_single == ratios[1]
    assert all(
        r["ratio_vs_single"] == pytest.approx(r["drain_events_per_s"] / r["single_events_per_s"])
        for r in report.rounds
    )
    assert {r["rejected"] for r in report.rounds} == {report.rejected}  # same workload
    assert {r["snapshot_share"] for r in report.rounds} == {report.snapshot_share}
    assert 0.6 < report.snapshot_share < 0.9
    assert 0 < report.rejected < 0.02 * cfg.events
    assert report.floor_events_per_s > 0 and report.share_of_floor > 0
    assert set(report.steady_latency_ms) == {"p50", "p90", "p99", "max"}
    assert report.steady_latency_ms["p50"] <= report.steady_latency_ms["p99"]
    assert 5 < report.memory_peak_rss_mb < 1000
    assert set(report.targets) == {  # the targets in force, no retired one
        "drain >= 50,000 events/s",
        "drain >= 1/5 of the bare floor",
        "p99 XADD->commit < 50 ms",
        "peak RSS < 150 MB",
    }
    assert any("round 3/3" in line for line in lines)
    assert not list(rclient.scan_iter(match="healthfsm-bench:*"))  # scratch keys removed


def test_bench_cli_prints_json(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "bench",
            "--redis-url",
            redis_url,
            "--events",
            "1000",
            "--games",
            "20",
            "--single-events",
            "100",
            "--steady-seconds",
            "0",
            "--memory-events",
            "0",
            "--json",
        ]
    )
    out, _ = capsys.readouterr()
    assert code == 0
    report = json.loads(out)
    assert report["config"]["batch_size"] == default("batch_size")
    assert report["config"]["rounds"] == 1
    assert report["drain_events_per_s"] > 0 and len(report["rounds"]) == 1
    assert "p99 XADD->commit < 50 ms" not in report["targets"]  # skipped, not judged


def test_bench_refuses_zero_rounds_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--rounds", "0"]) == 2
    _, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and "--rounds" in err


def test_bench_on_postgres_uses_scratch_schemas_and_drops_them(
    capsys: pytest.CaptureFixture[str], redis_url: str
) -> None:
    import psycopg

    from tests import pg

    base = pg.server().url()
    argv = ["bench", "--db", base, "--redis-url", redis_url, "--events", "2000", "--games", "50"]
    argv += ["--single-events", "200", "--steady-seconds", "0", "--memory-events", "1000"]
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    assert report["backend"] == "postgres" and report["drain_events_per_s"] > 0
    assert "drain >= 15,000 events/s" in report["targets"]
    assert pg.server().url().split("@")[0].split(":")[-1] not in out  # the password is not shown
    with psycopg.connect(base) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'healthfsm_bench_%'"
        ).fetchone()
    assert left == (0,)


def test_bench_db_takes_only_a_postgres_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--db", "some.db"]) == 2
    assert "postgresql:// URL" in capsys.readouterr().err


def test_bench_workers_shares_one_stream_and_splits_each_workers_cpu(
    redis_url: str, rclient: redis.Redis
) -> None:
    from consumer.devtools.bench_shared import SharedConfig, run_shared

    cfg = SharedConfig(workers=[2], partitions=4, events=3000, games=60, batch_size=200)
    report = run_shared(cfg, redis_url)
    assert [run.workers for run in report.runs] == [1, 2]
    one, two = report.runs
    assert [w.entries_read for w in one.per_worker] == [3000]
    assert [w.entries_read for w in two.per_worker] == [3000, 3000]  # each reads everything
    applied = [w.applied for w in two.per_worker]
    assert sum(applied) == one.per_worker[0].applied and min(applied) > 0  # shared, once
    for w in one.per_worker + two.per_worker:
        assert w.cpu_ms > 0 and 0 < w.apply_ms <= w.cpu_ms
        assert abs(w.cpu_ms - w.apply_ms - w.read_skip_ms) < 0.05
    assert len(report.targets) == 2
    assert not list(rclient.scan_iter(match="healthfsm-bench:*"))
