"""The test servers themselves: the PostgreSQL server runs as its own user and group only,
keeps its ``trust`` socket to itself, changes no folder it did not create, and a start that
fails leaves nothing behind. Redis servers remove their folders too."""

from __future__ import annotations

import os
import socket
import stat
import tempfile
from pathlib import Path

import pytest

from consumer.devtools import embedded
from tests import pg
from tests import pg_server as embedded_pg
from tests.conftest import PARENT_MODES_AT_START


def _ours(prefix: str) -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob(f"{prefix}*")}


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


@pytest.mark.skipif(os.geteuid() != 0, reason="as another user the server runs as that user")
def test_the_server_runs_as_its_own_user_and_group_only() -> None:
    import pwd

    server = pg.server()
    assert server.process is not None
    entry = pwd.getpwnam(embedded_pg.SYSTEM_USER)
    status = _status(server.process.pid)
    assert status["Uid"].split()[0] == str(entry.pw_uid)
    assert set(status["Gid"].split()) == {str(entry.pw_gid)}
    assert status["Groups"].split() == []  # not root's group 0, not any other


def test_the_trust_socket_folder_is_open_to_the_server_only() -> None:
    server = pg.server()
    mode = server.root.stat()
    assert stat.S_IMODE(mode.st_mode) == 0o700
    owner = server.user.uid if server.user is not None else os.geteuid()
    assert mode.st_uid == owner
    assert list(server.root.glob(".s.PGSQL.*")), "the socket lives in that folder"
    assert not (server.root / "pwfile").exists()


def test_running_the_servers_changes_no_folder_it_did_not_create() -> None:
    pg.server()
    with embedded.running():
        pass
    changed = {
        str(path): (oct(before), oct(path.stat().st_mode))
        for path, before in PARENT_MODES_AT_START.items()
        if path.stat().st_mode != before
    }
    assert not changed


def test_a_postgres_start_that_fails_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pg.server()  # any copy of the binaries is made once per run, before the count
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(embedded_pg, "free_port", lambda: port)
        before = _ours("healthfsm-pg-")
        with pytest.raises(embedded_pg.PostgresNotAvailable, match="did not start"):
            embedded_pg.start()
    assert _ours("healthfsm-pg-") == before


def test_a_redis_server_removes_its_folder_when_stopped() -> None:
    before = _ours("healthfsm-redis-")
    server = embedded.start()
    assert Path(server.workdir).name not in before
    server.stop()
    server.stop()  # twice is fine
    assert _ours("healthfsm-redis-") == before


def _accounts() -> tuple[str, str]:
    return Path("/etc/passwd").read_text(), Path("/etc/group").read_text()


def test_starting_and_stopping_the_servers_adds_no_user_or_group() -> None:
    """The suite leaves the machine as it found it: the PostgreSQL server runs as a user the
    system already has (``nobody`` under root), and nothing is added for Redis either."""
    before = _accounts()
    server = embedded_pg.start()
    try:
        assert server.process is not None and server.process.poll() is None
    finally:
        server.stop()
    with embedded.running():
        pass
    assert _accounts() == before


def test_a_worker_a_test_left_running_is_stopped(tmp_path: Path) -> None:
    """What the autouse fixture does after every test: a worker retrying a Redis that is
    not there (as after a failed assertion) is stopped, not left for minutes."""
    from store import open_database
    from tests.processes import Consume, wait_for

    open_database(tmp_path / "x.db", create=True).close()
    worker = Consume(
        tmp_path / "left.log",
        *("--redis-url", f"redis://127.0.0.1:{embedded.free_port()}/0"),
        *("--db", str(tmp_path / "x.db")),
    )
    wait_for(lambda: "retrying" in worker.stderr(), what="waiting for a Redis that is not there")
    assert Consume.stop_all() == [worker.pid]
    assert worker.process.poll() is not None and Consume.started == []
