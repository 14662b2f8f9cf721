"""The daemon as a real process: requests and state validate, bad input gets an outcome,
signals, sd_notify, the lock, the CLI. Each runs under the venv's Python and Python 3.9."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from .conftest import (
    Root,
    assert_valid,
    cli,
    now_iso,
    record,
    wait_for,
)

pytestmark = pytest.mark.slow


def test_records_become_valid_requests_and_state(python: str, root: Root, spawn) -> None:
    root.write_config(
        max_record_age_seconds=10 * 365 * 86400, ledger_retention_seconds=10 * 365 * 86400
    )
    daemon = spawn(python, root).wait_ready()
    root.drop("r1.json", record("decision-20260921T141000Z-cutover-0c1d2e3f", timestamp_utc=None))
    root.drop("r2.json", record("r2", "failback"))
    root.drop("r3.json", {"decision_id": "test-cutover-001", "decision_type": "cutover"})
    docs = wait_for(lambda: len(root.request_docs()) == 3 and root.request_docs(), 10, "3 requests")
    for doc in docs:
        assert_valid("dispatch-request", doc)
        path = root.requests / f"{doc['dispatch_id']}.json"
        assert path.exists()
    by_source = {doc["source_decision_id"]: doc for doc in docs}
    assert by_source["r2"]["status"] == "queued" and by_source["r2"]["requires_approval"] is False
    assert by_source["r2"]["approval_source"] == "route" and "expires_at" in by_source["r2"]
    assert by_source["test-cutover-001"]["status"] == "awaiting-approval"
    assert by_source["test-cutover-001"]["approval_source"] == "global"
    assert by_source["decision-20260921T141000Z-cutover-0c1d2e3f"]["dispatch_id"].startswith(
        "dispatch-20260921T141000Z-cutover-"
    )
    # Nothing but requests matches *.json in the requests folder; no temp files left.
    assert sorted(os.listdir(root.requests)) == sorted(f"{d['dispatch_id']}.json" for d in docs)
    wait_for(lambda: root.state()["counters"]["emitted"] == 3, 5, "state counters")
    state = root.state()
    assert_valid("dispatcher-state", state)
    assert state["status"] == "running" and state["watcher"] == "inotify"
    assert len(json.dumps(state)) < 8192
    status = json.loads(cli(python, root, "status", "--json").stdout)
    assert status["running"] is True and status["healthy"] is True
    assert daemon.stop() == 0
    state = root.state()
    assert_valid("dispatcher-state", state)
    assert state["status"] == "stopped"
    status = cli(python, root, "status", "--json")
    assert status.returncode == 6 and json.loads(status.stdout)["running"] is False
    events = [line["event"] for line in root.log_lines()]
    assert events[0] == "started" and events[-1] == "stopped"
    assert events.count("emitted") == 3
    assert "READY=1" in daemon.messages and any(m == "STOPPING=1" for m in daemon.messages)


def _old(path: Path, seconds: float = 30) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_every_bad_input_gets_an_outcome_and_the_daemon_keeps_running(
    python: str, root: Root, spawn
) -> None:
    daemon = spawn(python, root).wait_ready()
    r = root.records
    expected: dict[str, tuple[str, str]] = {}

    def bad(name: str, data: bytes, outcome: str, reason: str, old: bool = True) -> None:
        p = r / name
        p.write_bytes(data)
        if old:
            _old(p)
        expected[name] = (outcome, reason)

    bad("invalid.json", b'{"decision_id": "x", ', "rejected", "invalid JSON")
    bad("array.json", b"[1, 2, 3]", "rejected", "JSON is an array")
    bad("string.json", b'"hello"', "rejected", "JSON is a string")
    bad("no-id.json", b'{"decision_type": "cutover"}', "rejected", "missing decision_id")
    bad(
        "unsafe.json",
        b'{"decision_id": "../../x", "decision_type": "cutover"}',
        "rejected",
        "unsafe decision_id",
    )
    bad("no-type.json", b'{"decision_id": "no-type"}', "rejected", "missing decision_type")
    bad(
        "huge.json",
        b'{"decision_id": "huge", "decision_type": "cutover", "pad": "' + b"x" * 5000 + b'"}',
        "rejected",
        "over max_record_bytes",
    )
    bad("binary.json", os.urandom(64) + b"\xff", "rejected", "")
    (r / "target.txt").write_text('{"decision_id": "via-link", "decision_type": "cutover"}')
    os.symlink(r / "target.txt", r / "link.json")
    expected["link.json"] = ("rejected", "symlink")
    os.mkfifo(r / "fifo.json")
    expected["fifo.json"] = ("rejected", "not a regular file")
    (r / "dir.json").mkdir()
    expected["dir.json"] = ("rejected", "not a regular file")
    root.drop("unrouted.json", record("unrouted-1", "reboot"))
    expected["unrouted.json"] = ("unrouted", "no route for decision_type 'reboot'")
    root.drop("case.json", record("case-1", "Cutover"))
    expected["case.json"] = ("unrouted", "differs only by case")
    root.drop("stale.json", record("stale-1", timestamp_utc=now_iso(-2 * 86400)))
    expected["stale.json"] = ("stale", "over max_record_age_seconds")
    root.drop("local.json", record("local-1", status="queued-local-exec"))
    expected["local.json"] = ("skipped", "queued-local-exec")
    root.drop("good.json", record("good-1"))
    expected["good.json"] = ("emitted", "")
    wait_for(lambda: len(root.request_docs()) == 1, 10, "the good request")
    root.drop("again.json", record("good-1"))
    expected["again.json"] = ("duplicate", "already emitted")
    # The ignored names never get an outcome: temp files and other extensions.
    (r / ".partial.json.tmp").write_text("{")
    (r / "notes.txt").write_text("hello")

    def all_seen() -> bool:
        got = root.outcomes()
        return all(name in got and got[name][0] == exp[0] for name, exp in expected.items())

    wait_for(all_seen, 10, "an outcome for every file")
    got = root.outcomes()
    for name, (outcome, reason) in expected.items():
        assert got[name][0] == outcome, name
        assert reason in got[name][1], (name, got[name])
    assert set(got) == set(expected)
    assert len(root.request_docs()) == 1
    assert daemon.proc.poll() is None

    # Every outcome is counted, logged once per file, and listed.
    wait_for(lambda: root.state()["counters"]["duplicate"] == 1, 5, "state written")
    counters = root.state()["counters"]
    for outcome in ("rejected", "unrouted", "stale", "skipped", "emitted", "duplicate"):
        assert counters[outcome] == sum(1 for o, _ in expected.values() if o == outcome), outcome
    logged = {line.get("file") for line in root.log_lines() if line["event"] != "pending"}
    assert set(expected) <= logged
    listing = json.loads(cli(python, root, "list", "--json").stdout)
    listed = {row["file"] for row in listing["records"]}
    assert listed == {n for n, (o, _) in expected.items() if o != "emitted"}
    assert [req["source_decision_id"] for req in listing["requests"]] == ["good-1"]

    # A rejected file that changes is looked at again, and a fixed one is dispatched.
    (r / "array.json").write_text(json.dumps(record("fixed-1")))
    wait_for(lambda: root.outcomes()["array.json"][0] == "emitted", 10, "fixed file emitted")
    assert len(root.request_docs()) == 2
    # An idle pass reads nothing and logs nothing.
    size = root.log.stat().st_size
    for _ in range(5):
        daemon.signal(signal.SIGUSR1)
        time.sleep(0.05)
    time.sleep(0.2)
    assert root.log.stat().st_size == size
    assert daemon.stop() == 0


@pytest.mark.parametrize("inotify", [True, False], ids=["inotify", "polling"])
def test_partial_write_is_dispatched_once(python: str, root: Root, spawn, inotify: bool) -> None:
    env = {} if inotify else {"HYOPS_DISPATCHER_NO_INOTIFY": "1"}
    daemon = spawn(python, root, env=env).wait_ready()
    data = json.dumps(record("partial-1")).encode()
    path = root.records / "partial-1.json"
    with open(path, "wb") as fh:
        fh.write(data[: len(data) // 2])
        fh.flush()
        time.sleep(6.0)  # longer than a poll (5 s) and than settle_seconds (1 s)
        fh.write(data[len(data) // 2 :])
    wait_for(
        lambda: root.outcomes().get("partial-1.json", ("",))[0] == "emitted",
        10,
        "partial file dispatched",
    )
    time.sleep(0.3)
    docs = root.request_docs()
    assert [doc["source_decision_id"] for doc in docs] == ["partial-1"]
    assert_valid("dispatch-request", docs[0])
    assert root.state()["watcher"] == ("inotify" if inotify else "poll")
    assert daemon.stop() == 0


def test_polling_only_is_still_correct(python: str, root: Root, spawn) -> None:
    daemon = spawn(python, root, env={"HYOPS_DISPATCHER_NO_INOTIFY": "1"}).wait_ready()
    for i in range(20):
        root.drop(f"p{i}.json", record(f"poll-{i}"))
    root.drop("dup.json", record("poll-3"))
    (root.records / "bad.json").write_text("[]")
    wait_for(lambda: len(root.outcomes()) == 22, 12, "all 22 files handled by polling")
    assert sorted(d["source_decision_id"] for d in root.request_docs()) == sorted(
        f"poll-{i}" for i in range(20)
    )
    assert root.outcomes()["dup.json"][0] == "duplicate"
    os.unlink(root.records / "p0.json")
    wait_for(lambda: "p0.json" not in root.outcomes(), 12, "removal noticed")
    assert root.state()["watcher"] == "poll"
    assert daemon.stop() == 0


def test_second_instance_is_refused(python: str, root: Root, spawn) -> None:
    first = spawn(python, root).wait_ready()
    second = cli(python, root, "run", timeout=20)
    assert second.returncode == 4
    assert "already runs" in second.stderr
    once = cli(python, root, "once", timeout=20)
    assert once.returncode == 4
    assert first.stop() == 0


BAD_CONFIGS = [
    ({"poll_seconds": 1}, "poll_seconds"),
    ({"routes": {"cutover": {"target_kind": "blueprint"}}}, "routes.cutover.target_ref"),
    ({"execution_mode": "execute"}, "execution_mode"),
]


@pytest.mark.parametrize(("over", "key"), BAD_CONFIGS)
def test_invalid_config_exits_3_naming_the_key(python: str, root: Root, over, key: str) -> None:
    root.write_config(**over)
    for command in ("check-config", "run", "once", "status"):
        result = cli(python, root, command, timeout=20)
        assert result.returncode == 3, (command, result.stderr)
        assert key in result.stderr and str(root.config) in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    root.config.write_text("{not json")
    assert cli(python, root, "check-config").returncode == 3
    root.config.unlink()
    result = cli(python, root, "check-config")
    assert result.returncode == 3 and "cannot read" in result.stderr


def test_check_config_ok_and_help(python: str, root: Root) -> None:
    result = cli(python, root, "check-config")
    assert result.returncode == 0 and "config OK" in result.stdout
    helptext = cli(python, root, "--help").stdout
    for command in (
        "run",
        "once",
        "check-config",
        "status",
        "list",
        "explain",
        "validate-handoff",
        "replay",
    ):
        assert command in helptext
    assert cli(python, root, "frobnicate").returncode == 2


def test_sighup_reloads_and_a_bad_config_keeps_the_old(python: str, root: Root, spawn) -> None:
    daemon = spawn(python, root).wait_ready()
    root.drop("a.json", record("reload-a", "reboot"))
    wait_for(lambda: root.outcomes().get("a.json", ("",))[0] == "unrouted", 5, "unrouted")
    routes = dict(json.loads(root.config.read_text())["routes"])
    routes["reboot"] = {
        "target_kind": "module",
        "target_ref": "ops/reboot",
        "target_env": "dr",
        "execution_plane": "gcp-iap",
    }
    root.write_config(routes=routes)
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: any(ln["event"] == "config-reloaded" for ln in root.log_lines()), 5, "reload")
    root.drop("b.json", record("reload-b", "reboot"))
    wait_for(lambda: len(root.request_docs()) == 1, 5, "request via the new route")
    assert root.request_docs()[0]["target_ref"] == "ops/reboot"
    good = root.config.read_text()
    root.config.write_text(good.replace('"poll_seconds": 5', '"poll_seconds": 1'))
    daemon.signal(signal.SIGHUP)
    wait_for(
        lambda: any(
            "keeping the running config" in (ln.get("reason") or "") for ln in root.log_lines()
        ),
        5,
        "refused reload logged",
    )
    root.drop("c.json", record("reload-c", "reboot"))
    wait_for(lambda: len(root.request_docs()) == 2, 5, "still dispatching with the old config")
    assert daemon.proc.poll() is None
    wait_for(lambda: "poll_seconds" in root.state()["last_error"], 5, "last_error in state")
    assert daemon.stop() == 0


def test_watchdog_and_notify(python: str, root: Root, spawn) -> None:
    daemon = spawn(python, root, env={"WATCHDOG_USEC": "200000"}).wait_ready()
    wait_for(lambda: daemon.read_notify().count("WATCHDOG=1") >= 4, 3, "watchdog pings")
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "RELOADING=1" in daemon.read_notify(), 3, "RELOADING=1")
    assert daemon.stop() == 0
    assert "STOPPING=1" in daemon.messages


def test_sigterm_mid_burst_leaves_everything_consistent(python: str, root: Root, spawn) -> None:
    daemon = spawn(python, root).wait_ready()
    names = [f"burst-{i:04d}" for i in range(400)]
    for name in names:
        root.drop(f"{name}.json", record(name))
    wait_for(lambda: len(os.listdir(root.requests)) >= 20, 10, "burst under way")
    assert daemon.stop() == 0
    assert not [n for n in os.listdir(root.requests) if not n.endswith(".json")], "temp files left"
    handled = {n for n, (o, _) in root.outcomes().items() if o == "emitted"}
    on_disk = {d["source_decision_id"] + ".json" for d in root.request_docs()}
    assert handled <= on_disk  # a ledger row never precedes its request
    again = spawn(python, root).wait_ready()
    wait_for(lambda: len(root.request_docs()) == 400, 20, "the rest after restart")
    sources = [d["source_decision_id"] for d in root.request_docs()]
    assert sorted(sources) == names
    assert again.stop() == 0


def test_validate_handoff(python: str, root: Root, spawn) -> None:
    # No daemon: the check fails with exit 5 and says why.
    result = cli(python, root, "validate-handoff", "--json", "--timeout", "2")
    assert result.returncode == 5
    verdict = json.loads(result.stdout)
    assert verdict["ok"] is False
    assert {c["name"]: c["ok"] for c in verdict["checks"]}["daemon-running"] is False
    daemon = spawn(python, root).wait_ready()
    result = cli(python, root, "validate-handoff", "--json")
    verdict = json.loads(result.stdout)
    assert result.returncode == 0, verdict
    assert verdict["ok"] is True and verdict["dispatch_id"].startswith("dispatch-")
    names = {c["name"] for c in verdict["checks"]}
    assert {"request-written", "status", "target", "cleanup"} <= names
    assert os.listdir(root.requests) == []
    assert [n for n in os.listdir(root.records) if n.startswith("handoff")] == []
    result = cli(python, root, "validate-handoff", "--json", "--decision-type", "failback")
    assert result.returncode == 0, result.stdout
    statuses = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    # A synthetic request waits for approval even on a no-approval route (issue 9).
    assert statuses["status"]["actual"] == "awaiting-approval"
    assert statuses["synthetic"]["ok"] is True
    result = cli(python, root, "validate-handoff", "--decision-type", "reboot")
    assert result.returncode == 5
    # The synthetic checks never become last_dispatch_id (a published output).
    assert root.state()["last_dispatch_id"] == ""
    assert daemon.stop() == 0


def test_replay_and_explain(python: str, root: Root, spawn) -> None:
    daemon = spawn(python, root).wait_ready()
    root.drop("old.json", record("old-1", timestamp_utc=now_iso(-3 * 86400)))
    wait_for(lambda: root.outcomes().get("old.json", ("",))[0] == "stale", 5, "stale")
    explained = json.loads(cli(python, root, "explain", "old-1").stdout)
    assert explained["would"] == "stale" and explained["route"] == "cutover"
    assert root.request_docs() == []
    result = cli(python, root, "replay", "old-1")
    assert result.returncode == 0, result.stderr
    dispatch_id = json.loads(result.stdout)["dispatch_id"]
    docs = root.request_docs()
    assert [d["dispatch_id"] for d in docs] == [dispatch_id]
    assert_valid("dispatch-request", docs[0])
    again = cli(python, root, "replay", "old-1")
    assert again.returncode == 1 and "already dispatched" in again.stderr
    assert cli(python, root, "replay", "never-seen").returncode == 1
    assert any(ln["event"] == "replayed" for ln in root.log_lines())
    explained = json.loads(cli(python, root, "explain", "old.json").stdout)
    assert explained["would"].startswith("nothing")
    assert daemon.stop() == 0


@pytest.mark.parametrize("damage", ["deleted", "corrupt"])
def test_lost_or_corrupt_ledger_rebuilds_without_duplicates(
    python: str, root: Root, spawn, damage: str
) -> None:
    daemon = spawn(python, root).wait_ready()
    for i in range(10):
        root.drop(f"l{i}.json", record(f"ledger-{i}"))
    (root.records / "bad.json").write_text("[]")
    wait_for(lambda: len(root.request_docs()) == 10, 10, "10 requests")
    assert daemon.stop() == 0
    before = sorted(os.listdir(root.requests))
    if damage == "deleted":
        root.ledger.unlink()
    else:
        root.ledger.write_bytes(b"this is not a database" * 100)
    daemon = spawn(python, root).wait_ready()
    wait_for(lambda: len(root.outcomes()) == 11, 10, "every file known again")
    assert sorted(os.listdir(root.requests)) == before
    outcomes = root.outcomes()
    assert all(outcomes[f"l{i}.json"][0] == "emitted" for i in range(10))
    assert outcomes["bad.json"][0] == "rejected"
    if damage == "corrupt":
        assert list(root.ledger.parent.glob("ledger.sqlite3.corrupt-*"))
        assert any("rebuilding" in (ln.get("reason") or "") for ln in root.log_lines())
    assert daemon.stop() == 0


def test_redropped_decision_never_gets_a_second_request(python: str, root: Root, spawn) -> None:
    daemon = spawn(python, root).wait_ready()
    root.drop("x.json", record("redrop-1"))
    wait_for(lambda: len(root.request_docs()) == 1, 5, "first request")
    # The consumer takes the request away and the record disappears and comes back.
    for p in root.requests.glob("*.json"):
        p.unlink()
    (root.records / "x.json").unlink()
    wait_for(lambda: "x.json" not in root.outcomes(), 5, "removal noticed")
    root.drop("x.json", record("redrop-1"))
    root.drop("y.json", record("redrop-1"))
    wait_for(lambda: {"x.json", "y.json"} <= set(root.outcomes()), 5, "both seen")
    time.sleep(0.3)
    assert root.request_docs() == []
    assert daemon.stop() == 0


def test_once_and_human_status(python: str, root: Root) -> None:
    root.drop("o1.json", record("once-1"))
    root.drop("o2.json", b"[]")
    result = cli(python, root, "once")
    assert result.returncode == 0, result.stderr
    assert [d["source_decision_id"] for d in root.request_docs()] == ["once-1"]
    state = root.state()
    assert_valid("dispatcher-state", state)
    assert state["status"] == "stopped" and state["counters"]["rejected"] == 1
    again = cli(python, root, "once")
    assert again.returncode == 0 and len(root.request_docs()) == 1
    human = cli(python, root, "status")
    assert human.returncode == 6  # no daemon runs: stopped
    assert "healthy:" in human.stdout and "NO" in human.stdout  # not running
    listing = cli(python, root, "list")
    assert "once-1" in listing.stdout and "JSON is an array" in listing.stdout
