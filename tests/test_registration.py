"""Registering games in bulk: many ids, or a file of them, in one transaction or none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from store import Store, records
from tests.processes import cli_in_process, run_cli

pytestmark = pytest.mark.backends("sqlite", "postgres")


def _registered(db: Store) -> list[str]:
    return sorted(record.game_id for record in records.iter_all(db.conn))


def test_many_ids_and_a_file_register_in_one_command(
    capsys: pytest.CaptureFixture[str], db: Store, db_location: str, tmp_path: Path
) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("from-file-1\n\n-\n  spaced  \nfrom-file-2\n")  # '-' is an id in a file
    code, out, err = cli_in_process(
        capsys, "runtime", "add", "a", "b", "--from-file", str(ids), "--db", db_location
    )
    assert code == 0, err
    added = [json.loads(line)["game_id"] for line in out.splitlines()]
    assert added == ["a", "b", "from-file-1", "-", "  spaced  ", "from-file-2"]
    assert _registered(db) == sorted(added)


def test_ids_from_standard_input(db: Store, db_location: str) -> None:
    done = run_cli("runtime", "add", "--from-file", "-", "--db", db_location, input="s1\ns2\n")
    assert done.returncode == 0, done.stderr
    assert _registered(db) == ["s1", "s2"]


def test_an_id_given_twice_or_taken_refuses_the_whole_call_by_name(
    capsys: pytest.CaptureFixture[str], db: Store, db_location: str
) -> None:
    args = ["--db", db_location]
    code, _, err = cli_in_process(capsys, "runtime", "add", "x", "y", "x", *args)
    assert code == 1 and err.count("\n") == 1 and "'x'" in err and "more than once" in err
    assert _registered(db) == []
    assert cli_in_process(capsys, "runtime", "add", "old", *args)[0] == 0
    code, _, err = cli_in_process(capsys, "runtime", "add", "new1", "old", "new2", *args)
    assert code == 1 and err.count("\n") == 1, err
    assert "'old' already has a runtime record; nothing was added" in err
    assert _registered(db) == ["old"]  # neither new1 nor new2


def test_ten_thousand_games_in_one_command(
    capsys: pytest.CaptureFixture[str], db: Store, db_location: str, tmp_path: Path
) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"game-{i}\n" for i in range(10_000)))
    code, out, err = cli_in_process(
        capsys, "runtime", "add", "--from-file", str(ids), "--db", db_location
    )
    assert code == 0, err
    assert len(out.splitlines()) == 10_000 and len(_registered(db)) == 10_000
    code, _, err = cli_in_process(
        capsys, "runtime", "add", "--from-file", str(ids), "--db", db_location
    )
    assert code == 1 and "games 'game-0', 'game-1'" in err and "and 9995 more" in err, err


def test_no_id_at_all_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], db_location: str
) -> None:
    code, _, err = cli_in_process(capsys, "runtime", "add", "--db", db_location)
    assert code == 2 and err.count("\n") == 1 and "GAME_ID" in err, err
