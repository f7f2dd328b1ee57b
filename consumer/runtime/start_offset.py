"""Where a worker starts reading: the stored offset, or for a new label ``--start-from``.

A label with no offset in a store that already holds others is refused unless
``--start-from`` says where it begins: a mistyped ``--label`` would otherwise apply the
whole stream again to live records.
"""

from __future__ import annotations

import logging

import redis

from consumer.errors import StartRefused
from consumer.runtime.stream_view import stream_view
from consumer.settings import ConsumerSettings
from store import offsets
from store.backend import Store
from store.stream_id import START_ID, StreamId

log = logging.getLogger(__name__)


def refuse_an_unconfirmed_new_label(db: Store, s: ConsumerSettings) -> None:
    """``StartRefused`` for a new label beside others, unless ``--start-from`` confirms it."""
    if s.start_from is not None or offsets.load(db.conn, s.label) is not None:
        return
    others = [str(row["label"]) for row in offsets.list_all(db.conn)]
    if s.label in others:
        return  # another worker sharing the label by partition placed it just now
    if others:
        raise StartRefused(
            f"label {s.label!r} has no stored offset, but this database has offsets"
            f" for {', '.join(repr(o) for o in others)}; a new label would apply the"
            " stream from its beginning again: check --label, or confirm with"
            " --start-from beginning|end|ID"
        )


def first_offset(db: Store, client: redis.Redis, s: ConsumerSettings) -> tuple[str, int]:
    """(entry id, entries read before it) where a label that never committed starts: for
    its partitions, placed at once for all of them (``partitions.init_offsets``)."""
    if s.start_from is None:
        refuse_an_unconfirmed_new_label(db, s)
        return START_ID, 0
    entry_id, known_read = _resolve(s.start_from, client, s.stream)
    log.info("label %r starts at %s (--start-from %s)", s.label, entry_id, s.start_from)
    return entry_id, known_read


def _resolve(start_from: str, client: redis.Redis, stream: str) -> tuple[str, int]:
    """(entry id, entries read before it when known) for ``--start-from``."""
    if start_from == "beginning":
        return START_ID, 0
    if start_from == "end":
        view = stream_view(client, stream)
        if view is None:
            return START_ID, 0
        return view.last_generated_id, view.entries_added or 0
    return str(StreamId.parse(start_from)), 0
