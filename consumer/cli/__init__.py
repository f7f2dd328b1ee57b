"""The ``healthfsm`` command line: the app, its operator commands and the output for people."""

from consumer.cli.app import app, main
from consumer.cli.common import (
    EXIT_CONFLICT,
    EXIT_ERROR,
    EXIT_NOT_ALLOWED,
    EXIT_OK,
    EXIT_USAGE,
)

__all__ = [
    "EXIT_CONFLICT",
    "EXIT_ERROR",
    "EXIT_NOT_ALLOWED",
    "EXIT_OK",
    "EXIT_USAGE",
    "app",
    "main",
]
