"""Where a worker's CPU goes: applying batches, against reading and skipping entries.

With several workers on one stream each reads every entry and applies only its partitions';
``healthfsm bench --workers`` reports the two parts per 1,000 stream entries, from this
thread's CPU clock (two clock reads per batch, never per event).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


class CpuSplit:
    """CPU seconds spent inside ``applying()`` blocks (decode, machine, commit)."""

    def __init__(self) -> None:
        self.applying_s = 0.0

    @contextlib.contextmanager
    def applying(self) -> Iterator[None]:
        started = time.thread_time()
        try:
            yield
        finally:
            self.applying_s += time.thread_time() - started
