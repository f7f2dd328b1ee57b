"""Logging set-up for the CLI: human text or one JSON object per line for log shippers."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from consumer.runtime import log_queue

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and value is not None:
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


NOISY_LIBRARY_LOGGERS = ("transitions",)
"""Library loggers that log per call at INFO: ``transitions`` logs every state's exit and
enter callbacks, so twice per status change. They are shown only at ``--log-level DEBUG``."""


def configure(level: str = "INFO", fmt: str = "text") -> log_queue.LogWriter:
    """Send logs to stderr in the chosen format through the non-blocking writer; called
    once, at the CLI edge. ``close`` ends it."""
    formatter: logging.Formatter = (
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    )
    level = level.upper()
    library_level = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for name in NOISY_LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(library_level)
    return log_queue.install(formatter, level)


def close() -> bool:
    """Write what is still queued, for a bounded time; False if stderr stayed blocked."""
    return log_queue.uninstall()
