"""Log output that never blocks the batch loop: a bounded queue and one writer thread.

A log call blocks when stderr is a pipe read more slowly than it is written (a busy log
shipper, a supervisor that reads late, a pipe nobody reads). Then the loop stops and SIGTERM
goes unanswered. So records are handed to a bounded queue without waiting, and a daemon
thread writes them. When the queue is full a record is dropped and counted; once the writer
catches up it says, in one WARNING, how many were lost. On exit the queue gets a bounded
time to drain; a writer still stuck after that is abandoned (see ``close``).
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from typing import Final

QUEUE_RECORDS: Final = 10_000
"""Records that may wait for the writer; past this they are dropped and counted."""

DRAIN_ON_EXIT_S: Final = 1.5
"""How long ``close`` waits for queued records to be written before giving up on them."""

_STOP: Final = object()


class _Line:
    """Text to write as it is (a CLI error line), queued in order with the records."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class DroppingQueueHandler(logging.Handler):
    """Formats a record in the caller's thread and queues it without ever waiting.

    The stock ``QueueHandler`` reports a full queue through ``handleError``, which prints a
    traceback to the very stderr that is blocked; this one counts the drop instead.
    """

    def __init__(self, records: queue.Queue[object]) -> None:
        super().__init__()
        self.records = records
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a bad format string must not kill the loop
            self.handleError(record)
            return
        try:
            self.records.put_nowait(text)
        except queue.Full:
            self.dropped += 1

    def handle(self, record: logging.LogRecord) -> bool:
        """``Handler.handle`` without the handler lock: ``emit`` touches only the queue."""
        if not self.filter(record):
            return False
        self.emit(record)
        return True


class LogWriter:
    """The queue, its handler and the thread that writes to ``sys.stderr``.

    ``sys.stderr`` is looked up per write, not at set-up, so a caller that swaps it (tests,
    an embedding program) gets the lines.
    """

    def __init__(self, formatter: logging.Formatter, capacity: int = QUEUE_RECORDS) -> None:
        self.records: queue.Queue[object] = queue.Queue(capacity)
        self.handler = DroppingQueueHandler(self.records)
        self.handler.setFormatter(formatter)
        self._formatter = formatter
        self._reported = 0
        self._thread = threading.Thread(target=self._run, name="healthfsm-log-writer", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Records dropped so far because the writer could not keep up."""
        return self.handler.dropped

    def write_line(self, text: str, timeout_s: float = DRAIN_ON_EXIT_S) -> bool:
        """Queue one line of plain text behind the records; False if it had to be dropped."""
        try:
            self.records.put(_Line(text), timeout=timeout_s)
        except queue.Full:
            self.handler.dropped += 1
            return False
        return True

    def _run(self) -> None:
        while True:
            item = self.records.get()
            if item is _STOP:
                return
            text = item.text if isinstance(item, _Line) else str(item)
            self._write(text)
            if self.records.empty():
                self._report_drops()

    def _report_drops(self) -> None:
        missing = self.handler.dropped - self._reported
        if missing <= 0:
            return
        self._reported += missing
        record = logging.LogRecord(
            __name__,
            logging.WARNING,
            __file__,
            0,
            "%d log records dropped: log output was slower than the worker"
            " (see healthfsm_log_records_dropped_total)",
            (missing,),
            None,
        )
        record.dropped = missing
        self._write(self._formatter.format(record))

    @staticmethod
    def _write(text: str) -> None:
        stream = sys.stderr
        try:
            stream.write(text + "\n")
            stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: nothing more to do
            pass

    def close(self, timeout_s: float = DRAIN_ON_EXIT_S) -> bool:
        """Let the writer finish what is queued, for at most ``timeout_s``.

        Returns True when everything was written and the thread ended. False means the
        writer is stuck on a blocked stderr: the caller must then leave with ``os._exit``,
        since the interpreter's own shutdown would wait on that stream's lock for ever.
        """
        deadline = time.monotonic() + timeout_s
        try:
            self.records.put(_STOP, timeout=timeout_s)
        except queue.Full:
            return False
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()


_installed: LogWriter | None = None
_dropped_before = 0
"""Drops counted by writers already closed in this process (tests configure many)."""


def install(formatter: logging.Formatter, level: str) -> LogWriter:
    """Make a new writer the root logger's only handler, closing any earlier one."""
    global _installed
    uninstall()
    writer = LogWriter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [writer.handler]
    root.setLevel(level)
    _installed = writer
    return writer


def uninstall(timeout_s: float = DRAIN_ON_EXIT_S) -> bool:
    """Close the installed writer (if any); False if it was stuck (see ``LogWriter.close``)."""
    global _installed, _dropped_before
    writer, _installed = _installed, None
    if writer is None:
        return True
    root = logging.getLogger()
    if writer.handler in root.handlers:
        root.removeHandler(writer.handler)
    drained = writer.close(timeout_s)
    _dropped_before += writer.dropped
    return drained


def installed() -> LogWriter | None:
    """The writer in use, or None when logging goes elsewhere (tests, embedding)."""
    return _installed


def dropped_total() -> int:
    """Every record this process dropped because log output was too slow."""
    writer = _installed
    return _dropped_before + (writer.dropped if writer is not None else 0)
