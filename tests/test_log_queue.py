"""The log writer itself on real pipes: it drops instead of waiting, reports its drops once
it catches up, and gives up on a stderr that stays blocked."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time

import pytest

from consumer.runtime import log_queue
from tests.processes import wait_for
from tests.test_log_output import full_pipe


def test_dropped_records_are_counted_and_reported_once_the_writer_catches_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The writer itself on a real pipe: blocked, it drops past its capacity and the caller
    never waits; unblocked, one WARNING says how many were lost."""
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w", buffering=1)
    with contextlib.suppress(BlockingIOError):
        os.set_blocking(write_end, False)
        while True:
            os.write(write_end, b"x" * 65536)
    os.set_blocking(write_end, True)
    monkeypatch.setattr(sys, "stderr", stream)
    writer = log_queue.LogWriter(logging.Formatter("%(levelname)s %(message)s"), capacity=10)
    logger = logging.getLogger("tests.blocked")
    logger.addHandler(writer.handler)
    logger.propagate = False
    try:
        started = time.monotonic()

        def log_500() -> None:
            for i in range(500):
                logger.warning("record %d", i)

        caller = threading.Thread(target=log_500)
        caller.start()
        caller.join(5)
        assert not caller.is_alive(), "the caller waited on the blocked pipe"
        assert time.monotonic() - started < 1.0  # the caller never waited on the pipe
        assert 500 - 10 - 1 <= writer.dropped <= 500 - 10
        os.set_blocking(read_end, False)
        received = b""

        def read_all() -> bool:
            nonlocal received
            with contextlib.suppress(BlockingIOError):
                while chunk := os.read(read_end, 1 << 20):
                    received += chunk
            return b"log records dropped" in received

        wait_for(read_all, 10, "the drop report")
        text = received.replace(b"x", b"").decode()
        assert f"WARNING {writer.dropped} log records dropped" in text
        assert text.count("log records dropped") == 1
        assert writer.close()
    finally:
        logger.removeHandler(writer.handler)
        logger.propagate = True
        os.close(read_end)  # first: a write still blocked on the pipe fails and lets go
        with contextlib.suppress(OSError):
            stream.close()


def test_the_writer_gives_up_on_a_stderr_that_stays_blocked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with full_pipe() as write_end:
        stream = os.fdopen(os.dup(write_end), "w", buffering=1)
        monkeypatch.setattr(sys, "stderr", stream)
        writer = log_queue.LogWriter(logging.Formatter("%(message)s"), capacity=10)
        writer.handler.handle(logging.LogRecord("t", logging.INFO, "", 0, "stuck", (), None))
        started = time.monotonic()
        assert writer.close(timeout_s=0.5) is False
        assert time.monotonic() - started < 2.0
    # the read end is closed now: the writer's blocked write fails and its thread ends
    wait_for(lambda: not writer._thread.is_alive(), 10, "the writer thread ended")
    with contextlib.suppress(OSError):
        stream.close()
