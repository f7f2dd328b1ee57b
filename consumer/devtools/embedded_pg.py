"""A private PostgreSQL 16 server on a free loopback port, for tests and the benchmark.

The binaries come from the ``pgserver`` wheel (test extra), so a fresh machine with only
Python needs nothing else. The server is started directly (not through ``pgserver``'s own
manager) because tests need to stop, kill and restart it on the same port, and to log in
over TCP with a password. As root, PostgreSQL refuses to run; it then runs as the system
user ``pgserver`` (the wheel's own convention, created if missing).
"""

from __future__ import annotations

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
from urllib.parse import quote

from consumer.devtools.embedded import free_port

SUPERUSER = "postgres"
SUPERUSER_PASSWORD = "healthfsm-test"
"""The throwaway server's superuser; it listens on 127.0.0.1 only and lives for one run."""

SYSTEM_USER = "pgserver"


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


def _as_user() -> str | None:
    """The system user to run the server as: ``pgserver`` when we are root, else ourselves.

    That user must be able to reach and run the wheel's files, so their folders get o+rx.
    """
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "-s", "/bin/false", SYSTEM_USER], check=True)
    install = _bin_dir().parent
    for folder in [*reversed(install.parents), install]:
        folder.chmod(folder.stat().st_mode | 0o005)
    for folder in (install / "bin", install / "lib", install / "share"):
        for path in [folder, *folder.rglob("*")]:
            path.chmod(path.stat().st_mode | (0o005 if path.is_dir() else 0o004))
    return SYSTEM_USER


@dataclass
class EmbeddedPostgres:
    """A running private server; ``stop()`` ends it and removes its files."""

    root: Path
    port: int
    user: str | None
    durable: bool
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
            [str(_bin_dir() / "postgres"), *options],
            stdout=log,
            stderr=log,
            user=self.user,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
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
    """initdb a throwaway cluster in a new temp folder and start it on a free port."""
    bin_dir = _bin_dir()
    user = _as_user()
    root = Path(tempfile.mkdtemp(prefix="healthfsm-pg-"))
    root.chmod(0o755)
    secret = root / "pwfile"
    secret.write_text(SUPERUSER_PASSWORD + "\n")
    if user is not None:
        import pwd

        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
        os.chown(secret, entry.pw_uid, entry.pw_gid)
    initdb = [str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", SUPERUSER]
    initdb += [f"--pwfile={secret}", "--auth-host=scram-sha-256", "--auth-local=trust"]
    initdb += ["--encoding=UTF8", "--no-sync"]
    subprocess.run(initdb, check=True, capture_output=True, user=user)
    secret.unlink()
    server = EmbeddedPostgres(root, free_port(), user, durable)
    server.start()
    return server
