"""A private PostgreSQL 16 server on a free loopback port, for ``demo --postgres`` and tests.

The binaries come from the ``pgserver`` wheel (the ``demo`` and ``test`` extras), so a
fresh machine with only Python needs nothing else. They run directly (initdb, then
postgres), never through ``pgserver``'s own manager: importing ``pgserver`` starts that
manager and leaves a lock file in the temp folder, and the tests need to stop, kill and
restart the server on the same port and to log in over TCP with a password. As root,
PostgreSQL refuses to run; it then runs as ``nobody``, a user every Linux system already
has, with that user's group and no other, so nothing adds a user or group to the machine.
Nothing outside the folders it creates is changed: when that user cannot reach the wheel
(a checkout in root's home folder), the binaries are copied once to a temp folder it can
reach. ``stop()`` removes the server's folder (data, socket and log).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import quote

from consumer.devtools.embedded import LOOPBACK, free_port
from consumer.errors import PostgresNotAvailable
from store.postgres import answers, run_statement

SUPERUSER = "postgres"
"""The throwaway cluster's superuser; it listens on 127.0.0.1 only."""

SYSTEM_USER = "nobody"
"""Who the server runs as under root: an existing unprivileged user, never one we add."""

FOLDER_PREFIX = "healthfsm-pg-"
"""The temp folder of each server (data, socket, log): ``stop()`` removes it."""


def bin_dir() -> Path:
    """The wheel's ``pginstall/bin``, found without importing ``pgserver`` (its import
    starts a manager we do not use and leaves a lock file behind)."""
    spec = find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresNotAvailable(
            "the pgserver wheel is not installed: install the 'demo' extra"
            " (pip install -e '.[demo]') or pip install pgserver"
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


def run_as() -> RunAs | None:
    """``nobody`` when we are root (PostgreSQL refuses to run as root), else None: the
    current user runs it."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise PostgresNotAvailable(
            f"PostgreSQL refuses to run as root and this machine has no user {SYSTEM_USER!r}"
            " to run it as; run as an ordinary user instead"
        ) from None
    return RunAs(SYSTEM_USER, entry.pw_uid, entry.pw_gid)


def _popen_args(user: RunAs | None) -> dict[str, Any]:
    return user.popen_args() if user is not None else {}


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


def install_for(user: RunAs | None) -> Path:
    """The ``pginstall`` folder to run from: the wheel's own when ``user`` can reach it,
    else a copy in a new temp folder that it can (once per process, removed at exit).

    Nothing outside the copy changes: a checkout in root's home folder keeps its modes.
    """
    global _copied_install
    if _copied_install is not None:
        return _copied_install
    wheel = bin_dir().parent
    if user is None or _runs_all(user, wheel):
        return wheel
    holder = Path(tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}install-"))
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
    password: str = field(repr=False, default="")
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(
        self,
        schema: str | None = None,
        *,
        user: str = SUPERUSER,
        password: str | None = None,
        database: str = "postgres",
    ) -> str:
        """A libpq URL over TCP (the superuser's password unless given); ``schema`` becomes
        the connection's ``search_path``."""
        secret = self.password if password is None else password
        query = f"?options=-csearch_path%3D{quote(schema)}" if schema else ""
        return f"postgresql://{user}:{quote(secret)}@{LOOPBACK}:{self.port}/{database}{query}"

    def socket_url(self, schema: str | None = None, *, database: str = "postgres") -> str:
        """A libpq URL over the Unix socket (``?host=/dir``), where the superuser needs no
        password: cheaper to connect, which tests that open many stores notice."""
        options = f"&options=-csearch_path%3D{quote(schema)}" if schema else ""
        return (
            f"postgresql://{SUPERUSER}@/{database}?host={quote(str(self.root))}"
            f"&port={self.port}{options}"
        )

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the server (again, after ``stop``/``kill``) and wait until it accepts logins.

        It gets a session of its own, so a Ctrl-C in the terminal reaches only us: we stop
        it in order (``stop_server``) and remove its files."""
        options = ["-D", str(self.data), "-p", str(self.port), "-h", LOOPBACK]
        options += ["-k", str(self.root), "-c", "max_connections=100"]
        if not self.durable:  # a throwaway server: a crash of the machine loses nothing
            options += ["-c", "fsync=off", "-c", "full_page_writes=off"]
        with (self.root / "postgres.log").open("ab") as log:
            self.process = subprocess.Popen(
                [str(self.install / "bin" / "postgres"), *options],
                stdout=log,
                stderr=log,
                start_new_session=True,
                **_popen_args(self.user),
            )
        deadline = time.monotonic() + timeout_s
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                tail = (self.root / "postgres.log").read_text(errors="replace")[-2000:]
                raise PostgresNotAvailable(f"postgres did not start:\n{tail}")
            time.sleep(0.05)

    def _ready(self) -> bool:
        return answers(self.url())

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
        """Stop the server and remove its files; safe to call twice."""
        self.stop_server()
        shutil.rmtree(self.root, ignore_errors=True)

    def admin(self, sql: str) -> None:
        """Run one statement as the superuser (roles, grants, schemas)."""
        run_statement(self.url(), sql)


def _run_whole(args: list[str], user: RunAs | None) -> subprocess.CompletedProcess[bytes]:
    """Run ``args`` in a process group of its own; if we are interrupted (Ctrl-C), kill the
    whole group and wait until it is gone: initdb's own children (the bootstrap backend)
    would otherwise go on writing into the folder while it is being removed."""
    process = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        **_popen_args(user),
    )
    try:
        out, err = process.communicate()
    except BaseException:
        _kill_group(process)
        raise
    return subprocess.CompletedProcess(args, process.returncode, out, err)


def _kill_group(process: subprocess.Popen[bytes], wait_s: float = 10.0) -> None:
    """SIGKILL every process of ``process``'s group, and wait (bounded) until none is left."""
    deadline = time.monotonic() + wait_s
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    with contextlib.suppress(ProcessLookupError):
        while time.monotonic() < deadline:
            os.killpg(process.pid, 0)  # ProcessLookupError once the group is empty
            time.sleep(0.01)


def _initdb(install: Path, root: Path, user: RunAs | None, password: str) -> None:
    """A new cluster in ``root/data``; the password passes through a file only its owner
    reads, removed at once."""
    secret = root / "pwfile"
    secret.touch(0o600)
    try:
        secret.write_text(password + "\n")
        if user is not None:
            os.chown(secret, user.uid, user.gid)
        initdb = [str(install / "bin" / "initdb"), "-D", str(root / "data"), "-U", SUPERUSER]
        initdb += [f"--pwfile={secret}", "--auth-host=scram-sha-256", "--auth-local=trust"]
        initdb += ["--encoding=UTF8", "--no-sync"]
        done = _run_whole(initdb, user)
    finally:
        secret.unlink(missing_ok=True)
    if done.returncode != 0:
        raise PostgresNotAvailable(
            f"initdb failed ({done.returncode}): {done.stderr.decode(errors='replace')}"
        )


def start(
    *, durable: bool = False, password: str | None = None, port: int | None = None
) -> EmbeddedPostgres:
    """initdb a throwaway cluster in a new temp folder and start it on a free port.

    The folder holds the data and the Unix socket, and is open to the server's user only:
    the socket takes ``trust`` logins, so no other local user may reach it (root can). The
    superuser's password is ``password``, else a new random one. A start that fails (or is
    interrupted) stops the server and removes the folder.
    """
    user = run_as()
    install = install_for(user)
    root: Path | None = None
    server: EmbeddedPostgres | None = None
    try:  # from the folder's making on: an interruption anywhere removes it
        root = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))
        root.chmod(0o700)
        if user is not None:
            os.chown(root, user.uid, user.gid)
        chosen = password if password is not None else secrets.token_urlsafe(18)
        _initdb(install, root, user, chosen)
        server = EmbeddedPostgres(
            root, port or free_port(), user, durable, install, password=chosen
        )
        server.start()
    except BaseException:
        if server is not None:
            server.kill()
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
        raise
    return server


@contextlib.contextmanager
def running(*, durable: bool = False) -> Iterator[EmbeddedPostgres]:
    """``start()`` as a context manager that always stops the server and removes its files."""
    server = start(durable=durable)
    try:
        yield server
    finally:
        server.stop()
