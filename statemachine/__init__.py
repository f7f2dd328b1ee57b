"""The runtime-status domain: statuses, the transition table and the shared machine.

Pure code: no I/O, no logging configuration. The store and the consumer build on it.
"""

import logging

from statemachine.enums import EventType, Status, Summary
from statemachine.errors import StatusConflict, TransitionNotAllowed
from statemachine.machine import ADMIN_TRIGGER, Effect, RuntimeMachine, get_machine
from statemachine.record import RuntimeRecord
from statemachine.table import ALLOWED_CHANGES, REACTIONS, Reaction

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "ADMIN_TRIGGER",
    "ALLOWED_CHANGES",
    "REACTIONS",
    "Effect",
    "EventType",
    "Reaction",
    "RuntimeMachine",
    "RuntimeRecord",
    "Status",
    "StatusConflict",
    "Summary",
    "TransitionNotAllowed",
    "get_machine",
]
