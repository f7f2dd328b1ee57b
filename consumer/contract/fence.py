"""Where a label's publish fence lives in Redis: one hash per label beside the lobby stream.

Field ``partition`` holds the epoch of the partition's current holder, raised by each worker
that takes the partition before it publishes anything. Every append to the lobby stream is a
script that compares the publisher's epochs with these fields and appends only when they are
current, so a worker whose ownership has passed on can never append, whenever its bytes
reach Redis. The key carries the lobby stream's hash tag, so on Redis Cluster it lives in the
stream's slot and one script may touch both.
"""

from __future__ import annotations

from consumer.contract.partitions import hash_tag, key_slot

FENCE_SUFFIX = ":healthfsm:fence:"
"""Between the hash tag and the label: ``{gm:lobby_events}:healthfsm:fence:health_events``."""

MARKS_SUFFIX = ":healthfsm:published:"
"""Each game's last snapshot appended (its outbox seq), so none is appended twice."""


def fence_key(lobby_stream: str, label: str) -> str:
    """The fence hash of ``label``'s partitions, in ``lobby_stream``'s key slot."""
    return _beside(lobby_stream, FENCE_SUFFIX + label)


def marks_key(lobby_stream: str, label: str, store_id: str) -> str:
    """The hash of ``label``'s games' last appended snapshots from the store ``store_id``
    (outbox seqs are a store's own), in the same slot."""
    return _beside(lobby_stream, MARKS_SUFFIX + label + ":" + store_id)


def _beside(lobby_stream: str, suffix: str) -> str:
    tag = hash_tag(lobby_stream.encode()).decode(errors="surrogateescape")
    key = "{" + tag + "}" + suffix
    if key_slot(key) != key_slot(lobby_stream):
        raise ValueError(
            f"--lobby-stream {lobby_stream!r}: a fence key cannot share its key slot (a '}}'"
            " without '{' in the name); rename the stream"
        )
    return key
