"""Publishing the outbox to ``gm:lobby_events``, fenced at Redis.

Snapshots go out in chunks, each one ``EVALSHA`` of the fence's publish script
(``consumer.runtime.fence``), pipelined on a connection of the relay's own: the command is
packed by hand and written in one go, and its reply is read later. So the worker can
``send`` a batch's snapshots right after its commit, go on with the next batch while Redis
appends them, and ``confirm`` before that batch commits. Redis appends a chunk only while
the epochs it carries are current: a worker whose partitions were taken over cannot append,
whenever its bytes arrive; it learns so from the reply (``PublishFenced``).

A confirmed chunk is deleted from the outbox at once, so a snapshot is published twice only
if the process dies (or Redis drops the connection) between its append and that delete.
Snapshots a batch just committed are sent from memory; the table is read only for a backlog
(on start, or after Redis failed us).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections import deque
from collections.abc import Callable, Iterator

import redis

from consumer.contract import constants as c
from consumer.contract.fence import marks_key
from consumer.errors import PublishFenced
from consumer.runtime.faults import FaultPoint, hit
from consumer.runtime.fence import PUBLISH, Fence, outcome, packed_row, publish_command
from consumer.runtime.redis_client import OwnConnection
from consumer.runtime.wording import counted
from store import outbox
from store.backend import Store

log = logging.getLogger(__name__)

PUBLISH_CHUNK = 1000
"""Outbox rows per pipelined write; each confirmed chunk is deleted in one statement."""

Pending = list[tuple[int, outbox.OutboxRow]]


def refusal_error(text: str) -> redis.ResponseError:
    """Redis's refusal of one append inside the script, as redis-py raises it for a plain
    command (``OutOfMemoryError`` for ``maxmemory``, which the worker waits out)."""
    found = re.match(r"(?:@user_script: ?\d+: -)?(\S+) ", text)  # Redis 6.2 prefixes it
    code = found.group(1) if found else ""
    if code == "OOM":
        return redis.exceptions.OutOfMemoryError(text)
    if code == "NOPERM":
        return redis.exceptions.NoPermissionError(text)
    return redis.ResponseError(text)


class OutboxRelay:
    """Moves committed snapshots from the outbox to the lobby stream, in order, at least once."""

    def __init__(
        self,
        db: Store,
        client: redis.Redis,
        stream: str,
        chunk: int = PUBLISH_CHUNK,
        fence: Callable[[Pending], Fence] | None = None,
    ) -> None:
        self.db = db
        self.stream = stream
        self.chunk = chunk
        self._own = OwnConnection(client)
        self._loaded: object | None = None
        """The connection the publish script was last loaded on."""
        self.fence = fence or self._unfenced
        """The fence a chunk of rows is published under (the worker's: its label's key and
        the epochs of their partitions); without one, unfenced (``outbox flush``)."""
        self._from_table = True  # unknown backlog at start: read the table
        self._in_memory: Pending = []
        self._in_flight: deque[tuple[list[int], Fence]] = deque()
        """The seqs of each chunk written to Redis whose reply is not read yet, and the
        fence it went under."""
        self.published_through = 0
        """Highest seq confirmed on the stream; rows up to it are deleted right after."""
        self._last_seen = 0
        """Highest seq this relay knows of; a row above it that it did not commit means
        another process (an admin ``set-status``) wrote to the outbox."""
        self.owns: Callable[[str], bool] | None = None
        """With partitions: whether a game's rows are this worker's to publish (its
        partition is held). Rows of other partitions are left to their holders, and
        confirmed rows are deleted by seq, never up to one."""

    def _unfenced(self, rows: Pending) -> Fence:
        """An operator's ``outbox flush``: no epochs, the default label's marks."""
        store_id = outbox.publisher_id(self.db.conn)
        return Fence(self.stream, {}, marks_key(self.stream, c.OFFSET_LABEL, store_id))

    def rescan(self) -> None:
        """Partitions were taken: what their last holder left may sit below the rows this
        relay has seen, so publish from the table's start, before anything new."""
        self._read_table()
        self.published_through = 0

    @property
    def in_flight(self) -> int:
        """Snapshots sent whose replies are not read yet."""
        return sum(len(seqs) for seqs, _ in self._in_flight)

    def committed(self, rows: Pending) -> None:
        """A batch committed these rows; publish them from memory unless a backlog comes first.

        A hole before them in the sequence means rows committed by another process sit in
        between: then the table is read, so they go out in their place.
        """
        if not rows:
            return
        if rows[0][0] != self._last_seen + 1 and self._ours_between(self._last_seen, rows[0][0]):
            self._read_table()
        self._last_seen = max(self._last_seen, rows[-1][0])
        if not self._from_table:
            self._in_memory.extend(rows)

    def _ours_between(self, after: int, before: int) -> bool:
        """Whether rows another process committed between two seqs are this relay's to
        publish: always without partitions; with them, only rows of held partitions (other
        workers' rows fill the sequence all the time)."""
        owns = self.owns
        if owns is None:
            return True
        between = outbox.peek(self.db.conn, before - after - 1, after=after)
        return any(owns(row.game_id) for seq, row in between if seq < before)

    def look_for_others_rows(self) -> None:
        """While idle: publish from the table if another process added rows (admin changes)."""
        if not self._from_table and outbox.last_seq(self.db.conn) > self._last_seen:
            self._read_table()

    def _read_table(self) -> None:
        self._from_table = True
        self._in_memory.clear()

    def send(self) -> int:
        """Write the committed snapshots to Redis without waiting; ``confirm`` reads the replies.

        With a backlog in the table this publishes it synchronously instead and returns the
        count (``publish``); otherwise 0.
        """
        if self._from_table:
            return self.publish()
        with self._reset_on_failure():
            for start in range(0, len(self._in_memory), self.chunk):
                self._write(self._in_memory[start : start + self.chunk])
        self._in_memory.clear()
        return 0

    def confirm(self) -> int:
        """Read the replies of every sent chunk, deleting each from the outbox; return the count."""
        confirmed = 0
        with self._reset_on_failure():
            while self._in_flight:
                confirmed += self._confirm_first()
        return confirmed

    def publish(self) -> int:
        """Publish every committed, unpublished snapshot and wait for Redis; return the count."""
        published = self.confirm()
        if not self._from_table:
            self.send()
            return published + self.confirm()
        # the backlog: read from the table, one chunk written and confirmed at a time
        owns = self.owns
        with self._reset_on_failure():
            while rows := outbox.peek(self.db.conn, self.chunk, after=self.published_through):
                mine = rows if owns is None else [row for row in rows if owns(row[1].game_id)]
                if mine:
                    self._write(mine)
                    published += self._confirm_first()
                self.published_through = max(self.published_through, rows[-1][0])
        self._from_table = False
        self._last_seen = max(self._last_seen, self.published_through)
        return published

    def close(self) -> None:
        """Drop the relay's connection; unconfirmed chunks are published again on next start."""
        self._reset()

    @contextlib.contextmanager
    def _reset_on_failure(self) -> Iterator[None]:
        """After any failure what is not confirmed is in the table: resume from there."""
        try:
            yield
        except BaseException:
            self._reset()
            raise

    def _write(self, rows: Pending) -> None:
        conn = self._own.get()
        if conn is not self._loaded:  # a new connection: Redis may have been restarted
            conn.send_command("SCRIPT", "LOAD", PUBLISH)  # type: ignore[no-untyped-call]
            conn.read_response()
            self._loaded = conn
        fence = self.fence(rows)
        packed = publish_command(self.stream, fence, [packed_row(*row) for row in rows])
        conn.send_packed_command([packed], check_health=False)  # type: ignore[no-untyped-call]
        self._in_flight.append(([seq for seq, _ in rows], fence))

    def _confirm_first(self) -> int:
        """Read one chunk's reply and delete exactly the rows Redis appended.

        Redis appends a chunk's snapshots in order and stops at the first it refuses
        (``maxmemory``, a lost permission): the rows before it are deleted, the rest stay in
        the outbox and are published again from the table. A chunk the fence refused is
        appended not at all, and this worker's partitions are another's now.
        """
        seqs, fence = self._in_flight[0]
        try:
            done = outcome(self._own.get().read_response())
        except redis.exceptions.NoScriptError as error:  # SCRIPT FLUSH: load it afresh
            raise redis.ConnectionError(f"the publish script is gone ({error})") from error
        self._in_flight.popleft()
        settled = seqs[: done.done]
        if done.fenced is not None:
            partition, current = done.fenced
            raise PublishFenced(
                f"redis refused to publish: partition {partition}'s fence is at epoch"
                f" {current}, this worker holds epoch {fence.epochs.get(partition)}; another"
                " worker took it over"
            )
        if done.refusal is not None:
            with self.db.write() as conn_:
                outbox.delete_seqs(conn_, settled)
            self._settled_through(seqs[done.done] - 1)
            raise refusal_error(done.refusal)
        self._settled_through(seqs[-1])
        log.debug("published %s to %s", counted(done.added, "snapshot"), self.stream)
        hit(FaultPoint.AFTER_PUBLISH)
        with self.db.write() as conn_:
            if self.owns is None:
                outbox.delete_through(conn_, seqs[-1])
            else:  # other partitions' rows sit in between
                outbox.delete_seqs(conn_, seqs)
        return done.added

    def _settled_through(self, seq: int) -> None:
        """A chunk sent from memory is settled up to ``seq``: the next table read starts
        after it. Not while a table read is pending: then the read's own position counts,
        and a chunk sent before a rescan must not move it past the rows the partitions'
        last holder left below that chunk (they would go out later, after newer snapshots
        of their games, and Redis would skip them as appended: lost)."""
        if not self._from_table:
            self.published_through = seq

    def _reset(self) -> None:
        self._from_table = True
        self._in_memory.clear()
        self._in_flight.clear()
        self._own.drop()
        self._loaded = None
