"""Every exception healthfsm raises on purpose, in one place."""


class HealthFsmError(Exception):
    """Base of all healthfsm errors; the CLI turns these into one-line messages."""


class TransitionNotAllowed(HealthFsmError):
    """The transition table has no edge for the requested status change."""


class StatusConflict(HealthFsmError):
    """Compare-and-swap miss: the record is not in the status the caller expected."""


class GameNotFound(HealthFsmError):
    """No runtime record exists for the game id."""


class GameExists(HealthFsmError):
    """A runtime record already exists for the game id."""


class DecodeError(HealthFsmError):
    """A stream entry does not follow the wire contract.

    ``reason`` is a short stable code (used as a metric label and in ``dead_letters``),
    the message says what exactly was wrong.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
