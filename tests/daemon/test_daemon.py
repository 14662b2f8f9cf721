"""The shell pieces in-process with an injected clock: log rotation, ledger retention,
coalescing across restarts, the records folder coming and going."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hyops_dispatcher import daemon as daemon_module
from hyops_dispatcher.approvals import approval_now
from hyops_dispatcher.config import parse_config
from hyops_dispatcher.daemon import start_daemon
from hyops_dispatcher.ids import iso_ts
from hyops_dispatcher.jsonlog import JsonLog
from hyops_dispatcher.ledger import Ledger
from hyops_dispatcher.states import OUTCOMES

from .conftest import ROUTES, Root, now_iso, record, wait_for


def test_log_rotates_by_size_and_keeps_backups(tmp_path: Path) -> None:
    path = tmp_path / "dispatcher.log"
    log = JsonLog(str(path), "INFO", 2000, 3, to_stderr=False)
    for i in range(200):
        log.event("emitted", file=f"r{i}.json", reason="x" * 40)
    log.event("pruned", level="DEBUG", reason="below the level: not written")
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["dispatcher.log", "dispatcher.log.1", "dispatcher.log.2", "dispatcher.log.3"]
    for name in files:
        data = (tmp_path / name).read_text()
        assert len(data) <= 2000
        for line in data.splitlines():
            doc = json.loads(line)
            assert {"ts", "level", "event"} <= set(doc)
    assert "r199.json" in (tmp_path / "dispatcher.log").read_text()
    assert "below the level" not in "".join((tmp_path / n).read_text() for n in files)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def make(tmp_path: Path, clock: Clock, **over: Any) -> tuple[Any, Path]:
    base, records = tmp_path / "root", tmp_path / "records"
    (base / "logs").mkdir(parents=True, exist_ok=True)
    records.mkdir(exist_ok=True)
    doc = {
        "schema_version": 1,
        "root": str(base),
        "decision_records_dir": str(records),
        "execution_mode": "record-only",
        "require_approval": True,
        "poll_seconds": 5,
        "settle_seconds": 0,
        "ledger_retention_seconds": 3600,
        "max_record_age_seconds": 3600,
        "routes": ROUTES,
    }
    doc.update(over)
    cfg = parse_config(json.dumps(doc).encode(), str(base / "config" / "config.json"))
    log = JsonLog(cfg.log_file, "INFO", cfg.log_max_bytes, 2, to_stderr=False)
    daemon = start_daemon(cfg, log, clock=clock, use_inotify=False)
    return daemon, records


def put(records: Path, name: str, doc: dict[str, Any]) -> None:
    (records / name).write_text(json.dumps(doc))


def test_retention_prunes_only_gone_and_old_rows(tmp_path: Path) -> None:
    clock = Clock()
    daemon, records = make(tmp_path, clock)
    put(records, "kept.json", record("kept-1"))
    put(records, "gone.json", record("gone-1"))
    daemon.scan(full=True)
    (records / "gone.json").unlink()
    daemon.scan(full=True)
    clock.now += 1800
    daemon.prune()
    assert daemon.ledger.get_decision("gone-1") is not None  # younger than the retention
    clock.now += 3600
    daemon.prune()
    assert daemon.ledger.get_decision("gone-1") is None
    assert daemon.ledger.get_file("gone.json") is None
    assert daemon.ledger.get_decision("kept-1") is not None  # its file is still there
    assert daemon.ledger.get_file("kept.json")["outcome"] == "emitted"
    daemon.stop()


def test_coalescing_window_survives_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    routes = {**ROUTES, "failback": {**ROUTES["failback"], "coalesce_seconds": 600}}
    daemon, records = make(tmp_path, clock, routes=routes)
    put(records, "f1.json", record("fb-1", "failback", timestamp_utc=now_iso(-500)))
    daemon.scan(full=True)
    daemon.stop()
    daemon, records = make(tmp_path, clock, routes=routes)
    put(records, "f2.json", record("fb-2", "failback"))
    put(records, "c1.json", record("co-1", "cutover"))
    daemon.scan(full=True)
    outcomes = {r["file"]: r for r in daemon.ledger.listing(OUTCOMES)}
    assert outcomes["f1.json"]["outcome"] == "emitted"
    assert outcomes["f2.json"]["outcome"] == "coalesced"
    assert outcomes["f2.json"]["dispatch_id"] == outcomes["f1.json"]["dispatch_id"]
    assert outcomes["c1.json"]["outcome"] == "emitted"  # another route: its own window
    # The window slides on the episode's last decision (fb-2, now), not on its request
    # (fb-1, 500 s ago): 700 s after the request, 200 s after fb-2, still the same episode.
    put(records, "f3.json", record("fb-3", "failback", timestamp_utc=now_iso(+200)))
    daemon.scan(full=True)
    assert daemon.ledger.get_file("f3.json")["outcome"] == "coalesced"
    daemon.stop()
    # ... and that survives a restart too (the folded decisions are in the ledger).
    daemon, records = make(tmp_path, clock, routes=routes)
    put(records, "f4.json", record("fb-4", "failback", timestamp_utc=now_iso(+250)))
    daemon.scan(full=True)
    assert daemon.ledger.get_file("f4.json")["outcome"] == "coalesced"
    assert daemon.ledger.get_file("f4.json")["dispatch_id"] == outcomes["f1.json"]["dispatch_id"]
    daemon.stop()


def test_pending_file_is_rejected_after_it_settles_then_reopened(tmp_path: Path) -> None:
    clock = Clock()
    daemon, records = make(tmp_path, clock, settle_seconds=2)
    (records / "slow.json").write_text('{"decision_id": "slow-1", ')
    clock.now = time.time()
    daemon.scan(full=True)
    assert daemon.ledger.get_file("slow.json")["outcome"] == "pending"
    assert "slow.json" in daemon.index.watched
    clock.now += 3
    daemon.scan()
    row = daemon.ledger.get_file("slow.json")
    assert row["outcome"] == "rejected" and "invalid JSON" in row["reason"]
    (records / "slow.json").write_text(json.dumps(record("slow-1")))
    daemon.scan()
    assert daemon.ledger.get_file("slow.json")["outcome"] == "emitted"
    assert "slow.json" not in daemon.index.watched
    daemon.stop()


@pytest.mark.slow
def test_records_folder_missing_then_created(root: Root, spawn) -> None:
    os.rmdir(root.records)
    daemon = spawn(sys.executable, root).wait_ready()
    wait_for(lambda: root.state()["status"] == "degraded", 5, "degraded")
    assert root.state()["records_dir_ok"] is False
    assert cli_status(root)["healthy"] is False
    root.records.mkdir()
    root.drop("late.json", record("late-1"))
    wait_for(lambda: len(root.request_docs()) == 1, 12, "request after the folder appeared")
    wait_for(lambda: root.state()["status"] == "running", 5, "running again")
    wait_for(lambda: root.state()["watcher"] == "inotify", 5, "inotify re-armed")
    # The folder is replaced under the daemon: the watch follows the new one.
    for p in root.records.iterdir():
        p.unlink()
    os.rmdir(root.records)
    root.records.mkdir()
    wait_for(lambda: root.state()["watcher"] == "inotify", 12, "watch on the new folder")
    root.drop("later.json", record("later-1"))
    wait_for(lambda: len(root.request_docs()) == 2, 12, "request in the new folder")
    events = [ln["event"] for ln in root.log_lines()]
    assert "recovered" in events and "error" in events
    assert daemon.stop() == 0


def cli_status(root: Root) -> dict[str, Any]:
    from .conftest import cli

    return json.loads(cli(sys.executable, root, "status", "--json").stdout)


def test_future_mtime_does_not_keep_a_file_pending(tmp_path: Path) -> None:
    clock = Clock()
    daemon, records = make(tmp_path, clock, settle_seconds=2)
    path = records / "future.json"
    path.write_text("{")
    future = time.time() + 10 * 365 * 86400
    os.utime(path, (future, future))
    daemon.scan(full=True)
    assert daemon.ledger.get_file("future.json")["outcome"] == "pending"
    clock.now += 3
    daemon.scan()
    assert daemon.ledger.get_file("future.json")["outcome"] == "rejected"
    daemon.stop()


def test_reload_refuses_a_path_change_and_keeps_the_config(tmp_path: Path) -> None:
    clock = Clock()
    daemon, _records = make(tmp_path, clock)
    config_path = Path(daemon.config.path)
    config_path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "schema_version": 1,
        "root": daemon.config.root,
        "decision_records_dir": str(tmp_path / "elsewhere"),
        "execution_mode": "record-only",
        "require_approval": False,
        "poll_seconds": 5,
        "routes": ROUTES,
    }
    config_path.write_text(json.dumps(doc))
    before = daemon.config
    daemon.reload()
    assert daemon.config is before
    assert "restart" in daemon.report.last_error
    doc["decision_records_dir"] = before.records_dir
    config_path.write_text(json.dumps(doc))
    daemon.reload()
    assert daemon.config.require_approval is False and daemon.config.digest != before.digest
    daemon.stop()


def log_events(daemon: Any) -> list[str]:
    lines = Path(daemon.config.log_file).read_text().splitlines()
    return [json.loads(line)["event"] for line in lines]


def test_unlistable_records_folder_is_reported_once_and_recovers_after_a_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    daemon, records = make(tmp_path, clock)
    real_scandir = os.scandir
    denied = {"on": True}

    def scandir(path: Any = ".") -> Any:
        # root ignores mode bits, so an unreadable folder is simulated at the call
        if denied["on"] and os.fspath(path) == str(records):
            raise PermissionError(13, "Permission denied", str(records))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    put(records, "a.json", record("perm-1"))
    for _ in range(5):  # idle passes while the folder stays unlistable: one error, no flapping
        clock.now += 5
        daemon.scan()
    events = log_events(daemon)
    assert events.count("error") == 1 and "recovered" not in events
    assert daemon.report.records_dir_ok is False
    denied["on"] = False  # e.g. chmod: the folder mtime does not change
    clock.now += 5
    daemon.scan()
    events = log_events(daemon)
    assert events.count("recovered") == 1 and daemon.report.records_dir_ok is True
    assert daemon.ledger.get_file("a.json")["outcome"] == "emitted"
    daemon.stop()


def test_a_request_on_disk_without_its_ledger_row_is_adopted_after_a_crash(
    tmp_path: Path,
) -> None:
    """Crash between the request's rename and the ledger commit: the next start reconciles
    the requests folder (the last stop was not clean), so no second request is written."""
    clock = Clock()
    daemon, records = make(tmp_path, clock)
    put(records, "c.json", record("crash-1"))
    assert daemon.consider("c.json", clock()) == 1
    daemon.batch.writes.commit()  # the request is on disk ...
    daemon.ledger.rollback()  # ... and the process dies before the ledger commit
    daemon.ledger.close()
    os.close(daemon.lock_fd)
    requests = sorted(os.listdir(daemon.config.requests_dir))
    assert len(requests) == 1
    daemon, _records = make(tmp_path, clock)
    assert daemon.ledger.get_decision("crash-1")["reason"] == "adopted from the requests folder"
    daemon.scan(full=True)
    assert sorted(os.listdir(daemon.config.requests_dir)) == requests
    row = daemon.ledger.get_file("c.json")
    assert row["outcome"] == "emitted" and "recovered" in row["reason"]
    daemon.stop()
    # A clean stop leaves nothing to reconcile: the ledger says so for the next start.
    daemon, _records = make(tmp_path, clock)
    assert daemon.ledger.meta_get("clean_stop") == "0"  # running now
    daemon.stop()
    ledger = Ledger(daemon.config.ledger_file, readonly=True)
    assert ledger.meta_get("clean_stop") == "1"
    ledger.close()


def test_approval_now_reads_status_marker_expiry_and_the_batch(tmp_path: Path) -> None:
    """What the episode rules ask (issues 9, 15): awaiting = in the requests folder as
    awaiting-approval, no approval marker, not expired; a request staged in this batch
    (not yet in the folder) is judged by its approvals row; a request taken away is gone."""
    requests, approvals = tmp_path / "requests", tmp_path / "approvals"
    requests.mkdir()
    approvals.mkdir()
    raw = {
        "schema_version": 1,
        "decision_records_dir": str(tmp_path / "records"),
        "requests_dir": str(requests),
        "approvals_dir": str(approvals),
        "execution_mode": "record-only",
        "require_approval": True,
        "poll_seconds": 5,
        "routes": ROUTES,
    }
    cfg = parse_config(json.dumps(raw).encode(), str(tmp_path / "config" / "config.json"))
    now = time.time()

    def request(tag: str, **doc: Any) -> str:
        dispatch_id = f"dispatch-20260921T141140Z-cutover-0000000{tag}"
        doc["dispatch_id"] = dispatch_id
        (requests / f"{dispatch_id}.json").write_text(json.dumps(doc))
        return dispatch_id

    ids = {
        "awaiting": request("a", status="awaiting-approval"),
        "not-required": request("b", status="queued"),
        "approved": request("c", status="awaiting-approval"),
        "expired": request("d", status="awaiting-approval", expires_at=iso_ts(now - 1)),
        "later": request("e", status="awaiting-approval", expires_at=iso_ts(now + 60)),
    }
    (approvals / f"{ids['approved']}.approved.json").write_text("{}")
    got = {k: approval_now(cfg, i, now, None) for k, i in ids.items()}
    assert got == {
        "awaiting": "awaiting",
        "not-required": "not-required",
        "approved": "approved",
        "expired": "expired",
        "later": "awaiting",
    }
    gone = "dispatch-20260921T141140Z-cutover-0000000f"
    assert approval_now(cfg, gone, now, None) == "gone"
    assert approval_now(cfg, gone, now, "open") == "awaiting"  # staged in this batch
    assert approval_now(cfg, gone, now, "not-required") == "not-required"


def test_names_are_taken_oldest_first_once_each(tmp_path: Path) -> None:
    """Coalescing follows decision order: a pass takes files by mtime (name breaks ties),
    each name once however often the listing and the watched set name it."""
    daemon, records = make(tmp_path, Clock())
    for name, age in (("a.json", 10), ("b.json", 30), ("c.json", 20), ("d.json", 30)):
        put(records, name, record(name[0] + "-1"))
        stamp = time.time() - age
        os.utime(records / name, (stamp, stamp))
    names = ["c.json", "a.json", "d.json", "b.json", "a.json", "missing.json", "c.json"]
    # A name that is gone sorts first (mtime 0): consider() reports it.
    ordered = daemon._oldest_first(names)
    assert ordered == ["missing.json", "b.json", "d.json", "c.json", "a.json"]
    daemon.stop()


def test_a_record_the_service_may_not_stat_is_rejected_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EACCES on lstat is about the file (its folder's permissions): a verdict with its
    reason, the other records dispatched, the pass never ends in a traceback (seen on the
    molecule host: the unit crash-looped on `RecordRejected: unreadable: Permission denied`)."""
    clock = Clock()
    daemon, records = make(tmp_path, clock)
    put(records, "shut.json", record("shut-1"))
    put(records, "open.json", record("open-1"))
    real_lstat = daemon_module.os.lstat

    def lstat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if str(path).endswith("shut.json"):
            raise PermissionError(13, "Permission denied")
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(daemon_module.os, "lstat", lstat)
    clock.now = time.time()
    daemon.scan(full=True)
    row = daemon.ledger.get_file("shut.json")
    assert row["outcome"] == "rejected" and "Permission denied" in row["reason"], row
    assert daemon.ledger.get_file("open.json")["outcome"] == "emitted"
    daemon.stop()
