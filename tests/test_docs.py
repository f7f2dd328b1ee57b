"""The front door stays true: README commands, the CI script, and the AsyncAPI contract."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from consumer.contract import constants as c
from consumer.contract.codec import encode_snapshot
from statemachine import EventType, RuntimeRecord, Status, Summary
from store.outbox import OutboxRow

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
CONTRACT = (ROOT / "docs" / "contract.md").read_text(encoding="utf-8")


def test_ci_runs_the_readme_test_command() -> None:
    match = re.search(r"&& (\.venv/bin/python -m pytest)\n", README)
    assert match, "README quick start lost its test command"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "pip install --quiet -e '.[test]'" in ci
    assert f"\n{match.group(1)}\n" in ci
    assert "pip install -e '.[test]' && .venv/bin/python -m pytest" in README
    assert "pip install -e '.[demo]' && .venv/bin/healthfsm demo" in README


def test_asyncapi_matches_the_codec() -> None:
    spec = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text(encoding="utf-8"))
    channels = {ch["address"] for ch in spec["channels"].values()}
    assert channels == {c.HEALTH_STREAM, c.LOBBY_STREAM}
    messages = spec["components"]["messages"]
    health = messages["healthEvent"]["payload"]
    assert set(health["required"]) == {"game_id", "event_type", "occurred_at_ms"}
    assert health["properties"]["event_type"]["enum"] == [e.value for e in EventType]
    snapshot = messages["runtimeSnapshotUpdate"]["payload"]
    wire = encode_snapshot(OutboxRow("1-0", "g", "running", "healthy", 0, 1))
    assert set(snapshot["required"]) == {k.decode() for k in wire}
    assert snapshot["properties"]["runtime_status"]["enum"] == [s.value for s in Status]
    summaries = snapshot["properties"]["engine_health_summary"]["enum"]
    assert summaries == [
        RuntimeRecord("g", Status.RUNNING).engine_health,
        *(s.value for s in Summary),
    ]
    source = re.compile(snapshot["properties"]["source_entry_id"]["pattern"])
    from store.admin import ADMIN_SOURCE_PREFIX

    assert source.fullmatch("1700000000000-3") and source.fullmatch(f"{ADMIN_SOURCE_PREFIX}12")


def test_readme_reaction_table_matches_the_code() -> None:
    from statemachine import REACTIONS

    for event_type, reaction in REACTIONS.items():
        cas = (
            "none" if reaction.cas is None else f"{reaction.cas[0].value} → {reaction.cas[1].value}"
        )
        row = f"| {event_type.value} | {reaction.summary.value} | {cas} |"
        assert row in CONTRACT, row


def test_readme_links_resolve() -> None:
    """The front door's links into docs/ and diagrams/ point at files that exist."""
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if not link.startswith("http")]
    assert {"docs/contract.md", "docs/operations.md", "docs/design.md"} <= set(local)
    for link in local:
        assert (ROOT / link).exists(), link


def test_the_readme_health_event_by_hand_runs(tmp_path: Path) -> None:
    """The README's XADD walk-through, run as written: its port becomes a free one and
    ``.venv/bin/`` this interpreter's folder; the record must end up as its comment says."""
    import subprocess
    import sys

    from consumer.devtools.embedded import free_port

    section = README.split("## Health events, by hand", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    assert "XADD runtime:health_events" in block
    for field in ("game_id", "event_type", "occurred_at_ms"):
        assert f"| `{field}` |" in section.split("```sh", 1)[0]
    for event_type in EventType:
        assert f"`{event_type.value}`" in section.split("```sh", 1)[0]
    port = free_port()
    script = block.replace("6390", str(port)).replace(
        ".venv/bin/", str(Path(sys.executable).parent) + "/"
    )
    try:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:  # a step that failed left the daemonized server running
        import socket

        import redis

        with socket.socket() as probe:
            still_up = probe.connect_ex(("127.0.0.1", port)) == 0
        if still_up:
            redis.Redis(port=port).shutdown(nosave=True)
    assert done.returncode == 0, done.stderr
    assert '"status": "engine_unreachable"' in done.stdout
    assert "runtime_snapshot_update" in done.stdout
