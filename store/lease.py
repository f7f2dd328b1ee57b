"""One active worker per store and label: a lease row with a holder, an expiry and an epoch.

The pattern job systems use for leader election on a database (River's ``river_leader``,
Oban's ``oban_leaders``): a worker takes the row in a write transaction when it is free,
released or expired, and renews it inside each batch's transaction. The epoch grows with
every new holder and is the fencing token: a batch commits only while the row still names
this holder *and* this epoch, so a worker that was paused past its TTL (SIGSTOP, a VM
pause) and lost the row to another can never write again.

Every function here runs inside the caller's transaction on a raw connection; times are
wall-clock milliseconds, because the row is compared by processes on other machines.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path
from typing import NamedTuple

from store.sql import Sql


class Lease(NamedTuple):
    """The lease row of one label."""

    label: str
    holder: str
    node: str
    epoch: int
    acquired_at_ms: int
    expires_at_ms: int

    def live(self, now_ms: int) -> bool:
        """Whether the lease still binds others at ``now_ms`` (a released lease has expiry 0)."""
        return self.expires_at_ms > now_ms

    def describe(self) -> str:
        """``holder (epoch N)`` for messages."""
        return f"{self.holder} (epoch {self.epoch})"


def _boot_and_pid_namespace() -> str:
    """What makes a pid meaningful: this kernel boot and pid namespace (Linux); else ''."""
    parts = []
    boot = Path("/proc/sys/kernel/random/boot_id")
    if boot.exists():
        parts.append(boot.read_text().strip())
    try:
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        return ""
    return "/".join(parts)


def this_node() -> str:
    """Host name plus boot id and pid namespace: where a holder's pid can be checked."""
    scope = _boot_and_pid_namespace()
    return f"{socket.gethostname()}/{scope}" if scope else ""


def new_holder_id() -> str:
    """``host:pid:random``: unique per worker, readable in ``check`` and the logs."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def holder_is_dead_here(lease: Lease, node: str) -> bool:
    """Whether the holder ran on this very node and its process is gone (a crash, kill -9).

    Only then is waiting for the TTL pointless. A pid in another pid namespace or on
    another host proves nothing, so those holders are waited out; a reused pid makes us
    wait too, which is the safe side.
    """
    return bool(node) and lease.node == node and process_gone(lease.holder)


def process_gone(holder: str) -> bool:
    """Whether ``host:pid:random`` names a process of this host that no longer runs."""
    parts = holder.split(":")
    if len(parts) < 3 or ":".join(parts[:-2]) != socket.gethostname():
        return False
    try:
        pid = int(parts[-2])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, under another user
    return False


_COLUMNS = "label, holder, node, epoch, acquired_at_ms, expires_at_ms"


def read(conn: Sql, label: str) -> Lease | None:
    """The lease row of ``label``, live or not, or None if no worker ever held it."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM leases WHERE label = ?", [label]).fetchone()
    return None if row is None else Lease(*row)


def live_leases(conn: Sql, now_ms: int) -> list[Lease]:
    """Every lease that binds at ``now_ms``, any label."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM leases WHERE expires_at_ms > ? ORDER BY label", [now_ms]
    )
    return [Lease(*row) for row in rows]


def binds(lease: Lease | None, holder: str, node: str, now_ms: int) -> bool:
    """Whether ``lease`` keeps ``holder`` out: another's, live, and not known to be dead."""
    return (
        lease is not None
        and lease.holder != holder
        and lease.live(now_ms)
        and not holder_is_dead_here(lease, node)
    )


def try_acquire(
    conn: Sql, label: str, holder: str, node: str, now_ms: int, ttl_ms: int
) -> tuple[Lease | None, Lease | None]:
    """Take the lease if it is free, released, expired or its holder died here.

    Returns (the lease now held, or None if another holds it; the row found before).
    The write is a compare-and-swap on the row as read (epoch and expiry): under SQLite's
    write lock nothing can come in between anyway, but under PostgreSQL's READ COMMITTED
    two standbys may read the same expired row, and a holder may renew it after the read;
    then the update matches no row and the taker stands by.
    """
    before = read(conn, label)
    if binds(before, holder, node, now_ms):
        return None, before
    epoch = 1 if before is None else before.epoch + 1
    lease = Lease(label, holder, node, epoch, now_ms, now_ms + ttl_ms)
    if before is None:
        taken = conn.execute(
            f"INSERT INTO leases ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (label) DO NOTHING",
            lease,
        )
    else:  # only the row as it was read: a renewal or another taker in between wins
        taken = conn.execute(
            "UPDATE leases SET holder = ?, node = ?, epoch = ?, acquired_at_ms = ?,"
            " expires_at_ms = ? WHERE label = ? AND epoch = ? AND expires_at_ms = ?",
            [
                holder,
                node,
                epoch,
                now_ms,
                lease.expires_at_ms,
                label,
                before.epoch,
                before.expires_at_ms,
            ],
        )
    if taken.rowcount != 1:
        return None, read(conn, label)
    return lease, before


def renew(conn: Sql, lease: Lease, now_ms: int, ttl_ms: int) -> Lease | None:
    """Extend ``lease`` if the row still names its holder and epoch (the fence); else None.

    A lease that expired but was taken by nobody is still this worker's: the epoch did not
    move, so nobody else wrote in between.
    """
    updated = conn.execute(
        "UPDATE leases SET expires_at_ms = ? WHERE label = ? AND holder = ? AND epoch = ?",
        [now_ms + ttl_ms, lease.label, lease.holder, lease.epoch],
    )
    if updated.rowcount != 1:
        return None
    return lease._replace(expires_at_ms=now_ms + ttl_ms)


def release(conn: Sql, lease: Lease) -> None:
    """Give the lease up (expiry 0), keeping holder and epoch for the record."""
    conn.execute(
        "UPDATE leases SET expires_at_ms = 0 WHERE label = ? AND holder = ? AND epoch = ?",
        [lease.label, lease.holder, lease.epoch],
    )
