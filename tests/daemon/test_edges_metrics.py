"""The daemon's Prometheus textfile (issue 10): written by the running process, clean for
promtool and node_exporter, in step with `status --json`, quiet while idle, and never a
reason to stop dispatching. Names and meanings: docs/INTERFACES.md "Metrics"."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from hyops_dispatcher.states import OUTCOMES, VERSION
from promtool_helpers import Metrics, check_metrics, parse_metrics

from .conftest import ROUTES, Root, cli, record, wait_for
from .request_seed import approve, request_doc, seed_request

pytestmark = pytest.mark.slow

P = "hyops_decision_dispatcher_"


def metrics_file(root: Root) -> Path:
    return root.path / "state" / "metrics.prom"


def read_metrics(path: Path) -> Metrics:
    assert path.exists(), f"no metrics file at {path}"
    text = path.read_text()
    assert check_metrics(text) == []
    return parse_metrics(text)


def value_is(path: Path, name: str, expected: float, **labels: str):
    def check() -> bool:
        try:
            return read_metrics(path).value(name, **labels) == expected
        except (AssertionError, KeyError, ValueError):
            return False

    return check


def test_metrics_file_is_clean_and_agrees_with_status(
    python: str, root: Root, spawn, tmp_path: Path
) -> None:
    approvals = tmp_path / "approvals"
    approvals.mkdir()
    root.write_config(approvals_dir=str(approvals))
    # Left over from before this start: a cutover request that expired unapproved.
    seed_request(root, request_doc("dec-old", "cutover", time.time() - 7200, ttl=3600))
    daemon = spawn(python, root).wait_ready()
    path = metrics_file(root)
    m = read_metrics(path)  # written by the first pass, before READY
    assert m.series(P + "info") == {
        frozenset(
            {("version", VERSION), ("execution_mode", "record-only"), ("watcher", "inotify")}
        ): 1
    }
    assert m.value(P + "heartbeat_seconds") == 60
    assert abs(m.value(P + "last_pass_timestamp_seconds") - time.time()) < 30
    assert m.value(P + "requests_expired", route="cutover") == 1
    assert m.value(P + "approvals_dir_readable") == 1
    for route in ROUTES:
        assert m.value(P + "requests_total", route=route) == 0

    root.drop("c1.json", record("dec-c1", "cutover"))
    root.drop("f1.json", record("dec-f1", "failback"))  # requires_approval false: queued
    root.drop("bad.json", b"{not json")  # rejected once it has settled (1 s)
    wait_for(value_is(path, P + "records_total", 1, outcome="rejected"), 15, "rejected=1")
    m = read_metrics(path)
    assert m.value(P + "requests_total", route="cutover") == 1
    assert m.value(P + "requests_total", route="failback") == 1
    assert m.value(P + "requests_awaiting_approval", route="cutover") == 1
    assert m.value(P + "requests_awaiting_approval", route="failback") == 0
    assert 0 < m.value(P + "oldest_awaiting_approval_seconds") < 60
    status = json.loads(cli(python, root, "status", "--json").stdout)
    assert m.value(P + "healthy") == (1 if status["healthy"] else 0) == 1
    for outcome in OUTCOMES:
        assert m.value(P + "records_total", outcome=outcome) == status["counters"][outcome]

    # Approving it downstream takes it out of "awaiting" at the next pass.
    request = next(r for r in root.request_docs() if r["source_decision_id"] == "dec-c1")
    approve(approvals, request["dispatch_id"])
    daemon.signal(signal.SIGUSR1)
    wait_for(value_is(path, P + "requests_awaiting_approval", 0, route="cutover"), 10, "approved")
    assert read_metrics(path).value(P + "oldest_awaiting_approval_seconds") == 0
    assert daemon.stop() == 0
    assert read_metrics(path).value(P + "healthy") == 0


def test_idle_daemon_does_not_rewrite_metrics_between_heartbeats(
    python: str, root: Root, spawn
) -> None:
    daemon = spawn(python, root).wait_ready()
    path = metrics_file(root)
    before = path.stat()
    for _ in range(3):  # three safety-net passes with nothing new
        daemon.signal(signal.SIGUSR1)
        time.sleep(0.3)
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_unwritable_metrics_path_is_reported_once_and_retried(
    python: str, root: Root, spawn, tmp_path: Path
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the metrics folder should be\n")
    target = blocker / "dispatcher.prom"
    root.write_config(metrics_textfile=str(target))
    spawn(python, root).wait_ready()
    root.drop("c1.json", record("dec-c1", "cutover"))
    root.drop("c2.json", record("dec-c2", "failback"))
    wait_for(lambda: len(root.request_docs()) == 2, 10, "dispatching goes on")
    errors = [e for e in root.log_lines() if str(target) in json.dumps(e)]
    assert len(errors) == 1, errors
    status = json.loads(cli(python, root, "status", "--json").stdout)
    assert "metrics" in status["last_error"]
    blocker.unlink()
    blocker.mkdir()
    root.drop("c3.json", record("dec-c3", "cutover"))
    wait_for(lambda: target.exists(), 10, "metrics written once the folder exists")
    assert check_metrics(target.read_text()) == []


def test_missing_approvals_folder_is_reported_not_fatal(
    python: str, root: Root, spawn, tmp_path: Path
) -> None:
    # Missing = no consumer yet (issue 16): logged, not unreadable, no alert. A folder that
    # exists but cannot be listed is unreadable (gauge 0) until it can be read.
    approvals = tmp_path / "approvals"
    root.write_config(approvals_dir=str(approvals))
    daemon = spawn(python, root).wait_ready()
    path = metrics_file(root)
    assert read_metrics(path).value(P + "approvals_dir_readable") == 1
    root.drop("c1.json", record("dec-c1", "cutover"))
    wait_for(lambda: len(root.request_docs()) == 1, 10, "dispatching goes on")
    said = [e["event"] for e in root.log_lines() if str(approvals) in json.dumps(e)]
    assert said == ["approvals-missing"], said
    approvals.write_text("a file, not a folder\n")
    daemon.signal(signal.SIGUSR1)
    wait_for(value_is(path, P + "approvals_dir_readable", 0), 10, "approvals unreadable")
    approvals.unlink()
    approvals.mkdir()
    daemon.signal(signal.SIGUSR1)
    wait_for(value_is(path, P + "approvals_dir_readable", 1), 10, "approvals readable again")


def test_records_awaiting_an_operator_stay_counted_until_handled(
    python: str, root: Root, spawn
) -> None:
    """Issue 16: a decision that was not dispatched (unrouted, stale, rejected) is a gauge
    of the files still waiting, not an increase that time clears: it survives a restart
    and drops only when the file is replayed, fixed or taken away."""
    daemon = spawn(python, root).wait_ready()
    path = metrics_file(root)
    for outcome in ("unrouted", "stale", "rejected"):
        assert read_metrics(path).value(P + "records_awaiting_operator", outcome=outcome) == 0
    root.drop("u1.json", record("dec-u1", "Cutover"))  # unrouted (case differs)
    root.drop("s1.json", record("dec-s1", "cutover", timestamp_utc="2020-01-01T00:00:00+00:00"))
    root.drop("bad.json", b"{not json")  # rejected once it has settled (1 s)
    wait_for(value_is(path, P + "records_awaiting_operator", 1, outcome="rejected"), 15, "rejected")
    m = read_metrics(path)
    assert m.value(P + "records_awaiting_operator", outcome="unrouted") == 1
    assert m.value(P + "records_awaiting_operator", outcome="stale") == 1
    assert daemon.stop() == 0

    # Not cleared by a restart either: the count comes from the ledger.
    daemon = spawn(python, root).wait_ready()
    m = read_metrics(path)
    for outcome in ("unrouted", "stale", "rejected"):
        assert m.value(P + "records_awaiting_operator", outcome=outcome) == 1, outcome

    # Handled: the stale one replayed, the rejected one fixed in place, the unrouted one
    # taken away by its owner.
    replay = cli(python, root, "replay", "dec-s1")
    assert replay.returncode == 0, replay.stderr
    root.drop("bad.json", record("dec-b1", "cutover"))
    (root.records / "u1.json").unlink()
    daemon.signal(signal.SIGUSR1)
    for outcome in ("unrouted", "stale", "rejected"):
        wait_for(value_is(path, P + "records_awaiting_operator", 0, outcome=outcome), 10, outcome)
    assert daemon.stop() == 0


def test_a_refused_reload_sets_the_reload_gauge_until_a_good_one(
    python: str, root: Root, spawn
) -> None:
    daemon = spawn(python, root).wait_ready()
    path = metrics_file(root)
    assert read_metrics(path).value(P + "config_last_reload_successful") == 1
    good = root.config.read_text()
    root.config.write_text(good.replace('"poll_seconds": 5', '"poll_seconds": 1'))
    daemon.signal(signal.SIGHUP)
    wait_for(value_is(path, P + "config_last_reload_successful", 0), 10, "refused reload")
    wait_for(lambda: root.state()["config_last_reload_successful"] is False, 5, "in state")
    root.config.write_text(good)
    daemon.signal(signal.SIGHUP)
    wait_for(value_is(path, P + "config_last_reload_successful", 1), 10, "good reload")
    wait_for(lambda: root.state()["config_last_reload_successful"] is True, 5, "in state")
    assert daemon.stop() == 0
