"""Break one rule of the contract at a time and check that the test suite notices.

Run from the repository root: ``.venv/bin/python scripts/mutations.py [TEST PATHS]``
(``MUTATION=REGEX`` runs only the mutations whose name it matches). Each mutation is a text
replacement in one source file of a scratch copy of the tree, so the working tree is never
touched; the tests run in the copy, whose packages shadow the editable install. Prints one
line per mutation with the test file that failed first (a mutation no test catches is a
gap in the suite and makes the script exit non-zero). The tests first run on the unmutated
copy and must pass there: a test that fails in the copy anyway (a file it reads was not
copied) would make every mutant look caught. The tests stop at the first failure
(``-x``): whether a mutation is caught is the question, and a full list of what fails
took most of the time (``MUTATION_ALL_FAILURES=1`` lists every failing file instead).
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

AND = "\x00"
"""Joins the parts of a mutation that changes several places of its file: the old and the
new text are split at it into parallel parts, each old part found once."""

MUTATIONS: list[tuple[str, str, str, str]] = [
    (
        "traffic: a status change counted under another trigger",
        "consumer/runtime/batch.py",
        "            result.transitions[(before, after, trigger)] += n",
        '            result.transitions[(before, after, "container_exited")] += n',
    ),
    (
        "traffic: a CAS miss counted under the status it would have gone to",
        "consumer/runtime/batch.py",
        "                result.cas_misses[(trigger, before._value_)] += n",
        "                result.cas_misses[(trigger, Status.ENGINE_UNREACHABLE._value_)] += n",
    ),
    (
        "traffic: a batch's counts added in a transaction of their own, after the batch's",
        "consumer/runtime/batch.py",
        "        target.counts.add(conn, result.edges, now_ms)  # last: rows locked until commit\n"
        + AND
        + "    hit(FaultPoint.AFTER_COMMIT)\n",
        AND + "    hit(FaultPoint.AFTER_COMMIT)\n    with target.db.write() as extra:\n"
        "        traffic.add(extra, batch.result.edges, batch.now_ms)\n",
    ),
    (
        "traffic: an admin change's pair not counted",
        "store/admin.py",
        "        traffic.add(conn, {traffic.Edge(ADMIN_TRIGGER, expected.value, to.value): 1},"
        " now_ms)\n",
        "",
    ),
    (
        "explain: a CAS hit named the summary-only fallback",
        "consumer/operations/history.py",
        "    return RULE_CAS if cas is not None and _pair(source, dest) == cas"
        " else RULE_NOT_IN_TABLE",
        "    return RULE_SUMMARY_ONLY",
    ),
    (
        "explain: the summary-only fallback named a CAS hit",
        "consumer/operations/history.py",
        "    if source == dest:\n        return RULE_SUMMARY_ONLY\n",
        "    if source == dest:\n        return RULE_CAS\n",
    ),
    (
        "explain: a change the table cannot make named a CAS hit",
        "consumer/operations/history.py",
        "RULE_CAS if cas is not None and _pair(source, dest) == cas else RULE_NOT_IN_TABLE",
        "RULE_CAS",
    ),
    (
        "explain: a change debounce held back recorded as a snapshot queued",
        "consumer/runtime/batch.py",
        "                    1 if effect.snapshot_due else 0,\n",
        "                    1,\n",
    ),
    (
        "diagram --traffic: the Mermaid title left unquoted (': ' in it breaks the parser)",
        "statemachine/traffic_diagram.py",
        'title = json.dumps(f"{diagram.title}: {diagram.subtitle}")',
        'title = f"{diagram.title}: {diagram.subtitle}"',
    ),
    (
        "diagram --traffic: a --since beyond the 90 days kept accepted",
        "consumer/operations/traffic.py",
        "    if seconds * 1000 > traffic.KEEP_MS:\n",
        "    if False:\n",
    ),
    (
        "diagram --traffic: counts on edges the table does not have left unsaid",
        "statemachine/traffic_diagram.py",
        "    if unknown:\n",
        "    if False:\n",
    ),
    (
        "dead-letters replay --id: an id no dead letter has left out silently",
        "consumer/operations/dead_letters.py",
        "                for i in sorted(set(ids) - found)\n",
        "                for i in sorted(set(ids) - found - set(ids))\n",
    ),
    (
        "diagram --traffic: the status drawing written over the committed diagram's files",
        "statemachine/traffic_diagram.py",
        '        name="runtime_status.traffic",',
        '        name="runtime_status",',
    ),
    (
        "explain: a narrow terminal gets the squeezed table",
        "consumer/display.py",
        "    if out.width < WIDE_ENOUGH:\n",
        "    if False:\n",
    ),
    (
        "traffic: a worker's counts never drop the old hours",
        "store/traffic.py",
        "prune=bucket != self._pruned_for",
        "prune=False",
    ),
    (
        "traffic: counts kept for ever (old hours never dropped)",
        "store/traffic.py",
        "    if prune:\n",
        "    if False:\n",
    ),
    (
        "demo: an entry is marked debounced without looking for its snapshot",
        "consumer/devtools/demo.py",
        "    if outcome.snapshot is None:\n",
        "    if True:\n",
    ),
    (
        "demo --postgres leaves its server running and its folder behind",
        "consumer/devtools/embedded_pg.py",
        "    try:\n        yield server\n    finally:\n        server.stop()\n",
        "    yield server\n",
    ),
    (
        "diagram: without Graphviz the README still links the SVGs it did not write",
        "consumer/operations/diagrams.py",
        "render_readme(svg=bool(svgs))",
        "render_readme(svg=True)",
    ),
    (
        "partitions: skip the epoch check of one partition (a batch commits while one is lost)",
        "store/partitions.py",
        "    return updated.rowcount == len(held)",
        "    return updated.rowcount >= len(held) - 1",
    ),
    (
        "partitions: apply an entry of a partition the worker does not hold",
        "consumer/runtime/partition_map.py",
        "        return self.of_raw(raw_game_id) in held",
        "        return True",
    ),
    (
        "partitions: forget the per-record skip (a re-read entry applies again)",
        "consumer/runtime/batch.py",
        "            and not_after(event.entry_id, mark)",
        "            and False",
    ),
    (
        "partitions: the relay publishes another partition's rows",
        "consumer/runtime/relay.py",
        "                mine = rows if owns is None else"
        " [row for row in rows if owns(row[1].game_id)]",
        "                mine = rows",
    ),
    (
        "partitions: a new partition starts from the highest old offset",
        "store/partitions.py",
        "        starts[partition] = min(known, key=lambda o: entry_id_key(o[0]))"
        " if known else None",
        "        starts[partition] = max(known, key=lambda o: entry_id_key(o[0]))"
        " if known else None",
    ),
    (
        "ownership: a planned re-partition counted as a lost lease",
        "consumer/runtime/partition_keeper.py",
        "        if changed_at != self.changed_at_ms and changed_at <= self.expires_at_ms:",
        "        if False:",
    ),
    (
        "ownership: a joining standby takes the one partition from the active worker",
        "store/partitions.py",
        "    order = sorted(workers, key=lambda w: (holding.get(w, 0) <= base, w))",
        "    order = sorted(workers)",
    ),
    (
        "partitions: a worker takes more than its fair share",
        "consumer/runtime/partition_keeper.py",
        "        wanted = share - len(self.held)",
        "        wanted = count",
    ),
    (
        "partitions: check passes while a partition has no holder",
        "consumer/operations/partitions.py",
        "        if unowned > ttl_ms:",
        "        if False:",
    ),
    (
        "partitions: offsets set moves only the label's row",
        "consumer/operations/offsets.py",
        "    partitions.set_offsets(conn, label, {p: (entry_id, 0) for p in range(count)}, now_ms)",
        "    partitions.set_offsets(conn, label, {0: (entry_id, 0)}, now_ms)",
    ),
    (
        "partitions: a re-read entry is kept as a dead letter again",
        "store/dead_letters.py",
        "    kept = _already_kept(conn, rows)",
        "    kept: set[tuple[str, str]] = set()",
    ),
    (
        "partitions: stream_offsets does not keep the low-water mark",
        "store/partitions.py",
        "    stored = load_offsets(conn, label)\n    if not stored:\n        return",
        "    stored = load_offsets(conn, label)\n    if True:\n        return",
    ),
    (
        "partitions: release a partition before its outbox is published",
        "consumer/runtime/ownership.py",
        "            self.status.published(self.relay.publish())\n"
        "            released = self.keeper.release(extras)\n",
        "            released = self.keeper.release(extras)\n"
        "            self.status.published(self.relay.publish())\n",
    ),
    (
        "fence: a snapshot sent again is appended again (no per-game mark)",
        "consumer/runtime/fence.py",
        "  if not mark or tonumber(ARGV[j]) > tonumber(mark) then\n",
        "  if true then\n",
    ),
    (
        "fence: a row is compared with another game's mark (the chunk's first)",
        "consumer/runtime/fence.py",
        "  local mark = marks[done + 1]\n",
        "  local mark = marks[1]\n",
    ),
    (
        "fence: a worker does not raise the fence of what it takes",
        "consumer/runtime/ownership.py",
        "        stale = raise_fence(\n"
        "            self.client, self.holdings.fence_key, {p: held[p] for p in taken},"
        " self.keeper.floor\n"
        "        )\n",
        "        stale: dict[int, int] = {}\n",
    ),
    (
        "fence: the publish script appends without comparing epochs",
        "consumer/runtime/fence.py",
        "  if epoch < current or epoch < floor then\n",
        "  if false then\n",
    ),
    (
        "fence: a re-partition's floor is not raised (an old layout's holder appends)",
        "consumer/runtime/fence.py",
        "if floor > tonumber(redis.call('HGET', KEYS[1], 'floor') or '0') then\n",
        "if false then\n",
    ),
    (
        "fence: a --redis-timeout past half the lease is accepted",
        "consumer/settings.py",
        "        if block_s + value > ttl / 2:\n",
        "        if False:\n",
    ),
    (
        "fence: the default Redis timeout ignores the lease",
        "consumer/settings.py",
        "        return block_s + min(DEFAULT_REDIS_TIMEOUT_S, self.lease_ttl_s / 2 - block_s)\n",
        "        return block_s + DEFAULT_REDIS_TIMEOUT_S\n",
    ),
    (
        "a command group without a subcommand prints nothing",
        "consumer/cli/app.py",
        "        _say(ctx.get_help())  # a command group without a subcommand: what it offers\n",
        "        pass\n",
    ),
    (
        "the stop line counts rows others left in the outbox as this worker's",
        "consumer/runtime/status.py",
        "        own = min(published, self.snapshots_committed)\n",
        "        own = published\n",
    ),
    (
        "bulk registration does not look for ids already registered",
        "store/admin.py",
        "        taken = sorted(records.load_many(sql, game_ids))\n",
        "        taken: list[str] = []\n",
    ),
    (
        "bulk registration lets an id given twice through",
        "store/admin.py",
        "    if repeated:\n",
        "    if False:\n",
    ),
    (
        "ownership: a one-partition label's stream_offsets forgets the entries it read",
        "store/offsets.py",
        '        " entries_read = stream_offsets.entries_read + excluded.entries_read",\n',
        '        " entries_read = excluded.entries_read",\n',
    ),
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
        "            r.last_emitted_summary,\n            r.last_entry_id,",
        "            None,\n            r.last_entry_id,",
    ),
    (
        "advance the offset before the commit",
        "consumer/runtime/loop.py",
        "        started = time.perf_counter()\n        result = self._apply_held(entries)",
        "        started = time.perf_counter()\n"
        "        with self.db.write() as conn:\n"
        "            self.offsets.save(conn, entries[-1][0].decode(), 0, len(entries))\n"
        "        result = self._apply_held(entries)",
    ),
    (
        "apply events twice after a crash: ignore the stored offset on start",
        "consumer/runtime/ownership.py",
        "            self.offsets.at[partition] = stored[partition].entry_id",
        "            self.offsets.at[partition] = '0-0'",
    ),
    (
        "lose snapshots: delete the outbox chunk before publishing it",
        "consumer/runtime/relay.py",
        "        packed = publish_command(self.stream, fence, [packed_row(*row) for row in"
        " rows])\n",
        "        with self.db.write() as conn:\n"
        "            outbox.delete_through(conn, rows[-1][0])\n"
        "        hit(FaultPoint.AFTER_PUBLISH)\n"
        "        packed = publish_command(self.stream, fence, [packed_row(*row) for row in"
        " rows])\n",
    ),
    (
        "accept a sloppy timestamp: occurred_at_ms parsed with int()",
        "consumer/contract/codec.py",
        "    if not raw.isdigit():",
        "    if not raw.strip().lstrip(b'+').isdigit():",
    ),
    (
        "dead letters block: a bad entry stops the batch",
        "consumer/runtime/batch.py",
        "            rejected.append("
        "(position, _dead_letter(entry_id, stream, error, fields, now_ms)))",
        "            raise",
    ),
    (
        "the CAS guard always passes",
        "statemachine/machine.py",
        "    return cast(RuntimeRecord, event.model).state is transition.expected\n\n\n"
        "def admin_pair",
        "    return True\n\n\ndef admin_pair",
    ),
    (
        "the admin pair guard always passes",
        "statemachine/machine.py",
        '        kwargs["effect"].pair_allowed = True\n        return True\n    return False\n',
        '        kwargs["effect"].pair_allowed = True\n        return True\n    return True\n',
    ),
    (
        "the lean transition checks only its first guard",
        "statemachine/lean.py",
        "        for condition in self.conditions:\n",
        "        for condition in self.conditions[:1]:\n",
    ),
    (
        "the record cache ignores other writers",
        "store/sqlite/record_cache.py",
        "        if version != self._version:\n",
        "        if self._version is None:\n",
    ),
    (
        "the backoff ignores a stop request",
        "consumer/runtime/loop.py",
        "        self._stop.wait(wait_s)\n        self._backoff_s = min(",
        "        time.sleep(wait_s)\n        self._backoff_s = min(",
    ),
    (
        "the loop checkpoints the WAL itself",
        "store/sqlite/checkpointer.py",
        '        writer.execute("PRAGMA wal_autocheckpoint=0")\n',
        "",
    ),
    (
        "apply each batch twice",
        "consumer/runtime/loop.py",
        "        self.relay.committed(result.snapshots)\n",
        "        self.relay.committed(result.snapshots)\n"
        "        commit_batch(self.target, decode_batch(entries, self.settings.stream,"
        " self.clock()))\n",
    ),
    # -- one active worker (the lease) -----------------------------------------------------
    (
        "two active workers: a live lease does not keep a second worker out",
        "store/partitions.py",
        "            and self.live(now_ms)\n",
        "            and False\n",
    ),
    (
        "no fence: a batch commits without checking the lease",
        "consumer/runtime/batch.py",
        "        if target.fence is not None:\n            target.fence(conn)\n",
        "        pass\n",
    ),
    (
        "no handover: the lease is not released on stop",
        "consumer/runtime/ownership.py",
        "            self.keeper.release(None)\n",
        "            pass\n",
    ),
    (
        "an older release takes a migrated lease: leases stays a table it can write",
        "store/migrations.py",
        '            "DROP TABLE leases",\n'
        '            """CREATE VIEW leases AS\n'
        "                SELECT o.label, o.holder, o.node, o.epoch, o.acquired_at_ms,"
        " o.expires_at_ms\n"
        "                FROM partition_owners o JOIN label_partitions p ON p.label = o.label\n"
        '                WHERE p.partitions = 1 AND o.partition = 0""",\n',
        "",
    ),
    (
        "outbox flush while a worker runs",
        "consumer/operations/outbox.py",
        '    refuse_while_leased(db, None, "refusing to flush the outbox", force)\n',
        "",
    ),
    # -- the stream under the offset -------------------------------------------------------
    (
        "a reset is skipped silently: ids behind the offset are not noticed",
        "consumer/runtime/stream_view.py",
        "    if entry_id_key(view.last_generated_id) < entry_id_key(offset):",
        "    if False:",
    ),
    (
        "a recreated stream is not noticed (Redis 7 entries-added)",
        "consumer/runtime/stream_view.py",
        "and added < entries_read:",
        "and False:",
    ),
    (
        "a gap crossed by a batch goes unchecked: every read is taken as continuous",
        "consumer/runtime/redis_client.py",
        "    return entries[:count], False\n",
        "    return entries[:count], True\n",
    ),
    (
        "an emptied stream hides its gap",
        "consumer/runtime/stream_view.py",
        "        return Gap(None, max(estimate, 1) if estimate is not None else None)",
        "        return None",
    ),
    # -- operator commands -------------------------------------------------------------------
    (
        "replay newest first",
        "store/dead_letters.py",
        "ORDER BY id LIMIT ?",
        "ORDER BY id DESC LIMIT ?",
    ),
    (
        "replays do not claim their rows",
        "consumer/operations/dead_letters.py",
        "        dead_letters.claim(conn, [i for i, _ in chosen], claimer, now)\n",
        "",
    ),
    (
        "a chunk Redis refused is deleted from the outbox all the same (its rows are lost)",
        "consumer/runtime/relay.py",
        "                outbox.delete_seqs(conn_, settled)\n",
        "                outbox.delete_seqs(conn_, seqs)\n",
    ),
    (
        "admin changes never reach Lobby",
        "store/admin.py",
        "        [(seq, _)] = outbox.enqueue(conn, [snapshot])\n",
        "        seq = 0\n",
    ),
    (
        "a running worker never looks for rows other processes queued",
        "consumer/runtime/relay.py",
        "        if rows[0][0] != self._last_seen + 1"
        " and self._ours_between(self._last_seen, rows[0][0]):\n"
        "            self._read_table()\n",
        "",
    ),
    (
        "an idle worker never looks for rows other processes queued",
        "consumer/runtime/loop.py",
        "                self.relay.look_for_others_rows()\n",
        "                pass\n",
    ),
    (
        "offsets set accepts Unicode digits",
        "store/stream_id.py",
        'r"([0-9]+)-([0-9]+)"',
        'r"(\\d+)-(\\d+)"',
    ),
    (
        "a mistyped label silently starts from the beginning",
        "consumer/runtime/start_offset.py",
        "    if others:\n        raise StartRefused(",
        "    if False:\n        raise StartRefused(",
    ),
    # -- the database is never created or changed by mistake -------------------------------
    (
        "every command creates a missing database",
        "store/sqlite/database.py",
        "        if not create or read_only:\n",
        "        if read_only:\n",
    ),
    (
        "a foreign file gets healthfsm's tables",
        "store/sqlite/database.py",
        "    if not tables >= MARKER_TABLES:\n",
        "    if False:\n",
    ),
    (
        "read-only commands switch the file to WAL and migrate it",
        "store/sqlite/database.py",
        "        if read_only:\n"
        "            _require_current(store, path)\n"
        "            return store\n",
        "",
    ),
    (
        "a worker that lost its lease sends its unsent snapshots after taking it back",
        "consumer/runtime/in_flight.py",
        "        if unsettled:\n            self.relay.close()\n",
        "",
    ),
    (
        "a failed batch leaves its changed records in the cache",
        "consumer/runtime/batch.py",
        "        if cache is not None:\n            cache.invalidate()\n        raise\n",
        "        raise\n",
    ),
    (
        "a validation error is not a usage error",
        "consumer/cli/common.py",
        "    except ValidationError as error:",
        "    except KeyError as error:",
    ),
    (
        "an option's bounds are not taken from the settings",
        "consumer/cli/options.py",
        '            bounds["max"] = rule.le',
        "            pass",
    ),
    (
        "moving a SQLite store leaves each table's last column behind",
        "store/transfer.py",
        "column.name for column in lite.utils[table].columns)",
        "column.name for column in lite.utils[table].columns[:-1])",
    ),
    (
        "a table dropped from the store move",
        "store/transfer.py",
        '    "partition_offsets",\n',
        "",
    ),
    (
        "the partition rule ignores hash tags",
        "consumer/contract/partitions.py",
        "    if start != -1:\n",
        "    if False:\n",
    ),
    (
        "a partition's slot range starts one slot early",
        "consumer/contract/partitions.py",
        "    first = -(-partition * SLOTS // partitions)\n",
        "    first = partition * SLOTS // partitions\n",
    ),
    (
        "a released migration step is changed in place",
        "store/migrations.py",
        '"ALTER TABLE stream_offsets ADD COLUMN entries_read {int} NOT NULL DEFAULT 0"',
        '"ALTER TABLE stream_offsets ADD COLUMN entries_read {int} DEFAULT 0"',
    ),
    (
        "the runner skips the newest step on an old store",
        "store/migrations.py",
        "    for version, step in enumerate(MIGRATIONS, start=1):\n",
        "    for version, step in enumerate(MIGRATIONS[:-1], start=1):\n",
    ),
    (
        "migrate goes ahead on a store newer than this build",
        "store/migrations.py",
        "[POSTGRES_LOCK_KEY])\n    needs_migration(sql)\n",
        "[POSTGRES_LOCK_KEY])\n",
    ),
    (
        "SQLite does not mirror the version in user_version",
        "store/migrations.py",
        '            sql.execute(f"PRAGMA user_version={version}")\n',
        "            pass\n",
    ),
    (
        "lobby stream equal to the input is accepted",
        "consumer/settings.py",
        '        if value == info.data.get("stream"):',
        "        if False:",
    ),
    # -- PostgreSQL -----------------------------------------------------------------------------
    (
        "PostgreSQL: a batch reads its records without locking them (lost updates)",
        "store/postgres/store.py",
        "records.load_many(sql, game_ids, for_update=True)",
        "records.load_many(sql, game_ids, for_update=False)",
    ),
    (
        "PostgreSQL: outbox writers do not take turns (seq order is not commit order)",
        "store/outbox.py",
        '    conn.execute("LOCK TABLE outbox IN EXCLUSIVE MODE")\n',
        "",
    ),
    (
        "PostgreSQL: a takeover overwrites a lease renewed after the standby read it",
        "store/partitions.py",
        " WHERE label = ? AND partition = ? AND epoch = ? AND expires_at_ms = ?",
        " WHERE label = ? AND partition = ? AND epoch = ? AND ? IS NOT NULL",
    ),
    (
        "PostgreSQL: concurrent replays choose the same rows",
        "store/dead_letters.py",
        '" FOR UPDATE SKIP LOCKED" if conn.dialect == "postgres" else ""',
        '""',
    ),
    (
        "PostgreSQL: a lock timeout is fatal instead of retried",
        "store/postgres/connect.py",
        "    pg_errors.LockNotAvailable,  # lock_timeout",
        "    pg_errors.UniqueViolation,  # lock_timeout",
    ),
    (
        "PostgreSQL: a server that went away is fatal instead of waited for",
        "consumer/runtime/loop.py",
        "        except StoreUnavailable as error:\n",
        "        except ZeroDivisionError as error:\n",
    ),
    (
        "PostgreSQL: a worker frozen mid-batch keeps its locks (no idle-in-transaction limit)",
        "store/postgres/connect.py",
        '            conn.execute(f"SET idle_in_transaction_session_timeout = {idle_ms}")\n',
        "",
    ),
    (
        "PostgreSQL: a migrated store restarts the outbox sequence (admin ids repeat)",
        "store/transfer.py",
        '    _continue_identity(sql, "outbox", "seq", outbox_seq)\n',
        "",
    ),
    # -- bounded input -------------------------------------------------------------------------
    (
        "a dead letter keeps the whole reason, however long",
        "consumer/runtime/batch.py",
        "    detail = shorten(str(error), DETAIL_CHARS)",
        "    detail = str(error)",
    ),
    (
        "occurred_at_ms with leading zeros is too large",
        "consumer/contract/codec.py",
        '    significant = raw.lstrip(b"0")',
        "    significant = raw",
    ),
    # issue 15: quiet by default, never stalled by the log, a test run that leaves no trace
    (
        "let the transitions library log at INFO again (two lines per status change)",
        "consumer/runtime/logs.py",
        'NOISY_LIBRARY_LOGGERS = ("transitions",)',
        "NOISY_LIBRARY_LOGGERS = ()",
    ),
    (
        "log every rejected entry at WARNING",
        "consumer/runtime/batch.py",
        '    log.debug(\n        "rejected entry %s: %s: %.1024s",',
        '    log.warning(\n        "rejected entry %s: %s: %.1024s",',
    ),
    (
        "the loop waits for a full log queue (a blocked stderr stalls it)",
        "consumer/runtime/log_queue.py",
        "            self.records.put_nowait(text)",
        "            self.records.put(text)",
    ),
    (
        "drops are not counted",
        "consumer/runtime/log_queue.py",
        "        except queue.Full:\n            self.dropped += 1",
        "        except queue.Full:\n            pass",
    ),
    (
        "a writer stuck on stderr keeps the process alive at exit",
        "consumer/cli/app.py",
        "    if not logs.close():",
        "    if not logs.log_queue.uninstall(timeout_s=3600):",
    ),
    (
        "--drain waits out an outage for ever",
        "consumer/runtime/loop.py",
        "        self._outage = Outage(settings.give_up_after_s if settings.drain else None)",
        "        self._outage = Outage(None)",
    ),
    (
        "--drain waits for an unreachable store for ever",
        "consumer/runtime/open_store.py",
        "    outage = Outage(s.give_up_after_s if s.drain else None)",
        "    outage = Outage(None)",
    ),
    (
        "the PostgreSQL test server keeps root's group and supplementary groups",
        "consumer/devtools/embedded_pg.py",
        '        return {"user": self.uid, "group": self.gid, "extra_groups": []}',
        '        return {"user": self.uid}',
    ),
    (
        "the trust socket's folder is open to every local user",
        "consumer/devtools/embedded_pg.py",
        "        root.chmod(0o700)",
        "        root.chmod(0o755)",
    ),
    (
        "a failed PostgreSQL start leaves its folder behind",
        "consumer/devtools/embedded_pg.py",
        "            shutil.rmtree(root, ignore_errors=True)\n        raise",
        "            pass\n        raise",
    ),
    (
        "a stopped Redis test server leaves its folder behind",
        "consumer/devtools/embedded.py",
        "        self._terminate()\n        shutil.rmtree(self.workdir, ignore_errors=True)",
        "        self._terminate()",
    ),
    # issue 16: one contract
    (
        "the document forgets the summary of a game with no health yet",
        "docs/asyncapi.yaml",
        "enum: ['', healthy,",
        "enum: [healthy,",
    ),
    (
        "snapshots carry player_turn_stats the document does not allow",
        "consumer/contract/codec.py",
        '        b"player_turn_stats": b"[]",',
        '        b"player_turn_stats": b"",',
    ),
    (
        "an exception defined outside its layer's errors module",
        "consumer/runtime/outage.py",
        "from consumer.errors import GaveUpWaiting\n",
        "from consumer.errors import GaveUpWaiting\n\n\nclass StrayError(Exception):\n    pass\n",
    ),
    # issue 18: probes, systemd, deploy files
    (
        "readiness ignores what failed",
        "consumer/runtime/health.py",
        "        return self.role in (Role.ACTIVE, Role.STANDBY) and not self.failures()",
        "        return self.role in (Role.ACTIVE, Role.STANDBY)",
    ),
    (
        "liveness ignores a loop that stopped beating",
        "consumer/runtime/health.py",
        "        return self.since_beat_s() <= self.bound_s",
        "        return True",
    ),
    (
        "the loop never beats",
        "consumer/runtime/loop.py",
        "                break\n            self.status.health.beat()",
        "                break",
    ),
    (
        "a Redis outage is not reported to the probes",
        "consumer/runtime/status.py",
        '        self.metrics.reconnects.inc()\n        self.health.failing("redis", error)\n',
        "        self.metrics.reconnects.inc()\n",
    ),
    (
        "a store that is not there yet is not reported to the probes",
        "consumer/runtime/open_store.py",
        '                health.failing("store", error)',
        "                pass",
    ),
    (
        "a schema of another version goes unnoticed",
        "consumer/runtime/status.py",
        "        if found == SCHEMA_VERSION:",
        "        if True:",
    ),
    (
        "systemd never hears READY=1",
        "consumer/runtime/systemd.py",
        '            self.send("READY=1", f"STATUS={status}")',
        '            self.send(f"STATUS={status}")',
    ),
    (
        "systemd never hears WATCHDOG=1",
        "consumer/runtime/systemd.py",
        '            self.send("WATCHDOG=1")',
        "            pass",
    ),
    (
        "systemd never hears STOPPING=1",
        "consumer/runtime/status.py",
        "        self.notifier.stopping()\n",
        "",
    ),
    (
        "a metric renamed under the dashboard and the rules",
        "consumer/runtime/metrics.py",
        '"healthfsm_outbox_pending"',
        '"healthfsm_outbox_backlog"',
    ),
    (
        "a unit whose watchdog fires before the loop's bound",
        "deploy/healthfsm.service",
        "WatchdogSec=60",
        "WatchdogSec=20",
    ),
    (
        "a class grows past 350 lines (the worker's loop takes on another part's job)",
        "consumer/runtime/loop.py",
        '    """Reads, applies and publishes while the worker holds partitions; stands by when'
        ' not."""\n',
        '    """Reads, applies and publishes while the worker holds partitions; stands by when'
        ' not."""\n' + "    filler = 0\n" * 120,
    ),
    (
        "a worker joining during partitions set reads the old count (the count is not held)",
        "store/partitions.py",
        "    partitions = held_count(conn, label)\n",
        "    partitions = count(conn, label)\n",
    ),
    (
        "lease rows beyond the count stall the label for good (nothing clears them)",
        "consumer/runtime/partition_keeper.py",
        "            with self.db.write() as conn:  # once the rows are the count's\n"
        "                parts.ensure(conn, self.label)\n",
        "",
    ),
    (
        "a worker takes partitions under a count it read before a re-partition",
        "consumer/runtime/partition_keeper.py",
        "                if parts.held_count(conn, self.label) != count:\n",
        "                if False:\n",
    ),
    (
        "a worker takes partitions while Redis is away (take, give up, again, each retry)",
        "consumer/runtime/ownership.py",
        "        if not self.keeper.held:\n",
        "        if False:\n",
    ),
    (
        "a unit that systemd does not accept",
        "deploy/healthfsm.service",
        "Type=notify",
        "Type=notfy",
    ),
    (
        "devtools imports the CLI again (cli imports devtools, devtools imports cli)",
        "consumer/devtools/demo.py",
        "from consumer.display import records_table, rows_table\n",
        "from consumer.display import records_table, rows_table\n"
        "from consumer.cli.common import now_ms  # noqa: F401\n",
    ),
    (
        "raw SQL outside the store (the demo counts rows itself)",
        "consumer/devtools/demo.py",
        "        games = records.count(db.conn)\n",
        '        games = db.conn.execute("SELECT count(*) FROM runtime_records").fetchone()[0]\n',
    ),
    (
        "a database driver imported above the store",
        "consumer/devtools/embedded_pg.py",
        "from store.postgres import answers, run_statement\n",
        "import psycopg  # noqa: F401\nfrom store.postgres import answers, run_statement\n",
    ),
    (
        "a read's driver error leaves the SQLite store untranslated (a traceback, no file named)",
        "store/sqlite/store.py",
        "        try:\n            return self.raw.execute(sql, params)\n"
        "        except sqlite3.Error as error:\n"
        "            raise translate(error, self.path) from error\n",
        "        return self.raw.execute(sql, params)\n",
    ),
    (
        "PostgreSQL reads what a batch will change without locking its rows",
        "store/postgres/store.py",
        '    lock_for_update = " FOR UPDATE"\n',
        '    lock_for_update = ""\n',
    ),
    (
        "a chunk confirmed after a rescan moves the table's read past the last holder's rows",
        "consumer/runtime/relay.py",
        "        if not self._from_table:\n            self.published_through = seq\n",
        "        self.published_through = seq\n",
    ),
    (
        "a stream reset exits into the unit's restart loop instead of staying up, failed",
        "consumer/runtime/worker.py",
        "                    if not s.drain:\n                        self._stay_failed(error)\n",
        "",
    ),
    (
        "a worker failed on a stream reset keeps its partitions (offsets set is refused)",
        "consumer/runtime/worker.py",
        "        self.ownership.release_on_stop()\n        self.status.failed(error)\n",
        "        self.status.failed(error)\n",
    ),
    (
        "systemd hears STOPPING=1 on a signal only",
        "consumer/runtime/status.py",
        'every way out."""\n        self.health.role = Role.STOPPING\n'
        "        self.notifier.stopping()\n",
        'every way out."""\n        self.health.role = Role.STOPPING\n',
    ),
    (
        "systemd hears nothing of what a worker waiting for Redis waits for",
        "consumer/runtime/status.py",
        '        self.notifier.status(f"waiting for redis: {error}")\n',
        "",
    ),
    (
        "the watchdog goes quiet while the loop waits out a backoff",
        "consumer/runtime/loop.py",
        "        self._wait(wait_s)\n",
        "        self._stop.wait(wait_s)\n",
    ),
    (
        "the probes' lease expiry stays where the take left it",
        "consumer/runtime/loop.py",
        "                self.status.lease_until(ownership.keeper.expires_at_ms)\n",
        "                pass\n",
    ),
    (
        "healthfsm_ready says ready whatever /readyz says",
        "consumer/runtime/metrics.py",
        '            value=1 if reason == "ready" else 0,\n',
        "            value=1,\n",
    ),
    (
        "the lag gauges keep their last value while Redis is away",
        "consumer/runtime/status.py",
        "        self.metrics.reconnects.inc()\n        self.metrics.lag_unknown()\n",
        "        self.metrics.reconnects.inc()\n",
    ),
    (
        "the unit hides /proc's boot id from the worker (same-host takeover waits the TTL)",
        "deploy/healthfsm.service",
        "ProtectProc=invisible\n",
        "ProtectProc=invisible\nProcSubset=pid\n",
    ),
    (
        "the unit keeps every capability (exposure 3.0)",
        "deploy/healthfsm.service",
        "CapabilityBoundingSet=\n",
        "",
    ),
    (
        "events_consumed_total counts every entry read (K workers count the stream K times)",
        "consumer/runtime/metrics.py",
        "        self.consumed.inc(result.applied + sum(result.rejected.values()))\n",
        "        self.consumed.inc(result.entries)\n",
    ),
    (
        "rejections are one WARNING per batch again (a trickle is a line per bad entry)",
        "consumer/runtime/rejection_log.py",
        '            if now - self._said_at.get(reason, float("-inf")) >= self.every_s:\n'
        "                self._say(reason, now)\n\n    def say_due",
        "            self._say(reason, now)\n\n    def say_due",
    ),
    (
        "--drain exits with rejections it has not said",
        "consumer/runtime/worker.py",
        "                    self.loop.target.rejections.say_all()\n",
        "",
    ),
    (
        "healthfsm_live says live whatever /healthz says",
        "consumer/runtime/metrics.py",
        "            value=1 if self._health.alive() else 0,\n",
        "            value=1,\n",
    ),
    (
        "systemd hears nothing while the worker waits for its store at start",
        "consumer/runtime/open_store.py",
        "            if say is not None:\n",
        "            if False:\n",
    ),
    (
        "status transitions counted without the event type that made them",
        "consumer/runtime/batch.py",
        "    result.transitions[(before, record.state, event.event_type._value_)] += 1\n",
        '    result.transitions[(before, record.state, "")] += 1\n',
    ),
]


COPIED = (
    ".ci",
    "scripts",
    "consumer",
    "statemachine",
    "store",
    "tests",
    "diagrams",
    "docs",
    "deploy",
    "README.md",
    "pyproject.toml",
)


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    tests = sys.argv[1:]  # default: the whole suite
    only = os.environ.get("MUTATION", "")
    missed = 0
    with tempfile.TemporaryDirectory(prefix="healthfsm-mutations-") as scratch:
        copy = Path(scratch)
        for name in COPIED:
            source = root / name
            if source.is_dir():
                shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
            elif source.exists():
                shutil.copy2(source, copy / name)
        baseline = _pytest(copy, tests)
        if baseline.returncode != 0:  # then every mutant would look caught
            print(
                "BASELINE FAILED: the tests fail on the unmutated copy, so no mutation can be"
                f" judged:\n{baseline.stdout.strip()}",
                flush=True,
            )
            return 2
        print(f"baseline passed: {baseline.stdout.strip().splitlines()[-1]}", flush=True)
        for name, path, old, new in MUTATIONS:
            if not re.search(only, name):
                continue
            missed += not _run_one(copy, name, path, old, new, tests)
    return 1 if missed else 0


def _run_one(copy: Path, name: str, path: str, old: str, new: str, tests: list[str]) -> bool:
    """Apply one mutation to the copy, run the tests there, restore; whether it was caught."""
    target = copy / path
    original = target.read_text(encoding="utf-8")
    mutant = original
    for old_part, new_part in zip(old.split(AND), new.split(AND), strict=True):
        if original.count(old_part) != 1:
            print(f"SKIPPED  {name}: pattern not found once in {path}", flush=True)
            return False
        mutant = mutant.replace(old_part, new_part)
    if path.endswith(".py"):
        try:
            ast.parse(mutant)
        except SyntaxError as error:  # every test would fail on import: that proves nothing
            print(f"BROKEN   {name}: the mutant does not parse ({error})", flush=True)
            return False
    try:
        target.write_text(mutant, encoding="utf-8")
        run = _pytest(copy, tests)
    except subprocess.TimeoutExpired:  # a test that hangs on the mutant has noticed it too
        print(f"CAUGHT   {name}: the tests hung (timed out)", flush=True)
        return True
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
        print(f"MISSED   {name}: {run.stdout.strip().splitlines()[-1]}", flush=True)
        return False
    print(f"CAUGHT   {name}: {len(failed)} test files failed: {', '.join(failed)}", flush=True)
    return True


def _pytest(copy: Path, tests: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
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
            *([] if os.environ.get("MUTATION_ALL_FAILURES") == "1" else ["-x"]),
            *tests,
        ],
        cwd=copy,
        env={  # the copy has no history: test_rolling_upgrade reads the previous release here
            "GIT_DIR": str(Path(__file__).resolve().parent.parent / ".git"),
            **os.environ,
            "HYPOTHESIS_PROFILE": "mutation",
        },
        capture_output=True,
        text=True,
        timeout=900,
    )


if __name__ == "__main__":
    sys.exit(main())
