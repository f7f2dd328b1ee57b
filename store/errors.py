"""Errors the store raises: the database is missing, foreign, busy, out of date or owned; a
game that is or is not there; a store that cannot be moved."""

from statemachine.errors import HealthFsmError


class StoreError(HealthFsmError):
    """Base of the store's own errors; the CLI prints the message as one line and exits 1."""


class StoreMissing(StoreError):
    """The database file does not exist and this command does not create one."""


class NotAStore(StoreError):
    """The file holds tables but is not a healthfsm store; it is left untouched."""


class SchemaError(StoreError):
    """The schema is newer than this build, older than a read-only command needs, or broken."""


class StoreBusy(StoreError):
    """The database stayed locked by another writer past the busy timeout."""


class LeaseHeld(StoreError):
    """Another live worker holds the lease this command needs (the message names it)."""


class LeaseLost(StoreError):
    """This worker's lease was taken over: its batch rolled back, it must stand by."""


class StoreUnavailable(StoreError):
    """The database server cannot be reached just now: back off and reconnect."""


class GameNotFound(StoreError):
    """No runtime record exists for the game id."""


class GameExists(StoreError):
    """A runtime record already exists for the game id."""


class TransferRefused(StoreError):
    """The source still has work in flight, or the target already holds records."""


class Repartitioned(LeaseLost):
    """An operator changed the label's partition count while this worker held its leases:
    a planned change, after which the worker takes its share of the new partitions."""

    def __init__(self, message: str, before: int, after: int) -> None:
        super().__init__(message)
        self.before = before
        self.after = after
