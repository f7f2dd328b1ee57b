"""Publishing the outbox to ``gm:lobby_events``.

Snapshots go out as plain XADDs, pipelined on a connection of the relay's own: the commands
of a chunk are packed by hand (``xadd_command``; redis-py's pipeline spends 11-20 us of
client CPU per command, this about 1 us) and written in one go, and the replies are read
later. So the worker can ``send`` a batch's snapshots right after its commit, go on with the
next batch while Redis appends them, and ``confirm`` before that batch commits. Only XADD
is needed on the output stream, which is what the minimal ACL grants.

A confirmed chunk is deleted from the outbox at once, so a snapshot is published twice only
if the process dies (or Redis drops the connection) between its XADD and that delete.
Snapshots a batch just committed are sent from memory; the table is read only for a backlog
(on start, or after Redis failed us).
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterator

import redis

from consumer.contract import constants as c
from consumer.runtime.faults import FaultPoint, hit
from consumer.runtime.redis_client import OwnConnection
from store import outbox
from store.backend import Store

log = logging.getLogger(__name__)

PUBLISH_CHUNK = 1000
"""Outbox rows per pipelined write; each confirmed chunk is deleted in one statement."""

Pending = list[tuple[int, outbox.OutboxRow]]


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


_NAMES = [
    _bulk(name.encode())
    for name in (
        "game_id",
        "runtime_status",
        "engine_health_summary",
        "current_turn",
        "player_turn_stats",
        "occurred_at_ms",
        "source_entry_id",
    )
]
_ROW_TEMPLATE = (
    b"%s"  # *19, XADD, stream, *, event_type, runtime_snapshot_update
    + _NAMES[0]
    + b"$%d\r\n%s\r\n"
    + _NAMES[1]
    + b"$%d\r\n%s\r\n"
    + _NAMES[2]
    + b"$%d\r\n%s\r\n"
    + _NAMES[3]
    + b"$%d\r\n%s\r\n"
    + _NAMES[4]
    + _bulk(b"[]")
    + _NAMES[5]
    + b"$%d\r\n%s\r\n"
    + _NAMES[6]
    + b"$%d\r\n%s\r\n"
)


def command_head(stream: str) -> bytes:
    """The RESP bytes every snapshot XADD to ``stream`` starts with."""
    parts = [b"XADD", stream.encode(), b"*", b"event_type", c.SNAPSHOT_EVENT_TYPE.encode()]
    return b"*19\r\n" + b"".join(_bulk(part) for part in parts)


def xadd_command(head: bytes, row: outbox.OutboxRow) -> bytes:
    """One ``XADD`` of a snapshot in RESP, fields as ``consumer.codec.encode_snapshot`` has them.

    A test reads the published entries back and compares them with that function's output.
    """
    game_id = row.game_id.encode()
    status = row.runtime_status.encode()
    summary = row.engine_health_summary.encode()
    source = row.source_entry_id.encode()
    turn = b"%d" % row.current_turn
    at_ms = b"%d" % row.occurred_at_ms
    return _ROW_TEMPLATE % (
        head,
        len(game_id),
        game_id,
        len(status),
        status,
        len(summary),
        summary,
        len(turn),
        turn,
        len(at_ms),
        at_ms,
        len(source),
        source,
    )


class OutboxRelay:
    """Moves committed snapshots from the outbox to the lobby stream, in order, at least once."""

    def __init__(
        self,
        db: Store,
        client: redis.Redis,
        stream: str,
        chunk: int = PUBLISH_CHUNK,
    ) -> None:
        self.db = db
        self.stream = stream
        self.chunk = chunk
        self._own = OwnConnection(client)
        self._head = command_head(stream)
        self._from_table = True  # unknown backlog at start: read the table
        self._in_memory: Pending = []
        self._in_flight: deque[list[int]] = deque()
        """The seqs of each chunk written to Redis whose replies are not read yet."""
        self.published_through = 0
        """Highest seq confirmed on the stream; rows up to it are deleted right after."""
        self._last_seen = 0
        """Highest seq this relay knows of; a row above it that it did not commit means
        another process (an admin ``set-status``) wrote to the outbox."""
        self.owns: Callable[[str], bool] | None = None
        """With partitions: whether a game's rows are this worker's to publish (its
        partition is held). Rows of other partitions are left to their holders, and
        confirmed rows are deleted by seq, never up to one."""

    def rescan(self) -> None:
        """Partitions were taken: what their last holder left may sit below the rows this
        relay has seen, so publish from the table's start, before anything new."""
        self._read_table()
        self.published_through = 0

    @property
    def in_flight(self) -> int:
        """Snapshots sent whose replies are not read yet."""
        return sum(len(seqs) for seqs in self._in_flight)

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
        head = self._head
        packed = b"".join([xadd_command(head, row) for _, row in rows])
        self._own.get().send_packed_command(  # type: ignore[no-untyped-call]
            [packed], check_health=False
        )
        self._in_flight.append([seq for seq, _ in rows])

    def _confirm_first(self) -> int:
        """Read one chunk's replies and delete exactly the rows Redis accepted.

        Every reply is read, so the connection stays in step even when Redis refuses some
        XADDs (``maxmemory``, a lost permission); the refused rows stay in the outbox and
        are published again from the table, the accepted ones never are.
        """
        seqs = self._in_flight[0]
        conn = self._own.get()
        accepted: list[int] = []
        refusal: redis.ResponseError | None = None
        for seq in seqs:
            try:
                conn.read_response()  # an entry id, or a refusal raised as ResponseError
            except redis.ResponseError as error:
                refusal = refusal or error
            else:
                accepted.append(seq)
        self._in_flight.popleft()
        if refusal is not None:
            with self.db.write() as conn_:
                outbox.delete_seqs(conn_, accepted)
            taken = set(accepted)
            first_refused = next(seq for seq in seqs if seq not in taken)
            self.published_through = first_refused - 1
            raise refusal
        self.published_through = seqs[-1]
        log.debug("published %d snapshots to %s", len(seqs), self.stream)
        hit(FaultPoint.AFTER_PUBLISH)
        with self.db.write() as conn_:
            if self.owns is None:
                outbox.delete_through(conn_, seqs[-1])
            else:  # other partitions' rows sit in between
                outbox.delete_seqs(conn_, seqs)
        return len(seqs)

    def _reset(self) -> None:
        self._from_table = True
        self._in_memory.clear()
        self._in_flight.clear()
        self._own.drop()
