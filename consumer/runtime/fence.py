"""The publish fence at Redis: the scripts every append to the lobby stream goes through.

A worker that takes partitions raises their epochs in the label's fence hash
(``consumer.contract.fence``) before it publishes anything. Each chunk of snapshots is one
``EVALSHA`` of ``PUBLISH``, which compares the epochs the publisher holds with the fence and
appends the chunk only when all are current, atomically, at the moment Redis runs it. A
fenced worker's late bytes (held by the network past its lease, say) become a no-op that is
reported back, never an append after a newer snapshot.

The command is packed by hand, like the plain XADDs it replaced (redis-py's command
builder costs more per argument than the append itself).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import redis

from consumer.contract import constants as c
from consumer.errors import ScriptingRefused
from store.outbox import OutboxRow

PUBLISH = """
-- KEYS[1]: the lobby stream; KEYS[2]: the label's fence (partition -> epoch, and 'floor':
-- the lowest epoch of the label's current partition layout); KEYS[3]: the label's marks
-- (game id -> outbox seq of its last snapshot appended).
-- ARGV[1]: n; then n (partition, epoch) pairs; then 7 values per snapshot, its seq first.
-- Nothing is appended unless every epoch is at least its partition's fence and the floor;
-- then each fence rises to its epoch, so a publisher older than this one is refused after.
-- A snapshot whose seq is not above its game's mark was appended already: it is skipped.
local n = tonumber(ARGV[1])
local floor = 0
if n > 0 then
  floor = tonumber(redis.call('HGET', KEYS[2], 'floor') or '0')
end
for i = 2, 2 * n, 2 do
  local epoch = tonumber(ARGV[i + 1])
  local current = tonumber(redis.call('HGET', KEYS[2], ARGV[i]) or '0')
  if epoch < current or epoch < floor then
    return {0, 0, 'fenced', ARGV[i], tostring(math.max(current, floor))}
  end
  if epoch > current then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
end
local first = 2 * n + 2
if first > #ARGV then
  return {0, 0}
end
local games = {}
for j = first, #ARGV, 7 do
  games[#games + 1] = ARGV[j + 1]
end
-- the marks as they were before this chunk: its rows are in seq order, so a row is new
-- exactly when its seq is above its game's mark, whatever else of the game the chunk holds
local marks = redis.call('HMGET', KEYS[3], unpack(games))
local raised = {}
local function keep_marks()
  if #raised > 0 then
    redis.call('HSET', KEYS[3], unpack(raised))
  end
end
local done, added = 0, 0
for j = first, #ARGV, 7 do
  local mark = marks[done + 1]
  if not mark or tonumber(ARGV[j]) > tonumber(mark) then
    local reply = redis.pcall('XADD', KEYS[1], '*', 'event_type', '@EVENT_TYPE@',
      'game_id', ARGV[j + 1], 'runtime_status', ARGV[j + 2],
      'engine_health_summary', ARGV[j + 3], 'current_turn', ARGV[j + 4],
      'player_turn_stats', '[]', 'occurred_at_ms', ARGV[j + 5],
      'source_entry_id', ARGV[j + 6])
    if type(reply) == 'table' and reply.err then
      keep_marks()
      return {done, added, 'refused', reply.err}
    end
    raised[#raised + 1] = ARGV[j + 1]
    raised[#raised + 1] = ARGV[j]
    added = added + 1
  end
  done = done + 1
end
keep_marks()
return {done, added}
""".replace("@EVENT_TYPE@", c.SNAPSHOT_EVENT_TYPE)
"""Append a chunk of snapshots if every epoch is current, each only once: ``{done,
added}`` (rows settled, of them appended now), ``{done, added, 'refused', error}`` when
Redis refused an append (the rows before it are settled), or ``{0, 0, 'fenced',
partition, the fence's epoch}``."""

RAISE = """
-- KEYS[1]: the label's fence. ARGV[1]: the floor of the current partition layout (the
-- lowest epoch among its partitions: every epoch of an earlier layout is below it); then
-- (partition, epoch) pairs. Each field rises to at least its value, never falls. Returns
-- the pairs whose fence is already above this taker's epoch (it is stale itself).
local floor = tonumber(ARGV[1])
if floor > tonumber(redis.call('HGET', KEYS[1], 'floor') or '0') then
  redis.call('HSET', KEYS[1], 'floor', ARGV[1])
end
local stale = {}
for i = 2, #ARGV, 2 do
  local current = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  local epoch = tonumber(ARGV[i + 1])
  if current < epoch then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  elseif current > epoch then
    table.insert(stale, ARGV[i])
    table.insert(stale, tostring(current))
  end
end
return stale
"""

PUBLISH_SHA = hashlib.sha1(PUBLISH.encode()).hexdigest()

GRANT = (
    "grant the user +evalsha +script|load, and +hget +hmget +hset +xadd on the lobby stream and its"
    " fence keys (docs/operations.md#redis-security)"
)
"""What a refusal of scripting tells the operator to do."""


def refused_scripting(error: redis.ResponseError) -> bool:
    """Whether Redis refused a script for lack of rights, rather than failed running it."""
    text = str(error)
    return isinstance(error, redis.exceptions.NoPermissionError) or text.startswith(
        ("NOPERM", "unknown command")
    )


def raise_fence(
    client: redis.Redis, key: str, epochs: Mapping[int, int], floor: int
) -> dict[int, int]:
    """Raise the fence of the partitions just taken to their epochs, and the label's floor
    to ``floor`` (the lowest epoch of the current layout, which fences every holder of an
    earlier one); return the partitions whose fence already names a newer epoch (taken
    again meanwhile: this worker is stale)."""
    args = [str(floor)] + [str(value) for pair in sorted(epochs.items()) for value in pair]
    try:
        reply: Any = client.register_script(RAISE)(keys=[key], args=args)
    except redis.ResponseError as error:
        if refused_scripting(error):
            raise ScriptingRefused(
                f"redis refused the fence script ({error}); healthfsm fences every publish"
                f" at Redis and will not publish unfenced: {GRANT}"
            ) from error
        raise
    flat = [int(value) for value in reply]
    return dict(zip(flat[0::2], flat[1::2], strict=True))


FLOOR = "return redis.call('HGET', KEYS[1], 'floor')"
"""Read the label's fence floor the way the worker publishes: through a script."""


def fence_floor(client: redis.Redis, key: str) -> int:
    """The floor of the label's fence (0 before any worker took a partition), read through
    a script: ``ScriptingRefused`` where Redis would refuse the worker's publishes."""
    try:
        reply: Any = client.register_script(FLOOR)(keys=[key])
    except redis.ResponseError as error:
        if refused_scripting(error):
            raise ScriptingRefused(
                f"redis refuses the publish fence's scripts ({error}); a worker would not"
                f" start: {GRANT}"
            ) from error
        raise
    return int(reply or 0)


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


_ROW = b"$%d\r\n%s\r\n" * 7


def packed_row(seq: int, row: OutboxRow) -> bytes:
    """A snapshot's seven script arguments in RESP, in one formatting step: its outbox seq
    (each game's is appended once), then its fields in their order
    (``consumer.contract.codec.encode_snapshot``; a test compares the published entries)."""
    source_entry_id, game_id, status, summary, turn, occurred_at_ms = row
    seq_ = b"%d" % seq
    game = game_id.encode()
    status_ = status.encode()
    summary_ = summary.encode()
    turn_ = b"%d" % turn
    at_ms = b"%d" % occurred_at_ms
    source = source_entry_id.encode()
    return _ROW % (
        len(seq_),
        seq_,
        len(game),
        game,
        len(status_),
        status_,
        len(summary_),
        summary_,
        len(turn_),
        turn_,
        len(at_ms),
        at_ms,
        len(source),
        source,
    )


class Fence(NamedTuple):
    """What a publisher proves to Redis: its label's fence key and, per partition of the
    chunk, the epoch it holds (none: an operator's ``outbox flush``, unfenced), and its
    label's marks key (each game's last snapshot appended: none is appended twice)."""

    key: str
    epochs: Mapping[int, int]
    marks: str


def publish_command(stream: str, fence: Fence, rows: list[bytes]) -> bytes:
    """One ``EVALSHA`` of ``PUBLISH`` in RESP: the stream, the fence and each snapshot's
    seven values, packed by ``packed_row``."""
    pairs = [str(value).encode() for pair in sorted(fence.epochs.items()) for value in pair]
    count = 7 + len(pairs) + 7 * len(rows)
    head = b"*%d\r\n" % count + b"".join(
        _bulk(part)
        for part in (
            b"EVALSHA",
            PUBLISH_SHA.encode(),
            b"3",
            stream.encode(),
            fence.key.encode(),
            fence.marks.encode(),
            b"%d" % len(fence.epochs),
            *pairs,
        )
    )
    return head + b"".join(rows)


class Outcome(NamedTuple):
    """What Redis did with one chunk: how many rows it settled (appended now, or before),
    how many of them it appended now, and why it stopped if it did."""

    done: int
    added: int
    fenced: tuple[int, int] | None = None
    """(partition, the fence's epoch) when the chunk was refused whole."""
    refusal: str | None = None
    """Redis's error for the append it refused (the ones before it stand)."""


def outcome(reply: Any) -> Outcome:
    """``PUBLISH``'s reply as an ``Outcome``."""
    done, added = int(reply[0]), int(reply[1])
    if len(reply) == 2:
        return Outcome(done, added)
    kind = reply[2].decode() if isinstance(reply[2], bytes) else str(reply[2])
    if kind == "fenced":
        return Outcome(done, added, fenced=(int(reply[3]), int(reply[4])))
    detail = reply[3].decode() if isinstance(reply[3], bytes) else str(reply[3])
    return Outcome(done, added, refusal=detail)
