"""The command line: output contracts, exit codes, and one-line errors for every bad argument."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import redis

from consumer.cli import EXIT_CONFLICT, EXIT_ERROR, EXIT_NOT_ALLOWED, EXIT_USAGE, main
from tests.conftest import published, xadd_event


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def dbarg(tmp_path: Path) -> list[str]:
    return ["--db", str(tmp_path / "cli.db")]


def test_add_show_list(capsys: pytest.CaptureFixture[str], dbarg: list[str]) -> None:
    assert run(capsys, "runtime", "add", "g1", "--turn", "4", *dbarg)[0] == 0
    assert run(capsys, "runtime", "add", "g0", "--status", "starting", *dbarg)[0] == 0
    code, out, _ = run(capsys, "runtime", "show", "g1", *dbarg)
    shown = json.loads(out)
    assert code == 0 and out.count("\n") == 1
    assert {k: shown[k] for k in ("game_id", "status", "engine_health", "current_turn")} == {
        "game_id": "g1",
        "status": "running",
        "engine_health": "",
        "current_turn": 4,
    }
    assert isinstance(shown["updated_at_ms"], int)
    code, out, _ = run(capsys, "runtime", "list", "--json", *dbarg)
    assert [r["game_id"] for r in json.loads(out)] == ["g0", "g1"]
    code, out, _ = run(capsys, "runtime", "list", *dbarg)
    assert code == 0 and "g0" in out and "starting" in out
    code, out, _ = run(capsys, "runtime", "list", "--json", "--status", "starting", *dbarg)
    assert [r["game_id"] for r in json.loads(out)] == ["g0"]


def test_db_from_environment(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEALTHFSM_DB", str(tmp_path / "env.db"))
    assert run(capsys, "runtime", "add", "g")[0] == 0
    assert (tmp_path / "env.db").exists()


def test_set_status_success_conflict_and_not_allowed(
    capsys: pytest.CaptureFixture[str], dbarg: list[str]
) -> None:
    run(capsys, "runtime", "add", "g", *dbarg)
    code, out, _ = run(
        capsys,
        "runtime",
        "set-status",
        "g",
        "--from",
        "running",
        "--to",
        "generation_in_progress",
        *dbarg,
    )
    assert code == 0 and json.loads(out)["status"] == "generation_in_progress"
    code, _, err = run(
        capsys, "runtime", "set-status", "g", "--from", "running", "--to", "stopped", *dbarg
    )
    assert code == EXIT_CONFLICT
    assert err.count("\n") == 1 and "generation_in_progress" in err
    code, _, err = run(
        capsys,
        "runtime",
        "set-status",
        "g",
        "--from",
        "generation_in_progress",
        "--to",
        "finished",
        *dbarg,
    )
    assert code == EXIT_NOT_ALLOWED
    assert err.count("\n") == 1 and "is generation_in_progress" in err
    code, out, _ = run(capsys, "runtime", "show", "g", *dbarg)
    assert json.loads(out)["status"] == "generation_in_progress"


@pytest.mark.parametrize(
    ("argv", "code", "fragment"),
    [
        (["runtime", "add", "g", "--status", "bogus"], EXIT_USAGE, "'bogus' is not one of"),
        (["runtime", "add", "g", "--turn", "-1"], EXIT_USAGE, "--turn"),
        (["runtime", "add", "g", "--turn", "x"], EXIT_USAGE, "--turn"),
        (["runtime", "add", " "], EXIT_USAGE, "must not be blank"),
        (["runtime", "show"], EXIT_USAGE, "Missing argument"),
        (["runtime", "show", "nope"], EXIT_ERROR, "no runtime record for game 'nope'"),
        (["runtime", "set-status", "g", "--from", "running"], EXIT_USAGE, "--to"),
        (["runtime", "set-status", "g", "--from", "x", "--to", "running"], EXIT_USAGE, "--from"),
        (
            ["runtime", "set-status", "nope", "--from", "running", "--to", "stopped"],
            EXIT_ERROR,
            "nope",
        ),
        (["consume", "--batch-size", "0"], EXIT_USAGE, "--batch-size"),
        (["consume", "--block-ms", "-5"], EXIT_USAGE, "--block-ms"),
        (["consume", "--log-format", "xml"], EXIT_USAGE, "--log-format"),
        (["consume", "--log-level", "loud"], EXIT_USAGE, "--log-level"),
        (["consume", "--stream", " "], EXIT_USAGE, "blank"),
        (["consume", "--lobby-stream", "runtime:health_events"], EXIT_USAGE, "--lobby-stream"),
        (["consume", "--start-from", "soon"], EXIT_USAGE, "--start-from"),
        (["consume", "--lease-ttl", "0.01"], EXIT_USAGE, "--lease-ttl"),
        (["consume", "--on-stream-reset", "shrug"], EXIT_USAGE, "--on-stream-reset"),
        (["consume", "--drain", "--redis-url", "ftp://x"], EXIT_USAGE, "not a Redis URL"),
        (["consume", "--redis-url", "redis://h:notaport/0"], EXIT_USAGE, "port is not a number"),
        (
            ["consume", "--redis-timeout", "9", "--lease-ttl", "1"],
            EXIT_USAGE,
            "use at most 0.16,",  # rounded down: the value it names is one it accepts
        ),
        (["nonsense"], EXIT_USAGE, "No such command"),
        (["runtime", "show", "g", "--bogus"], EXIT_USAGE, "--bogus"),
    ],
)
def test_bad_arguments_get_one_line_and_no_traceback(
    capsys: pytest.CaptureFixture[str],
    dbarg: list[str],
    argv: list[str],
    code: int,
    fragment: str,
) -> None:
    run(capsys, "runtime", "add", "g", *dbarg)
    got, _, err = run(capsys, *argv, *dbarg)
    assert got == code, err
    assert err.count("\n") == 1, err
    assert fragment in err and "Traceback" not in err
    assert err.startswith("healthfsm")


@pytest.mark.parametrize(
    "group", ["", "runtime", "offsets", "partitions", "dead-letters", "outbox"]
)
def test_a_command_group_without_a_subcommand_prints_what_it_offers(
    capsys: pytest.CaptureFixture[str], group: str
) -> None:
    """Nothing on stdout and exit 2, like any usage error, with the group's usage and its
    command list on stderr (not an empty screen)."""
    code = main([group] if group else [])
    out, err = capsys.readouterr()
    assert code == EXIT_USAGE and out == ""
    assert f"Usage: healthfsm {group}".rstrip() in err and "Commands:" in err, err


def test_existing_game_and_missing_database(
    capsys: pytest.CaptureFixture[str], dbarg: list[str], tmp_path: Path
) -> None:
    run(capsys, "runtime", "add", "g", *dbarg)
    code, _, err = run(capsys, "runtime", "add", "g", *dbarg)
    assert code == EXIT_ERROR and "already has a runtime record" in err
    code, _, err = run(capsys, "runtime", "show", "g", "--db", str(tmp_path / "none.db"))
    assert code == EXIT_ERROR and "does not exist" in err and err.count("\n") == 1
    assert not (tmp_path / "none.db").exists()
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    code, _, err = run(capsys, "runtime", "list", "--db", str(tmp_path / "junk.db"))
    assert code == EXIT_ERROR and err.count("\n") == 1


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from consumer.cli import app

    def walk(group: object, path: list[str]) -> list[list[str]]:
        found = []
        for name, command in getattr(group, "commands", {}).items():
            found.append([*path, name])
            found += walk(command, [*path, name])
        return found

    commands = walk(typer.main.get_command(app), [])
    assert {"consume", "diagram", "demo"} <= {c[0] for c in commands}
    assert ["runtime", "set-status"] in commands
    for command in commands:
        assert main([*command, "--help"]) == 0
        out, _ = capsys.readouterr()
        assert len(out.strip()) > 60, command
        # every option says what it takes, flags take nothing, and no default is cut short
        assert "<bool>" not in out and "…" not in out, (command, out)
        placeholder = r"--[\w-]+ <(int|float|str|path|int range|float range)>"
        assert not re.search(placeholder, out), (command, out)


def test_consume_options_come_from_the_settings_model(capsys: pytest.CaptureFixture[str]) -> None:
    """Each setting with help text is an option of ``consume``, with that help and default."""
    from consumer.settings import ConsumerSettings, flag

    assert main(["consume", "--help"]) == 0
    out = " ".join(capsys.readouterr()[0].split())
    described = {n: f for n, f in ConsumerSettings.model_fields.items() if f.description}
    assert len(described) >= 18
    for name, field in described.items():
        assert flag(name) in out, name
        assert " ".join(str(field.description).split()) in out, name
        if field.default not in (None, False):
            assert f"default: {field.default}" in out, name
        bounds = {type(rule).__name__: rule for rule in field.metadata}
        if "Ge" in bounds and "Le" in bounds:
            low, high = bounds["Ge"].ge, bounds["Le"].le
            assert f"{low}<=x<={high}" in out, name
        elif "Ge" in bounds:
            assert f"x>={bounds['Ge'].ge}" in out, name


def test_help_shows_whole_defaults_at_80_columns(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["consume", "--help"]) == 0
    out, _ = capsys.readouterr()
    assert "redis://localhost:6379/0" in out and "runtime:health_events" in out
    assert max(len(line) for line in out.splitlines() if "<" not in line) <= 80


def test_consume_drain_end_to_end(
    capsys: pytest.CaptureFixture[str], dbarg: list[str], redis_url: str, rclient: redis.Redis
) -> None:
    run(capsys, "runtime", "add", "g", *dbarg)
    entry = xadd_event(rclient, "g", "container_oom")
    rclient.xadd("runtime:health_events", {"junk": "1"})
    code, _, _ = run(capsys, "consume", "--drain", "--redis-url", redis_url, *dbarg)
    assert code == 0
    assert [s["source_entry_id"] for s in published(rclient)] == [entry]
    code, out, _ = run(capsys, "runtime", "show", "g", *dbarg)
    assert json.loads(out)["status"] == "engine_unreachable"


def test_consume_with_custom_names(
    capsys: pytest.CaptureFixture[str], dbarg: list[str], redis_url: str, rclient: redis.Redis
) -> None:
    run(capsys, "runtime", "add", "g", *dbarg)
    xadd_event(rclient, "g", "probe_failed", stream="in:x")
    code, _, _ = run(
        capsys,
        "consume",
        "--drain",
        "--redis-url",
        redis_url,
        "--stream",
        "in:x",
        "--lobby-stream",
        "out:x",
        "--label",
        "custom",
        "--batch-size",
        "1",
        *dbarg,
    )
    assert code == 0
    assert len(published(rclient, "out:x")) == 1 and published(rclient) == []


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    code, out, err = run(capsys, "--version")
    assert code == 0 and out == f"healthfsm {version('healthfsm')}\n" and err == ""


def test_history_table_shows_each_row_id(
    capsys: pytest.CaptureFixture[str], dbarg: list[str]
) -> None:
    run(capsys, "runtime", "add", "g", *dbarg)
    run(capsys, "runtime", "set-status", "g", "--from", "running", "--to", "stopped", *dbarg)
    code, out, _ = run(capsys, "runtime", "history", "g", "--json", *dbarg)
    [row] = json.loads(out)
    code, out, _ = run(capsys, "runtime", "history", "g", *dbarg)
    assert code == 0 and f"│ {row['id']} " in out  # the first column carries the row id


def test_tables_on_a_pipe_keep_rows_whole(
    capsys: pytest.CaptureFixture[str], dbarg: list[str]
) -> None:
    long_id = "game-" + "x" * 120
    run(capsys, "runtime", "add", long_id, "--status", "generation_in_progress", *dbarg)
    code, out, _ = run(capsys, "runtime", "list", *dbarg)
    assert code == 0
    [row] = [line for line in out.splitlines() if long_id in line]
    assert "generation_in_progress" in row  # one line, nothing folded at 80 columns


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--redis-url", "http://127.0.0.1:6379/0"], "not a Redis URL"),
        (["--redis-url", "redis://127.0.0.1:6379/abc"], "database 'abc'"),
        (["--redis-url", "redis://127.0.0.1:6379/0", "--redis-ca", "ca.pem"], "rediss://"),
        (
            ["--redis-url", "rediss://127.0.0.1:6379/0", "--redis-ca", "/no/such/ca.pem"],
            "/no/such/ca.pem",
        ),
    ],
)
def test_redis_options_that_cannot_work_are_usage_errors(
    capsys: pytest.CaptureFixture[str], dbarg: list[str], extra: list[str], named: str
) -> None:
    run(capsys, "runtime", "add", "g", *dbarg)
    for command in (["consume", "--drain"], ["check"]):
        code, _, err = run(capsys, *command, *extra, *dbarg)
        assert code == EXIT_USAGE and named in err and err.count("\n") == 1, err


def test_a_metrics_port_in_use_is_named(
    capsys: pytest.CaptureFixture[str], dbarg: list[str], redis_url: str
) -> None:
    import socket

    run(capsys, "runtime", "add", "g", *dbarg)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run(
            capsys,
            "consume",
            "--drain",
            "--redis-url",
            redis_url,
            "--metrics-port",
            str(port),
            *dbarg,
        )
    assert code == EXIT_ERROR and f"127.0.0.1:{port}" in err and "--metrics-port" in err


def test_tables_show_times_in_utc_and_json_keeps_milliseconds(
    capsys: pytest.CaptureFixture[str], dbarg: list[str]
) -> None:
    from consumer.runtime.clock import format_ms

    run(capsys, "runtime", "add", "g", *dbarg)
    _, out, _ = run(capsys, "runtime", "list", "--json", *dbarg)
    [row] = json.loads(out)
    assert isinstance(row["updated_at_ms"], int)
    code, out, _ = run(capsys, "runtime", "list", *dbarg)
    assert code == 0 and "updated_at (UTC)" in out and format_ms(row["updated_at_ms"]) in out
    run(capsys, "runtime", "set-status", "g", "--from", "running", "--to", "stopped", *dbarg)
    _, out, _ = run(capsys, "runtime", "history", "g", *dbarg)
    assert "at (UTC)" in out and format_ms(row["updated_at_ms"])[:10] in out


def test_fault_injection_needs_the_test_only_switch(
    capsys: pytest.CaptureFixture[str], dbarg: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run(capsys, "runtime", "add", "g", *dbarg)
    monkeypatch.setenv("HEALTHFSM_INJECT_FAULT", "before_commit:1:exit")
    code, _, err = run(capsys, "consume", "--drain", *dbarg)
    assert code == EXIT_USAGE and "HEALTHFSM_TEST_HOOKS=1" in err and err.count("\n") == 1
