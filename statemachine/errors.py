"""The domain's errors, and the base of every error healthfsm raises on purpose.

Each layer keeps its own beside it: ``store.errors`` and ``consumer.errors``.
"""


class HealthFsmError(Exception):
    """Base of all healthfsm errors; the CLI turns these into one-line messages."""


class TransitionNotAllowed(HealthFsmError):
    """The transition table has no edge for the requested status change."""


class StatusConflict(HealthFsmError):
    """Compare-and-swap miss: the record is not in the status the caller expected."""
