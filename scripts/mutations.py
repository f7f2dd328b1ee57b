"""Break one rule of the contract at a time and check that the test suite notices.

Run from the repository root: ``.venv/bin/python scripts/mutations.py [TEST PATHS]``.
Each mutation is a text replacement in one source file, restored afterwards whatever happens.
Prints one line per mutation with the tests that failed (a mutation no test catches is a
gap in the suite and makes the script exit non-zero).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MUTATIONS: list[tuple[str, str, str, str]] = [
    (
        "flip a status change: running->finished becomes finished->running",
        "statemachine/table.py",
        "(S.RUNNING, S.FINISHED),",
        "(S.FINISHED, S.RUNNING),",
    ),
    (
        "drop a CAS: probe_recovered no longer recovers",
        "statemachine/table.py",
        "Reaction(Summary.HEALTHY, (S.ENGINE_UNREACHABLE, S.RUNNING))",
        "Reaction(Summary.HEALTHY)",
    ),
    (
        "wrong summary: container_oom writes 'exited'",
        "statemachine/table.py",
        "Reaction(Summary.OOM, _UNREACHABLE)",
        "Reaction(Summary.EXITED, _UNREACHABLE)",
    ),
    (
        "drop the debounce: every event emits a snapshot",
        "statemachine/machine.py",
        "if effect.status_changed or record.last_emitted_summary != summary:",
        "if True:",
    ),
    (
        "forget the debounce on restart: last summary not persisted",
        "store/records.py",
        "                r.last_emitted_summary,\n                r.game_id,",
        "                None,\n                r.game_id,",
    ),
    (
        "advance the offset before the commit",
        "consumer/worker.py",
        "        while True:\n            try:\n                result = apply_batch(",
        "        from store.database import immediate\n"
        "        with immediate(self.db) as conn:\n"
        "            offsets.save(conn, self.settings.label, entries[-1][0].decode(), 0)\n"
        "        while True:\n            try:\n                result = apply_batch(",
    ),
    (
        "apply events twice after a crash: ignore the stored offset on start",
        "consumer/worker.py",
        "self._offset = offsets.load(self.db.conn, s.label) or START_ID",
        "self._offset = START_ID",
    ),
    (
        "lose snapshots: delete the outbox chunk before publishing it",
        "consumer/relay.py",
        '        packed = b"".join([xadd_command(head, row) for _, row in rows])\n',
        "        with immediate(self.db) as conn:\n"
        "            outbox.delete_through(conn, rows[-1][0])\n"
        "        hit(FaultPoint.AFTER_PUBLISH)\n"
        '        packed = b"".join([xadd_command(head, row) for _, row in rows])\n',
    ),
    (
        "widen the duplicate window: confirm the previous snapshots after this batch commits",
        "consumer/batch.py",
        "    if decoded_hook is not None:\n        decoded_hook()\n    try:\n"
        "        touched = _commit(db, machine, decoded, rejected, result, stream, label, now_ms,"
        " cache)\n",
        "    try:\n"
        "        touched = _commit(db, machine, decoded, rejected, result, stream, label, now_ms,"
        " cache)\n        if decoded_hook is not None:\n            decoded_hook()\n",
    ),
    (
        "accept a sloppy timestamp: occurred_at_ms parsed with int()",
        "consumer/codec.py",
        "    if not raw.isdigit():",
        "    if not raw.strip().lstrip(b'+').isdigit():",
    ),
    (
        "dead letters block: a bad entry stops the batch",
        "consumer/batch.py",
        "            rejected.append("
        "(position, _dead_letter(entry_id, stream, error, fields, now_ms)))",
        "            raise",
    ),
]


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    tests = sys.argv[1:]  # default: the whole suite
    only = os.environ.get("MUTATION", "")
    missed = 0
    for name, path, old, new in MUTATIONS:
        if only not in name:
            continue
        target = root / path
        original = target.read_text(encoding="utf-8")
        if original.count(old) != 1:
            print(f"SKIPPED  {name}: pattern not found once in {path}")
            missed += 1
            continue
        try:
            target.write_text(original.replace(old, new), encoding="utf-8")
            run = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "-o",
                    "addopts=",
                    "--no-header",
                    "-rf",
                    *tests,
                ],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=900,
            )
        finally:
            target.write_text(original, encoding="utf-8")
        failed = sorted(
            {
                line.split(" ")[1].split("[")[0].split("::")[0].removeprefix("tests/")
                for line in run.stdout.splitlines()
                if line.startswith("FAILED ")
            }
        )
        if run.returncode == 0:
            missed += 1
            print(f"MISSED   {name}: {run.stdout.strip().splitlines()[-1]}")
        else:
            print(f"CAUGHT   {name}: {len(failed)} test files failed: {', '.join(failed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
