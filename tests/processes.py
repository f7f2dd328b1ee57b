"""Real ``healthfsm consume`` processes for tests: started, signalled, waited for, read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest

from consumer.cli import main
from tests import edges

HEALTHFSM = [sys.executable, "-m", "consumer.cli"]


def wait_for(predicate: Callable[[], object], timeout_s: float = 20.0, what: str = "") -> None:
    """Poll until ``predicate()`` is true; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"condition not met in {timeout_s}s: {what}")


class Consume:
    """One ``healthfsm consume`` subprocess; its stderr goes to a file (a pipe could fill).

    Every one started is stopped when its test ends, whatever the outcome
    (``stop_the_workers_a_test_left``, an autouse fixture in conftest): a failing test must
    not leave workers retrying a Redis that is gone.
    """

    started: ClassVar[list[Consume]] = []

    def __init__(self, log: Path, *args: str, env: dict[str, str] | None = None) -> None:
        edges.drove_the_real_worker()
        self.log = log
        self._err = log.open("w")
        self.process = subprocess.Popen(
            [*HEALTHFSM, "consume", *args],
            stdout=subprocess.DEVNULL,
            stderr=self._err,
            env={**os.environ, **(env or {})},
        )
        Consume.started.append(self)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr(self) -> str:
        return self.log.read_text()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout_s: float = 20.0) -> int:
        code = self.process.wait(timeout=timeout_s)
        self._err.close()
        return code

    @classmethod
    def stop_all(cls) -> list[int]:
        """Stop every worker still running (SIGTERM, then SIGKILL); return their pids."""
        left = [worker for worker in cls.started if worker.process.poll() is None]
        for worker in left:
            worker.stop()
        for worker in cls.started:
            worker._err.close()
        cls.started.clear()
        return [worker.pid for worker in left]

    def stop(self) -> int:
        """SIGTERM, then the exit code (SIGKILL if it does not stop in time)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.wait()
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.wait()


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, input: str = ""
) -> subprocess.CompletedProcess[str]:
    """One short ``healthfsm`` command in a process of its own, output captured (and
    ``input`` on its standard input)."""
    edges.drove_the_real_worker()
    return subprocess.run(
        [*HEALTHFSM, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        env={**os.environ, **(env or {})},
    )


def cli_in_process(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """One ``healthfsm`` command in the test's process: its exit code, stdout and stderr."""
    edges.drove_the_real_worker()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def is_stopped(pid: int) -> bool:
    """Whether the process is stopped (SIGSTOP), from ``/proc``."""
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "T"
