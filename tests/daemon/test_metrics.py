"""The pure parts behind the metrics file and the approval views (issue 10): the approval
rule as a table, `render_metrics` against promtool and the reference file, and the
MetricsReport rule that time alone never rewrites the file between heartbeats."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from hyops_dispatcher.approvals import RequestFacts, approval_state, request_facts
from hyops_dispatcher.jsonlog import JsonLog
from hyops_dispatcher.metrics import METRIC_PREFIX, MetricsReport, MetricsSnapshot, render_metrics
from hyops_dispatcher.report import StateReport
from hyops_dispatcher.states import OUTCOMES
from promtool_helpers import check_metrics, parse_metrics

REFERENCE = Path(__file__).resolve().parents[1] / "prometheus" / "fixtures"
NOW = 1_790_000_000.0
ID = "dispatch-20260921T141000Z-cutover-0c1d2e3f"


def facts(**over: Any) -> Any:
    base = dict(
        dispatch_id=ID,
        route="cutover",
        needs_approval=True,
        issued_at=NOW - 600,
        expires_at=None,
        supersedes=None,
        synthetic=False,
    )
    base.update(over)
    return RequestFacts(**base)


# (id, facts, approved, superseded, expected): first match wins
STATES = [
    ("queued-never-waits", facts(needs_approval=False), True, True, "not-required"),
    ("marker-beats-everything-else", facts(expires_at=NOW - 1), True, True, "approved"),
    ("superseded-beats-expired", facts(expires_at=NOW - 1), False, True, "superseded"),
    ("expired-when-expires-at-passed", facts(expires_at=NOW), False, False, "expired"),
    ("awaiting-before-expiry", facts(expires_at=NOW + 1), False, False, "awaiting"),
    ("awaiting-without-ttl", facts(), False, False, "awaiting"),
]


@pytest.mark.parametrize(
    ("row", "approved", "superseded", "expected"),
    [s[1:] for s in STATES],
    ids=[s[0] for s in STATES],
)
def test_approval_state(row: Any, approved: bool, superseded: bool, expected: str) -> None:
    assert approval_state(row, approved, superseded, NOW) == expected


def test_request_facts_reads_what_the_rule_needs() -> None:
    doc = {
        "dispatch_id": ID,
        "timestamp_utc": "2026-09-21T14:10:05+00:00",
        "status": "awaiting-approval",
        "route": "cutover",
        "expires_at": "2026-09-21T15:10:05+00:00",
        "supersedes": "dispatch-20260921T140000Z-failback-00000000",
        "source_decision_id": "handoff-check-20260921T141000Z-0a0b0c0d",
    }
    got = request_facts(doc)
    assert got.expires_at - got.issued_at == 3600 and got.needs_approval
    assert got.supersedes == doc["supersedes"] and got.synthetic is True
    assert request_facts({**doc, "status": "queued"}).needs_approval is False
    assert request_facts({**doc, "dispatch_id": "../x"}) is None
    assert request_facts([doc]) is None


def snapshot(**over: Any) -> Any:
    base = dict(
        version='0.1.0"\\\n',  # every character the text format escapes
        watcher="inotify",
        healthy=True,
        heartbeat_seconds=60,
        records_total=tuple((o, 0) for o in sorted(OUTCOMES)),
        requests_total=(("cutover", 2), ("failback", 0)),
        awaiting=(("cutover", 1), ("failback", 0)),
        expired=(("cutover", 0), ("failback", 0)),
        approvals_dir_readable=False,
        awaiting_operator=(("rejected", 0), ("stale", 2), ("unrouted", 1)),
        reload_ok=False,
        last_pass=NOW + 0.25,
        oldest_awaiting_s=754.2,
    )
    base.update(over)
    return MetricsSnapshot(**base)


def test_rendered_file_is_clean_and_has_the_reference_families() -> None:
    text = render_metrics(snapshot())
    assert check_metrics(text) == []
    got = parse_metrics(text)
    want = parse_metrics((REFERENCE / "decision-dispatcher.prom").read_text())
    assert got.types == want.types and got.helps == want.helps
    assert {k for k, _ in got.samples} == {k for k, _ in want.samples}
    assert dict(got.series(METRIC_PREFIX + "info")) == {
        frozenset(
            {("version", '0.1.0"\\\n'), ("execution_mode", "record-only"), ("watcher", "inotify")}
        ): 1
    }
    assert got.value(METRIC_PREFIX + "approvals_dir_readable") == 0
    assert got.value(METRIC_PREFIX + "oldest_awaiting_approval_seconds") == 754.2
    assert got.value(METRIC_PREFIX + "records_awaiting_operator", outcome="stale") == 2
    assert got.value(METRIC_PREFIX + "config_last_reload_successful") == 0


class _Config:
    def __init__(self, path: Path) -> None:
        self.metrics_textfile = str(path)
        self.heartbeat_seconds = 60
        self.poll_seconds = 5


def test_time_alone_rewrites_only_at_the_heartbeat(tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    log = JsonLog(None, "INFO", 1 << 20, 1, to_stderr=False)
    metrics = MetricsReport(_Config(path), StateReport(log, time.time()))
    metrics.write(snapshot(), NOW)
    first = path.stat()
    assert oct(first.st_mode & 0o777) == "0o644"
    later = snapshot(last_pass=NOW + 30, oldest_awaiting_s=784.2)
    metrics.write(later, NOW + 30)
    assert path.stat().st_ino == first.st_ino  # not rewritten: only time moved
    approved = later._replace(awaiting=(("cutover", 0), ("failback", 0)))
    metrics.write(approved, NOW + 31)
    assert path.stat().st_ino != first.st_ino  # a value changed: rewritten at once
    second = path.stat()
    metrics.write(approved._replace(last_pass=NOW + 90), NOW + 90)
    assert path.stat().st_ino == second.st_ino
    metrics.write(approved._replace(last_pass=NOW + 91), NOW + 91)
    assert path.stat().st_ino != second.st_ino  # the heartbeat rewrites it
