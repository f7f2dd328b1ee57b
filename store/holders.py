"""Who holds a lease: a holder id per worker, the node it runs on, and whether it is dead.

Lease rows (``store.partitions``) name their holder as ``host:pid:random`` and its node as
the host plus its boot and pid namespace. A worker on the same node can then tell a holder
that died (a crash, kill -9) from one that is alive or elsewhere, and take its partitions
at once instead of waiting for the TTL. Replay claims use the same holder ids.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path


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


def dead_here(holder: str, its_node: str, node: str) -> bool:
    """Whether ``holder`` ran on this very node and its process is gone (a crash, kill -9).

    Only then is waiting for the TTL pointless. A pid in another pid namespace or on
    another host proves nothing, so those holders are waited out; a reused pid makes us
    wait too, which is the safe side.
    """
    return bool(node) and its_node == node and process_gone(holder)


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
