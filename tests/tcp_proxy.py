"""A loopback TCP proxy for fault tests: it passes bytes, holds them, delivers them late, resets.

A network partition that TCP survives does not lose bytes: it delays them. While the link
is down the sender's kernel keeps retransmitting what it wrote, and when the link heals
those bytes arrive, even if the sending process gave up and closed its socket meanwhile.
``hold()`` models that: every byte from either side is kept, in order, per connection, and
``release()`` delivers it all. A connection whose client closed during the hold keeps its
upstream socket open until its bytes are flushed, as a kernel keeps retransmitting after
``close()``. New connections accepted during a hold are not connected upstream until the
release (a SYN that gets through is not modelled: the client's connect succeeds at once,
its bytes wait). ``reset()`` ends every connection with a TCP reset instead.

``hold_at(marker)`` starts a hold on the first chunk a client sends that contains
``marker``, before that chunk is forwarded: a partition that begins exactly while a given
command is on the wire, which a test cannot hit reliably from outside. Only bytes are
matched: a protocol's prepared statements, say, carry no text to match after warm-up.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from types import TracebackType

CHUNK = 65536
EOF = b""
"""Buffered in place of data: the sender closed (its FIN waits behind its bytes)."""


class _Pipe:
    """One direction of one connection: bytes from ``src`` to ``dst``, or to a buffer while
    held. Its lock orders the pump's forwarding with a release's flush."""

    def __init__(self, src: socket.socket, dst: socket.socket | None, held: bool) -> None:
        self.src = src
        self.dst = dst
        self.held = held
        self.buffer: list[bytes] = []
        self.lock = threading.Lock()
        self.gone = False
        """``dst`` refused a send: what follows is read and dropped, as a dead peer's
        kernel would drop it, so the source still reaches its end."""
        self.finished = False
        """The source's end was passed on (or dropped, ``dst`` being gone)."""

    def deliver(self, data: bytes) -> int:
        """Send ``data`` (``EOF``: half-close ``dst``, as the sender's FIN); the bytes sent."""
        assert self.dst is not None
        if data == EOF:
            self.finished = True
        if self.gone:
            return 0
        try:
            if data == EOF:
                self.dst.shutdown(socket.SHUT_WR)
            else:
                self.dst.sendall(data)
        except OSError:
            self.gone = True
            return 0
        return len(data)

    def flush(self) -> int:
        """Deliver the buffer in order and stop holding (call with the lock held); the
        bytes delivered."""
        sent = sum(self.deliver(data) for data in self.buffer)
        self.buffer.clear()
        self.held = False
        return sent


class _Connection:
    """A client connection and its upstream socket (None until connected, in a hold)."""

    def __init__(self, client: socket.socket, upstream: socket.socket | None, held: bool) -> None:
        self.client = client
        self.upstream = upstream
        self.up = _Pipe(client, upstream, held)
        self.down: _Pipe | None = None if upstream is None else _Pipe(upstream, client, held)
        self.closed = False

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.client, self.upstream) if s is not None]


class TcpProxy:
    """Listens on 127.0.0.1 (a free port) and forwards each connection to ``target``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        """Guards the mode and the connection list; never taken while a pipe's lock is."""
        self._held = False
        self._marker: bytes | None = None
        self._after: bytes | None = None
        self._connections: list[_Connection] = []
        self._closing = False
        self.holding = threading.Event()
        """Set when a hold starts (``hold()``, or the marker of ``hold_at`` went by)."""
        self.held_bytes = 0
        """Bytes buffered by holds so far, both directions."""
        self._count_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept)

    # modes -----------------------------------------------------------------------------

    def hold(self) -> None:
        """Blackhole the link both ways: buffer every byte from now on (and stop arming)."""
        with self._lock:
            self._held = True
            self._marker = None
            for conn in self._connections:
                for pipe in (conn.up, conn.down):
                    if pipe is not None:
                        with pipe.lock:
                            pipe.held = True
        self.holding.set()

    def hold_at(self, marker: bytes, after: bytes | None = None) -> None:
        """Start a hold at the first client chunk containing ``marker``, that chunk held;
        with ``after``, only on a connection that sent ``after`` since its last ``marker``
        (the COMMIT of a transaction that wrote given values, say)."""
        with self._lock:
            self._marker, self._after = marker, after

    def release(self) -> int:
        """Heal the link: connect what was accepted during the hold, deliver every buffered
        byte in order per connection and direction, then forward normally. Returns the
        bytes delivered to the server."""
        to_server = 0
        with self._lock:
            for conn in list(self._connections):
                if conn.upstream is None and not self._connect_late(conn):
                    continue
                with conn.up.lock:
                    to_server += conn.up.flush()
                assert conn.down is not None
                with conn.down.lock:
                    conn.down.flush()
                self._close_if_done(conn)
            self._held = False
            self.holding.clear()
        return to_server

    def reset(self) -> None:
        """End every connection with a TCP reset (RST to both sides), dropping what is held."""
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            for sock in conn.sockets():
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RD)  # wakes our pump without a FIN
                sock.close()

    def close(self) -> None:
        """Stop listening and close every connection; held bytes are dropped."""
        with self._lock:
            self._closing = True
            connections, self._connections = self._connections, []
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for conn in connections:
            for sock in conn.sockets():
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    # the threads -----------------------------------------------------------------------

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:  # a hold or a release waits until the connection is listed
                if self._closing:
                    client.close()
                    return
                upstream = None
                if not self._held:
                    try:
                        upstream = socket.create_connection(self.target, timeout=5)
                    except OSError:
                        client.close()
                        continue
                    upstream.settimeout(None)
                conn = _Connection(client, upstream, self._held)
                self._connections.append(conn)
            self._spawn(self._pump, conn, conn.up, True)
            if conn.down is not None:
                self._spawn(self._pump, conn, conn.down, False)

    def _connect_late(self, conn: _Connection) -> bool:
        """Connect upstream a connection accepted during a hold (called by ``release``)."""
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            self._connections.remove(conn)
            conn.client.close()
            return False
        upstream.settimeout(None)
        conn.upstream = upstream
        conn.up.dst = upstream
        conn.down = _Pipe(upstream, conn.client, held=True)
        self._spawn(self._pump, conn, conn.down, False)
        return True

    def _pump(self, conn: _Connection, pipe: _Pipe, from_client: bool) -> None:
        """Copy one direction until its source ends; while held, into the pipe's buffer."""
        tails = (b"", b"")  # each pattern's window into the previous chunk's end
        primed = False
        while True:
            try:
                data = pipe.src.recv(CHUNK)
            except OSError:
                data = EOF  # a reset, or our own close
            marker, after = (self._marker, self._after) if from_client else (None, None)
            trigger = False
            if marker and data:
                seen = (tails[0] + data, tails[1] + data)
                primed = primed or after is None or after in seen[0]
                if marker in seen[1]:
                    trigger, primed = primed, False
                tails = (_unfinished(seen[0], after or b""), _unfinished(seen[1], marker))
            with pipe.lock:
                if trigger and not pipe.held:
                    pipe.held = True
                else:
                    trigger = False
                if pipe.held:
                    pipe.buffer.append(data)
                    with self._count_lock:
                        self.held_bytes += len(data)
                else:
                    pipe.deliver(data)
            if trigger:
                self.hold()
            if data == EOF:
                break
        with self._lock:
            self._close_if_done(conn)

    def _close_if_done(self, conn: _Connection) -> None:
        """Close a connection once both directions delivered their end (lock held)."""
        down = conn.down
        if conn.closed or not conn.up.finished or down is None or not down.finished:
            return
        conn.closed = True
        if conn in self._connections:
            self._connections.remove(conn)
        for sock in conn.sockets():
            sock.close()


def _unfinished(window: bytes, pattern: bytes) -> bytes:
    """The end of ``window`` that could begin ``pattern`` (one byte short of it): enough
    to find a pattern split across chunks, never one already found whole."""
    keep = len(pattern) - 1
    return window[len(window) - keep :] if keep > 0 else b""


@contextlib.contextmanager
def proxy_to(host: str, port: int) -> Iterator[TcpProxy]:
    """A proxy to ``host:port`` that is closed whatever the block's outcome."""
    proxy = TcpProxy(host, port)
    try:
        yield proxy
    finally:
        proxy.close()
