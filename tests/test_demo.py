"""``healthfsm demo`` shows its input: every entry it writes, each marked with what it
showed, and each mark held here to the outcome the other tables print. ``--postgres`` runs
the same on a private PostgreSQL and leaves nothing behind (``--keep`` only until Ctrl-C)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from consumer.contract import constants as c
from consumer.devtools import demo, embedded_pg
from statemachine import REACTIONS, EventType
from tests.processes import HEALTHFSM, cli_in_process, run_cli, wait_for

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")

S = demo.Shows
MEANT = [
    S.NEW_SUMMARY,
    S.NEW_SUMMARY,
    S.NEW_SUMMARY,
    S.REPEATED_SUMMARY,
    S.STATUS_CHANGE,
    S.CAS_MISS,
    S.MALFORMED,
    S.STATUS_CHANGE,
    S.RECOVERY,
    S.UNKNOWN_GAME,
    S.NEW_SUMMARY,
]
"""What each entry of ``demo.BURST`` is there to show."""

ENTRIES = f"{c.HEALTH_STREAM}: the entries written, and what each one showed"
SNAPSHOTS = f"{c.LOBBY_STREAM} (runtime_snapshot_update)"

Table = list[dict[str, str]]


def tables(out: str) -> dict[str, Table]:
    """The rich tables in ``out`` by title, each row a dict by column heading."""
    found: dict[str, Table] = {}
    lines = out.splitlines()
    for number, line in enumerate(lines[:-1]):
        if lines[number + 1].startswith("┏"):
            found[line.strip()] = _rows(lines[number + 2 :])
    return found


def _rows(lines: list[str]) -> Table:
    heading: list[str] = []
    rows: Table = []
    for line in lines:
        if line.startswith("└"):
            break
        if line[:1] in ("┃", "│"):
            cells = [cell.strip() for cell in line[1:-1].split(line[0])]
            if line[0] == "┃":
                heading = cells
            else:
                rows.append(dict(zip(heading, cells, strict=True)))
    return rows


def kind(shows: str) -> demo.Shows:
    """The kind a mark names: its first words (no kind's name begins another's)."""
    [named] = [k for k in demo.Shows if shows.startswith(k.value)]
    return named


def _status_after(registered: Table, entries: Table) -> list[str]:
    """Each entry's game status before it, from the registered games and the marks."""
    status = {row["game_id"]: row["status"] for row in registered}
    before = []
    for row in entries:
        before.append(status.get(row["game_id"], "-"))
        if " -> " in row["shows"]:
            status[row["game_id"]] = row["shows"].rsplit(" ", 1)[-1]
    return before


def check_marks(out: str) -> None:
    """Every entry is printed with the mark the script means, and every mark is what the
    snapshots and dead letters printed after it say happened."""
    printed = tables(out)
    entries = printed[ENTRIES]
    assert [(r["game_id"], r["event_type"]) for r in entries] == [b[:2] for b in demo.BURST]
    assert [kind(r["shows"]) for r in entries] == MEANT, [r["shows"] for r in entries]
    snapshots = {r["source_entry_id"]: r for r in printed[SNAPSHOTS]}
    dead = {r["entry_id"]: r["reason"] for r in printed["dead letters"]}
    befores = _status_after(printed["registered games"], entries)
    for row, meant, before in zip(entries, MEANT, befores, strict=True):
        _check_one(row, meant, before, snapshots.get(row["entry_id"]), dead.get(row["entry_id"]))
    assert len(snapshots) == MEANT.count(S.NEW_SUMMARY) + 4  # 2 changes, recovery, CAS miss


def _check_one(
    row: dict[str, str], meant: S, before: str, snapshot: dict[str, str] | None, dead: str | None
) -> None:
    summary = REACTIONS[EventType(row["event_type"])].summary.value
    if meant in (S.MALFORMED, S.UNKNOWN_GAME):
        wanted = "unknown_game" if meant is S.UNKNOWN_GAME else "invalid_field"
        assert dead == wanted and snapshot is None and row["shows"].endswith(wanted)
        return
    assert dead is None
    if meant is S.REPEATED_SUMMARY:  # the debounce swallowed it: no snapshot at all
        assert snapshot is None
        return
    assert snapshot is not None and snapshot["engine_health_summary"] == summary
    if meant in (S.STATUS_CHANGE, S.RECOVERY):
        assert row["shows"].endswith(f"{before} -> {snapshot['runtime_status']}")
        assert snapshot["runtime_status"] != before
    else:  # a CAS miss or a new summary: the status the game had stays, the summary is new
        assert snapshot["runtime_status"] == before
    if meant is S.CAS_MISS:
        expected = REACTIONS[EventType(row["event_type"])].cas
        assert expected is not None and expected[0].value != before
        assert row["shows"] == f"compare-and-swap miss: {before} kept, summary only"


def test_the_demo_prints_each_entry_with_what_it_showed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = cli_in_process(capsys, "demo")
    assert code == 0, err
    check_marks(out)
    assert "showed no" not in out  # the demo's own check of the README's promises
    assert out.index(ENTRIES) < out.index("consumed 11 entries") < out.index("runtime records")


def test_the_marks_are_the_words_of_the_readme_promises() -> None:
    paragraph = README[README.index("The demo prints") :].split("\n\n")[0]
    paragraph = " ".join(paragraph.split())
    for kind in demo.PROMISED:
        assert kind.value in paragraph, kind


def test_a_recovery_is_a_change_back_and_a_repeat_has_no_snapshot() -> None:
    """The classifier on its own: what the outcome says, not what the script meant."""
    entry = demo.Written("1-0", "g", "probe_recovered", "1")
    change = {"from_status": "engine_unreachable", "to_status": "running"}
    outcome = demo.Outcome(None, dict(change), {"runtime_status": "running"})
    assert demo.shows(entry, outcome, set())[0] is S.STATUS_CHANGE
    back = {("g", "running", "engine_unreachable")}
    assert demo.shows(entry, outcome, back)[0] is S.RECOVERY
    repeat = demo.Written("2-0", "g", "probe_failed", "2")
    assert demo.shows(repeat, demo.Outcome(None, None, None), set())[0] is S.REPEATED_SUMMARY
    assert demo.shows(repeat, demo.Outcome(None, None, {}), set())[0] is S.NEW_SUMMARY
    missed = demo.Written("3-0", "g", "container_exited", "3")
    kept = {"from_status": "stopped", "to_status": "stopped"}
    assert demo.shows(missed, demo.Outcome(None, kept, {}), set()) == (
        S.CAS_MISS,
        "compare-and-swap miss: stopped kept, summary only",
    )


# --postgres


@pytest.fixture
def own_tmp() -> Iterator[Path]:
    """A temp folder for the demo alone (its TMPDIR), searchable by the server's user:
    whatever the demo leaves behind (a server's folder, pgserver's lock file) is in it."""
    folder = Path(tempfile.mkdtemp(prefix="healthfsm-test-demo-"))
    folder.chmod(0o755)
    yield folder
    for pid in _running_from(str(folder)):  # a failed test's servers: not left for ever
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)


def _accounts() -> tuple[str, str]:
    return Path("/etc/passwd").read_text(), Path("/etc/group").read_text()


def _running_from(folder: str) -> list[int]:
    """Processes that name ``folder`` in their command line (PostgreSQL) or work in it
    (Redis): a server left running."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit():
                continue
            where = (proc / "cmdline").read_text(errors="replace") + os.readlink(proc / "cwd")
        except OSError:
            continue
        if folder in where:
            pids.append(int(proc.name))
    return pids


def _server_folder(out: str) -> str:
    match = re.search(r"\(folder (\S+), removed at the end\)", out)
    assert match, out
    return match.group(1)


def _normalised(rows: Table) -> list[dict[str, str]]:
    """A table's rows without what differs between runs: entry ids and times."""
    ids_and_times = re.compile(r"\d{13}-\d+|\d{4}-\d\d-\d\dT[\d:.]+Z")
    return [{k: ids_and_times.sub("*", v) for k, v in row.items()} for row in rows]


def test_demo_on_postgres_shows_the_same_and_leaves_nothing_behind(own_tmp: Path) -> None:
    accounts = _accounts()
    result = run_cli("demo", "--postgres", env={"TMPDIR": str(own_tmp)}, timeout=120)
    assert result.returncode == 0, result.stderr
    check_marks(result.stdout)
    folder = _server_folder(result.stdout)
    assert "database postgresql://postgres:***@127.0.0.1:" in result.stdout
    assert Path(folder).parent == own_tmp and _running_from(folder) == []
    assert list(own_tmp.iterdir()) == [] and _accounts() == accounts
    on_sqlite = run_cli("demo", timeout=60)
    assert on_sqlite.returncode == 0, on_sqlite.stderr
    same = [ENTRIES, "runtime records", SNAPSHOTS, "dead letters"]
    pg_tables, sqlite_tables = tables(result.stdout), tables(on_sqlite.stdout)
    for title in same:
        assert _normalised(pg_tables[title]) == _normalised(sqlite_tables[title]), title


def test_a_missing_pgserver_wheel_is_one_line_naming_the_extra(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, own_tmp: Path
) -> None:
    monkeypatch.setattr(embedded_pg, "find_spec", lambda name: None)
    monkeypatch.setattr(tempfile, "tempdir", str(own_tmp))
    code, out, err = cli_in_process(capsys, "demo", "--postgres")
    assert code == 1 and out == "" and err.count("\n") == 1, err
    assert "pgserver" in err and "'demo' extra" in err
    assert list(own_tmp.iterdir()) == []


def test_an_error_in_the_postgres_demo_still_removes_its_servers(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, own_tmp: Path
) -> None:
    def fail(*_: object) -> None:
        raise OSError("the demo failed half-way")

    monkeypatch.setattr(demo, "_play", fail)
    monkeypatch.setattr(tempfile, "tempdir", str(own_tmp))
    code, out, err = cli_in_process(capsys, "demo", "--postgres")
    assert code == 1 and err == "healthfsm: error: the demo failed half-way\n", err
    folder = _server_folder(out)
    assert Path(folder).parent == own_tmp and _running_from(folder) == []
    assert list(own_tmp.iterdir()) == []


def test_a_signal_while_postgres_starts_leaves_nothing_behind(own_tmp: Path) -> None:
    """SIGTERM as soon as the server's folder exists (initdb at work): the demo kills
    initdb with the children it started, and removes the folder."""
    process = subprocess.Popen(
        [*HEALTHFSM, "demo", "--postgres"],
        env={**os.environ, "TMPDIR": str(own_tmp)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: list(own_tmp.glob("healthfsm-pg-*")), 60, "the server's folder")
        process.terminate()
        assert process.wait(60) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert list(own_tmp.iterdir()) == [] and _running_from(str(own_tmp)) == []


@pytest.mark.parametrize(
    ("argv", "option"),
    [(["--keep"], "--keep"), (["--postgres", "--db", "x.db"], "--db")],
)
def test_keep_needs_postgres_and_postgres_takes_no_db(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    argv: list[str],
    option: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = cli_in_process(capsys, "demo", *argv)
    assert code == 2 and out == "" and option in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def _read_until(process: subprocess.Popen[bytes], marker: str, timeout_s: float = 90) -> str:
    """What ``process`` printed up to ``marker`` (read unbuffered: select sees it all)."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + timeout_s
    while marker.encode() not in seen:
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        chunk = os.read(fd, 65536) if ready else b""
        assert chunk, f"no {marker!r} in {timeout_s}s; printed:\n{seen.decode()}"
        seen += chunk
    return seen.decode()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_keep_leaves_both_servers_for_a_trial_until_a_signal(signum: int, own_tmp: Path) -> None:
    accounts = _accounts()
    process = subprocess.Popen(
        [*HEALTHFSM, "demo", "--postgres", "--keep"],
        env={**os.environ, "TMPDIR": str(own_tmp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=0,
    )
    try:
        out = _read_until(process, "Press Ctrl-C")
        env = dict(re.findall(r"export (\w+)='([^']+)'", out))
        assert set(env) == {"HEALTHFSM_DB", "HEALTHFSM_REDIS_URL"}
        migrated = run_cli("migrate", env=env)
        assert migrated.returncode == 0 and '"from_version": 0' in migrated.stdout
        assert run_cli("runtime", "add", "g1", env=env).returncode == 0
        trial = redis.Redis.from_url(env["HEALTHFSM_REDIS_URL"])
        event = {"game_id": "g1", "event_type": "container_exited", "occurred_at_ms": "1"}
        trial.xadd(c.HEALTH_STREAM, event)  # type: ignore[arg-type]
        trial.close()
        drained = run_cli("consume", "--drain", env=env)
        assert drained.returncode == 0, drained.stderr  # the trial's entry alone, no demo's
        listed = run_cli("runtime", "list", "--json", env=env)
        assert [(r["game_id"], r["status"]) for r in json.loads(listed.stdout)] == [
            ("g1", "engine_unreachable")
        ]
        process.send_signal(signum)
        assert process.wait(60) == 0
    finally:  # a failed assertion still lets the demo clean up (SIGKILL would orphan both)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        assert process.stdout is not None
        process.stdout.close()
    folder = _server_folder(out)
    assert Path(folder).parent == own_tmp and _running_from(folder) == []
    assert list(own_tmp.iterdir()) == [] and _accounts() == accounts
