"""The files operators deploy beside the worker cannot drift from it: every metric and
label that the Grafana dashboard and the Prometheus rules use is one the worker exports,
and the systemd unit is one that systemd accepts and that matches what the worker does."""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from consumer.runtime.batch import BatchResult
from consumer.runtime.health import HealthState
from consumer.runtime.metrics import Metrics
from statemachine import Status

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
TARGET_LABELS = {"job", "instance"}
"""Labels Prometheus itself adds to every scraped series."""


def exported() -> dict[str, set[str]]:
    """Every sample name the worker exports, with its label names, read from a scrape of a
    registry in which every labelled metric has a child."""
    identity = {"label": "l", "stream": "s", "lobby_stream": "o"}
    metrics = Metrics(health=HealthState(10.0), identity=identity)
    result = BatchResult(last_entry_id="1-0", entries=1, applied=1)
    result.rejected = Counter({"unknown_game": 1})
    result.transitions = Counter(
        {(Status.RUNNING, Status.ENGINE_UNREACHABLE, "container_exited"): 1}
    )
    result.cas_misses = Counter({("probe_recovered", "generation_in_progress"): 1})
    metrics.observe_batch(result, 0.01)
    metrics.partition_lag_entries.labels("0").set(0)
    metrics.skipped.labels("other_partition").inc()
    names: dict[str, set[str]] = {}
    text = generate_latest(metrics.registry).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


METRIC = re.compile(r"\b((?:healthfsm|process|python)_[a-z0-9_]+)\b(\{[^}]*\})?")
MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def check_expression(expr: str, names: dict[str, set[str]]) -> list[str]:
    """What in one PromQL expression the worker does not export (empty: all is known)."""
    problems = []
    used = METRIC.findall(expr)
    if not used:
        problems.append(f"no healthfsm metric in {expr!r}")
    labels_here: set[str] = set(TARGET_LABELS)
    for name, selector in used:
        if name not in names:
            problems.append(f"{name} is not exported")
            continue
        labels_here |= names[name]
        for label in MATCHER.findall(selector):
            if label not in names[name] | TARGET_LABELS:
                problems.append(f"{name} has no label {label!r}")
    for group in GROUPING.findall(expr):
        for label in (part.strip() for part in group.split(",") if part.strip()):
            if label not in labels_here:
                problems.append(f"grouping by {label!r}, which no metric in {expr!r} has")
    return problems


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "healthfsm.json").read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]


def rules() -> list[dict[str, object]]:
    loaded = yaml.safe_load((DEPLOY / "prometheus" / "healthfsm-rules.yaml").read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_the_check_notices_a_metric_or_label_the_worker_does_not_have() -> None:
    names = exported()
    assert check_expression("rate(healthfsm_events_consumed_total[5m])", names) == []
    assert check_expression("rate(healthfsm_events_eaten_total[5m])", names)
    assert check_expression('healthfsm_events_rejected_total{game_id="g"}', names)
    assert check_expression("sum by (game_id) (healthfsm_events_rejected_total)", names)
    assert check_expression("sum by (reason) (healthfsm_events_rejected_total)", names) == []


def test_every_dashboard_query_uses_what_the_worker_exports() -> None:
    names = exported()
    expressions = dashboard_expressions()
    assert len(expressions) >= 12
    problems = [p for expr in expressions for p in check_expression(expr, names)]
    assert not problems
    covered = {name for expr in expressions for name, _ in METRIC.findall(expr)}
    for wanted in (
        "healthfsm_events_consumed_total",  # throughput
        "healthfsm_consumer_lag_entries",
        "healthfsm_consumer_lag_seconds",
        "healthfsm_events_rejected_total",
        "healthfsm_status_transitions_total",
        "healthfsm_cas_conflicts_total",
        "healthfsm_outbox_pending",
        "healthfsm_lease_held",
        "healthfsm_redis_reconnects_total",
        "healthfsm_stream_gaps_total",
    ):
        assert wanted in covered, wanted


def test_every_alert_rule_uses_what_the_worker_exports() -> None:
    names = exported()
    found = rules()
    assert {r["alert"] for r in found} >= {
        "HealthfsmStreamGap",
        "HealthfsmStreamReset",
        "HealthfsmNoActiveWorker",
        "HealthfsmLeaseLost",
        "HealthfsmLagging",
    }
    for rule in found:
        expr = str(rule["expr"])
        assert not check_expression(expr, names), rule["alert"]
        annotations = rule.get("annotations", {})
        assert isinstance(annotations, dict) and annotations.get("summary"), rule["alert"]
        grouped = {p.strip() for g in GROUPING.findall(expr) for p in g.split(",")}
        for text in annotations.values():
            for label in re.findall(r"\$labels\.(\w+)", str(text)):
                assert label in grouped | TARGET_LABELS or f"{label}=" in expr, (
                    f"{rule['alert']}: {label} is not in the alert's labels"
                )


def _anchor(heading: str) -> str:
    """The fragment a Markdown renderer gives a heading (GitHub's rule)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_alert_names_its_label_a_severity_and_a_section_that_says_what_to_do() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text()
    anchors = {
        _anchor(line.lstrip("#")) for line in operations.splitlines() if line.startswith("#")
    }
    for rule in rules():
        name = str(rule["alert"])
        grouped = {p.strip() for g in GROUPING.findall(str(rule["expr"])) for p in g.split(",")}
        assert "label" in grouped, f"{name}: one label's alert must not hide another's"
        labels = rule.get("labels", {})
        assert isinstance(labels, dict) and labels.get("severity") in {"page", "ticket"}, name
        annotations = rule.get("annotations", {})
        assert isinstance(annotations, dict), name
        url = str(annotations.get("runbook_url", ""))
        assert url.startswith("file:///opt/healthfsm/docs/operations.md#"), name
        assert url.split("#")[1] == name.lower() and name.lower() in anchors, name


def _family(name: str) -> str:
    for suffix in ("_total", "_bucket", "_count", "_sum", "_created"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def test_every_exported_metric_is_on_a_panel_or_in_a_rule_or_the_docs_say_why_not() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "healthfsm.json").read_text())
    templating = [str(v.get("query", "")) for v in dashboard["templating"]["list"]]
    expressions = dashboard_expressions() + [str(r["expr"]) for r in rules()] + templating
    shown = {_family(name) for expr in expressions for name, _ in METRIC.findall(expr)}
    operations = (ROOT / "docs" / "operations.md").read_text()
    why_not = re.search(r"Not on a panel or in a\s+rule: (.*?)\.\n", operations, re.S)
    assert why_not is not None, "docs/operations.md says which metrics are left off, and why"
    left_off = set(re.findall(r"`([a-z_]+)`", why_not.group(1)))
    missing = {_family(name) for name in exported()} - shown - left_off
    assert missing == set()


def test_the_dashboard_asks_for_its_data_source_on_import() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "healthfsm.json").read_text())
    inputs = dashboard["__inputs"]
    assert [(i["type"], i["pluginId"]) for i in inputs] == [("datasource", "prometheus")]
    chosen = next(v for v in dashboard["templating"]["list"] if v["name"] == "datasource")
    assert chosen["current"]["value"] == "${" + inputs[0]["name"] + "}"


def test_the_docs_link_the_rules_file_instead_of_pasting_it() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text()
    assert "deploy/prometheus/healthfsm-rules.yaml" in operations
    assert "deploy/grafana/healthfsm.json" in operations
    assert "- alert: " not in operations


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    parser.read_string((DEPLOY / "healthfsm.service").read_text())
    return parser


def test_the_unit_is_a_notify_service_with_a_watchdog_and_a_graceful_stop() -> None:
    service = unit()["Service"]
    assert service["Type"] == "notify"
    assert service["TimeoutStartSec"] == "infinity"  # READY=1 waits for Redis and the store
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    watchdog = int(service["WatchdogSec"])
    stop_timeout = int(service["TimeoutStopSec"])
    # the loop beats at least every 2 x 2 s + 15 s + 10 s with the defaults (health.py)
    assert watchdog >= 2 * 29
    assert stop_timeout >= 10  # a batch, the outbox and the 1.5 s log drain
    assert "healthfsm consume" in service["ExecStart"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    """``systemd-analyze verify`` on the unit, its ExecStart pointed at this install (verify
    checks that the program exists); it exits 0 even for unknown keys, so any line it
    prints about the file counts as a failure."""
    text = (DEPLOY / "healthfsm.service").read_text()
    here = Path(sys.executable).parent / "healthfsm"
    local = tmp_path / "healthfsm.service"
    local.write_text(re.sub(r"ExecStart=\S+", f"ExecStart={here}", text))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(local)], capture_output=True, text=True, timeout=60
    )
    complaints = [line for line in done.stderr.splitlines() if str(local) in line]
    assert done.returncode == 0 and not complaints, done.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_the_unit_is_hardened_to_an_exposure_of_2_or_less(tmp_path: Path) -> None:
    local = tmp_path / "healthfsm.service"
    local.write_text((DEPLOY / "healthfsm.service").read_text())
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(local)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout + done.stderr)
    assert found is not None, done.stdout + done.stderr
    assert float(found.group(1)) <= 2.0, done.stdout
    # what would hide from the worker what it reads: the boot id for same-host takeover
    assert "ProcSubset" not in unit()["Service"]


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="no systemd-sysusers here")
def test_the_sysusers_file_makes_the_units_user_and_group(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    conf = (DEPLOY / "healthfsm.sysusers.conf").read_text()
    done = subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", "-"],
        input=conf,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    service = unit()["Service"]
    users = [line.split(":") for line in (tmp_path / "etc" / "passwd").read_text().splitlines()]
    groups = [line.split(":") for line in (tmp_path / "etc" / "group").read_text().splitlines()]
    assert [u[0] for u in users] == [service["User"]] and users[0][6] == "/usr/sbin/nologin"
    assert [g[0] for g in groups] == [service["Group"]]


def test_the_worker_runs_with_write_xor_execute_memory(tmp_path: Path) -> None:
    """``MemoryDenyWriteExecute=yes`` refuses memory that is writable and executable; the
    kernel's PR_SET_MDWE (Linux 6.3+) applies the same rule to one process: the demo (a
    worker, Redis, SQLite) runs through under it."""
    script = (
        "import ctypes, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "if libc.prctl(65, 1, 0, 0, 0) != 0:\n"  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        "    sys.exit(77)\n"
        "from consumer.cli import main\n"
        f"sys.exit(main(['demo', '--db', {str(tmp_path / 'demo.db')!r}]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    if done.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
    assert done.returncode == 0, done.stderr[-2000:]
