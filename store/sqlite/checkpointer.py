"""WAL checkpoints on a thread of their own, so the batch commit never pays for them.

With SQLite's default auto-checkpoint every commit that grows the WAL past 1,000 pages copies
the pages back into the database file and syncs it, inside the consumer's loop. A batch of
the hard benchmark mix dirties hundreds of scattered pages, so that happened almost every
batch. Here the consumer's connection never checkpoints; this thread runs a PASSIVE
checkpoint (it never blocks the writer) from its own connection every ``interval_s``,
while the GIL is released inside SQLite, on the machine's other core.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

FINAL_CHECKPOINT_WAIT_MS = 100
"""How long the last checkpoint (on stop) waits for other connections to the file."""


class Checkpointer:
    """Starts with ``start()``, stops (with a last checkpoint) with ``stop()``."""

    def __init__(self, path: str | Path, interval_s: float = 0.5) -> None:
        self.path = str(path)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._writer: sqlite3.Connection | None = None
        self._writer_setting = 1000

    def start(self, writer: sqlite3.Connection) -> None:
        """Take checkpoints off ``writer`` and run them here instead (``stop`` gives them back)."""
        self._writer = writer
        self._writer_setting = int(writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
        writer.execute("PRAGMA wal_autocheckpoint=0")
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=1.0, isolation_level=None)
        try:
            while not self._stop.wait(self.interval_s):
                self._checkpoint(conn, "PASSIVE")
            # TRUNCATE waits for other connections' readers and writers (a standby worker
            # on the same file): a short wait, then the next process's checkpoints go on.
            conn.execute(f"PRAGMA busy_timeout={FINAL_CHECKPOINT_WAIT_MS}")
            self._checkpoint(conn, "TRUNCATE")
        finally:
            conn.close()

    @staticmethod
    def _checkpoint(conn: sqlite3.Connection, mode: str) -> None:
        try:
            conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        except sqlite3.OperationalError as error:  # busy: the next round catches up
            log.debug("checkpoint skipped: %s", error)

    def stop(self) -> None:
        """Stop the thread after one last checkpoint and give the writer back its own
        auto-checkpoint setting; safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self._writer is not None:
            self._writer.execute(f"PRAGMA wal_autocheckpoint={self._writer_setting}")
            self._writer = None
