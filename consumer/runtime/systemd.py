"""systemd's notify protocol: ``READY=1``, ``WATCHDOG=1``, ``STATUS=`` and ``STOPPING=1``.

The protocol is one datagram on the Unix socket that ``$NOTIFY_SOCKET`` names (a path, or an
abstract name after ``@``), so it is written here rather than taken from a library: the
candidates on PyPI are either unmaintained (sdnotify) or need libsystemd's headers to build
(systemd-python). Without ``NOTIFY_SOCKET`` every call does nothing. A send never blocks
the loop: the socket is non-blocking and a datagram systemd cannot take is dropped.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping

ENV_SOCKET = "NOTIFY_SOCKET"
ENV_WATCHDOG_USEC = "WATCHDOG_USEC"
ENV_WATCHDOG_PID = "WATCHDOG_PID"


class Notifier:
    """Sends state lines to systemd; a no-op when the process was not started by it."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        env = os.environ if environ is None else environ
        self._clock = clock
        self._address = _address(env.get(ENV_SOCKET, ""))
        self._socket: socket.socket | None = None
        if self._address is not None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.setblocking(False)
        self.watchdog_interval_s = _watchdog_interval(env)
        self._last_watchdog = float("-inf")
        self._ready = False
        self._stopping = False
        self._status = ""

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, *lines: str) -> bool:
        """One datagram with these ``KEY=value`` lines; whether systemd took it."""
        if self._socket is None or self._address is None:
            return False
        try:
            self._socket.sendto("\n".join(lines).encode(), self._address)
        except OSError:  # systemd gone or its queue full: never the loop's problem
            return False
        return True

    def ready(self, status: str) -> None:
        """``READY=1`` once: the worker holds its lease or stands by."""
        if not self._ready:
            self._ready = True
            self._status = status
            self.send("READY=1", f"STATUS={status}")
        else:
            self.status(status)

    def status(self, status: str) -> None:
        """``STATUS=``, when it changed."""
        if status != self._status:
            self._status = status
            self.send(f"STATUS={status}")

    def watchdog_due(self) -> bool:
        return (
            self.watchdog_interval_s is not None
            and self._clock() - self._last_watchdog >= self.watchdog_interval_s
        )

    def watchdog(self) -> None:
        """``WATCHDOG=1`` once a quarter of ``WATCHDOG_USEC`` has passed; call it from the
        loop, which beats at least that often (``WorkerStatus.beat_every_s``), so two pings
        are never more than half ``WATCHDOG_USEC`` apart."""
        if self.watchdog_due():
            self._last_watchdog = self._clock()
            self.send("WATCHDOG=1")

    def stopping(self) -> None:
        """``STOPPING=1``, once, whichever way the worker ends."""
        if not self._stopping:
            self._stopping = True
            self.send("STOPPING=1", "STATUS=stopping")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):  # an abstract socket: a leading NUL byte on the wire
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock and other kinds: not for a worker like this


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """A quarter of ``WATCHDOG_USEC``, when the watchdog is meant for this process."""
    usec = env.get(ENV_WATCHDOG_USEC, "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get(ENV_WATCHDOG_PID, "")
    if pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 1_000_000 / 4
