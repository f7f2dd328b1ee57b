"""A private PostgreSQL 16 server on a free loopback port, for the tests (not shipped).

The binaries come from the ``pgserver`` wheel (test extra), so a fresh machine with only
Python needs nothing else. The server is started directly (not through ``pgserver``'s own
manager) because tests need to stop, kill and restart it on the same port, and to log in
over TCP with a password. As root, PostgreSQL refuses to run; it then runs as ``nobody``, a
user every Linux system already has, with that user's group and no other, so the suite
adds no user or group to the machine (``test_embedded_servers`` compares /etc/passwd and
/etc/group before and after). Nothing outside the folders it creates is changed: when that
user cannot reach the wheel (a checkout in root's home folder), the binaries are copied
once to a temp folder it can reach.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from consumer.devtools.embedded import free_port

SUPERUSER = "postgres"
SUPERUSER_PASSWORD = "healthfsm-test"
"""The throwaway server's superuser; it listens on 127.0.0.1 only and lives for one run."""

SYSTEM_USER = "nobody"
"""Who the server runs as under root: an existing unprivileged user, never one we add."""


class PostgresNotAvailable(RuntimeError):
    """The pgserver wheel is missing or its server does not start here."""


def _bin_dir() -> Path:
    """The wheel's ``pginstall/bin``, found without importing ``pgserver`` (its import
    starts a manager we do not use and warns about ``XDG_RUNTIME_DIR``)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresNotAvailable(
            "the pgserver wheel is not installed (pip install pgserver, or the 'test' extra)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@dataclass(frozen=True)
class RunAs:
    """The system user the server runs as (when we are root), with its own group only."""

    name: str
    uid: int
    gid: int

    def popen_args(self) -> dict[str, Any]:
        """``subprocess`` arguments: that user, its primary group, no supplementary groups
        (without ``group`` and ``extra_groups`` a child of root keeps root's groups)."""
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def _run_as() -> RunAs | None:
    """``nobody`` when we are root (PostgreSQL refuses to run as root), else None: the
    current user runs it."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise PostgresNotAvailable(
            f"the tests run PostgreSQL as {SYSTEM_USER!r} under root, and this machine has"
            " no such user; run them as an ordinary user instead"
        ) from None
    return RunAs(SYSTEM_USER, entry.pw_uid, entry.pw_gid)


def _runs_all(user: RunAs, install: Path) -> bool:
    """Whether ``user`` can reach and run the server and initdb (and the libraries they
    load) in ``install``: every parent folder searchable, every file readable."""
    for name in ("postgres", "initdb"):
        try:
            done = subprocess.run(
                [str(install / "bin" / name), "--version"],
                capture_output=True,
                timeout=30,
                **user.popen_args(),
            )
        except (OSError, subprocess.SubprocessError):
            return False
        if done.returncode != 0:
            return False
    return True


_copied_install: Path | None = None


def _install_for(user: RunAs | None) -> Path:
    """The ``pginstall`` folder to run from: the wheel's own when ``user`` can reach it,
    else a copy in a new temp folder that it can (once per process, removed at exit).

    Nothing outside the copy changes: a checkout in root's home folder keeps its modes.
    """
    global _copied_install
    if _copied_install is not None:
        return _copied_install
    wheel = _bin_dir().parent
    if user is None or _runs_all(user, wheel):
        return wheel
    holder = Path(tempfile.mkdtemp(prefix="healthfsm-pg-install-"))
    atexit.register(shutil.rmtree, holder, ignore_errors=True)
    holder.chmod(0o755)
    # the binaries find their libraries at $ORIGIN/../../../pgserver.libs: keep that shape
    copy = holder / "pgserver" / "pginstall"
    shutil.copytree(wheel, copy, symlinks=True)
    libs = wheel.parent.parent / "pgserver.libs"
    if libs.is_dir():
        shutil.copytree(libs, holder / "pgserver.libs", symlinks=True)
    for path in [holder, *holder.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | (0o005 if path.is_dir() else 0o004))
    _copied_install = copy  # once per run, even if it does not help (the next check says so)
    if not _runs_all(user, copy):
        raise PostgresNotAvailable(
            f"user {user.name!r} cannot run the binaries in {copy}: the temp folder"
            f" {holder.parent} must be searchable by it (set TMPDIR to one that is)"
        )
    return copy


@dataclass
class EmbeddedPostgres:
    """A running private server; ``stop()`` ends it and removes its files."""

    root: Path
    port: int
    user: RunAs | None
    durable: bool
    install: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(
        self,
        schema: str | None = None,
        *,
        user: str = SUPERUSER,
        password: str = SUPERUSER_PASSWORD,
        database: str = "postgres",
    ) -> str:
        """A libpq URL over TCP; ``schema`` becomes the connection's ``search_path``."""
        query = f"?options=-csearch_path%3D{quote(schema)}" if schema else ""
        return f"postgresql://{user}:{quote(password)}@127.0.0.1:{self.port}/{database}{query}"

    def socket_url(self, schema: str | None = None, *, database: str = "postgres") -> str:
        """A libpq URL over the Unix socket (``?host=/dir``), where the superuser needs no
        password: cheaper to connect, which tests that open many stores notice."""
        options = f"&options=-csearch_path%3D{quote(schema)}" if schema else ""
        return (
            f"postgresql://{SUPERUSER}@/{database}?host={quote(str(self.root))}"
            f"&port={self.port}{options}"
        )

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the server (again, after ``stop``/``kill``) and wait until it accepts logins."""
        options = ["-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1"]
        options += ["-k", str(self.root), "-c", "max_connections=100"]
        if not self.durable:  # a test server: a crash of the machine loses nothing of value
            options += ["-c", "fsync=off", "-c", "full_page_writes=off"]
        log = (self.root / "postgres.log").open("ab")
        self.process = subprocess.Popen(
            [str(self.install / "bin" / "postgres"), *options],
            stdout=log,
            stderr=log,
            start_new_session=True,
            **(self.user.popen_args() if self.user is not None else {}),
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                tail = (self.root / "postgres.log").read_text(errors="replace")[-2000:]
                raise PostgresNotAvailable(f"postgres did not start:\n{tail}")
            time.sleep(0.05)

    def _ready(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.url(), connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def _signal(self, signum: int, wait_s: float = 30.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signum)
        try:
            process.wait(wait_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop_server(self) -> None:
        """Fast shutdown: open transactions roll back, clients are disconnected."""
        self._signal(signal.SIGINT)

    def kill(self) -> None:
        """SIGKILL the postmaster (its backends follow), as a machine crash would."""
        process = self.process
        if process is not None:  # the backends share the postmaster's process group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """Stop the server and remove its files."""
        self.stop_server()
        shutil.rmtree(self.root, ignore_errors=True)

    def admin(self, sql: str) -> None:
        """Run one statement as the superuser (tests: roles, grants, schemas)."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.encode())


def start(*, durable: bool = False) -> EmbeddedPostgres:
    """initdb a throwaway cluster in a new temp folder and start it on a free port.

    The folder holds the data and the Unix socket, and is open to the server's user only:
    the socket takes ``trust`` logins, so no other local user may reach it (root can). A
    start that fails removes the folder, the password file first.
    """
    user = _run_as()
    install = _install_for(user)
    root = Path(tempfile.mkdtemp(prefix="healthfsm-pg-"))
    secret = root / "pwfile"
    try:
        root.chmod(0o700)
        secret.touch(0o600)
        secret.write_text(SUPERUSER_PASSWORD + "\n")
        if user is not None:
            os.chown(root, user.uid, user.gid)
            os.chown(secret, user.uid, user.gid)
        initdb = [str(install / "bin" / "initdb"), "-D", str(root / "data"), "-U", SUPERUSER]
        initdb += [f"--pwfile={secret}", "--auth-host=scram-sha-256", "--auth-local=trust"]
        initdb += ["--encoding=UTF8", "--no-sync"]
        done = subprocess.run(
            initdb, capture_output=True, **(user.popen_args() if user is not None else {})
        )
        secret.unlink()
        if done.returncode != 0:
            raise PostgresNotAvailable(
                f"initdb failed ({done.returncode}): {done.stderr.decode(errors='replace')}"
            )
        server = EmbeddedPostgres(root, free_port(), user, durable, install)
        server.start()
    except BaseException:
        secret.unlink(missing_ok=True)
        shutil.rmtree(root, ignore_errors=True)
        raise
    return server
