"""Approvals a person can do and audit (issue 16): `approve DISPATCH_ID --by NAME
[--note]` writes the consumer's marker (`approved_by`, `approved_at`, `note`, ...) as the
approvals folder's owner and logs `approved`; it refuses a superseded, expired, withdrawn
or synthetic request unless `--force`; `withdraw DISPATCH_ID --reason` moves the request
into `<state>/withdrawn/` (out of the consumer's reach), logs `withdrawn`, and `list`,
`status` and `replay` say so; `pending` lists what waits, oldest first; a missing
approvals folder reads "no consumer yet" (not unreadable). Real CLI processes; the
consumer is this test reading the marker the way a consumer would."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from .conftest import Root, cli, record, wait_for
from .request_seed import request_doc, seed_request

PY = sys.executable


def _setup(root: Root, tmp_path: Path) -> Path:
    approvals = tmp_path / "approvals"
    approvals.mkdir()
    root.write_config(approvals_dir=str(approvals))
    return approvals


def test_approve_writes_the_marker_a_consumer_reads_and_logs_it(root: Root, tmp_path) -> None:
    approvals = _setup(root, tmp_path)
    dispatch_id = seed_request(root, request_doc("dec-ok", "cutover", time.time() - 60))
    result = cli(PY, root, "approve", dispatch_id, "--by", "alice", "--note", "INC-42 ok")
    assert result.returncode == 0, result.stderr
    marker = approvals / f"{dispatch_id}.approved.json"
    doc = json.loads(marker.read_text())  # what the consumer reads
    assert doc["dispatch_id"] == dispatch_id and doc["approved_by"] == "alice"
    assert doc["note"] == "INC-42 ok" and doc["source_decision_id"] == "dec-ok"
    assert doc["approved_at"].endswith("+00:00") and doc["forced"] is False
    listed = json.loads(cli(PY, root, "list", "--json").stdout)["requests"]
    assert [r["approval"] for r in listed] == ["approved"]
    events = [ln for ln in root.log_lines() if ln["event"] == "approved"]
    assert [(e["dispatch_id"], e["approved_by"]) for e in events] == [(dispatch_id, "alice")]
    again = cli(PY, root, "approve", dispatch_id, "--by", "bob")
    assert again.returncode == 1 and "already approved by alice" in again.stderr
    assert json.loads(marker.read_text())["approved_by"] == "alice"


def test_approve_refuses_expired_superseded_synthetic_unless_forced(root: Root, tmp_path) -> None:
    approvals = _setup(root, tmp_path)
    now = time.time()
    expired = seed_request(root, request_doc("dec-exp", "cutover", now - 7200, ttl=3600))
    old = request_doc("dec-old", "cutover", now - 600)
    seed_request(root, old)
    newer = request_doc("dec-new", "failback", now - 60)
    newer["supersedes"] = old["dispatch_id"]
    seed_request(root, newer)
    synthetic = request_doc("handoff-check-20260101T000000Z-abcd1234", "cutover", now - 5)
    synthetic["synthetic"] = True
    seed_request(root, synthetic)
    for dispatch_id, word in (
        (expired, "expired"),
        (old["dispatch_id"], "superseded"),
        (synthetic["dispatch_id"], "synthetic"),
    ):
        result = cli(PY, root, "approve", dispatch_id, "--by", "alice")
        assert result.returncode == 1 and word in result.stderr, (word, result.stderr)
        assert "--force" in result.stderr
        assert not (approvals / f"{dispatch_id}.approved.json").exists()
    forced = cli(PY, root, "approve", expired, "--by", "alice", "--force", "--note", "late ok")
    assert forced.returncode == 0, forced.stderr
    assert json.loads((approvals / f"{expired}.approved.json").read_text())["forced"] is True
    assert cli(PY, root, "approve", "not-an-id", "--by", "x").returncode == 2
    missing = cli(PY, root, "approve", expired.replace("cutover", "failback"), "--by", "x")
    assert missing.returncode == 1 and "no request" in missing.stderr


def test_withdraw_archives_the_request_and_everyone_says_withdrawn(
    root: Root, tmp_path, spawn
) -> None:
    approvals = _setup(root, tmp_path)
    daemon = spawn(PY, root).wait_ready()
    root.drop("w1.json", record("withdraw-1"))
    wait_for(lambda: root.request_docs(), 10, "the request")
    dispatch_id = root.request_docs()[0]["dispatch_id"]
    result = cli(PY, root, "withdraw", dispatch_id, "--reason", "false alarm")
    assert result.returncode == 0, result.stderr
    assert root.request_docs() == []  # out of the consumer's reach
    archive = root.path / "state" / "withdrawn"
    assert (archive / f"{dispatch_id}.json").exists()
    note = json.loads((archive / f"{dispatch_id}.withdrawn.json").read_text())
    assert note["reason"] == "false alarm" and note["withdrawn_at"]
    assert [ln["dispatch_id"] for ln in root.log_lines() if ln["event"] == "withdrawn"] == [
        dispatch_id
    ]
    listed = json.loads(cli(PY, root, "list", "--json").stdout)["requests"]
    assert [(r["dispatch_id"], r["approval"]) for r in listed] == [(dispatch_id, "withdrawn")]
    assert "withdrawn" in cli(PY, root, "list").stdout
    status = json.loads(cli(PY, root, "status", "--json").stdout)
    assert status["withdrawn_count"] == 1
    replay = cli(PY, root, "replay", "withdraw-1")
    assert replay.returncode == 1 and "withdrawn" in replay.stderr, replay.stderr
    assert "approve that request" not in replay.stderr
    refused = cli(PY, root, "approve", dispatch_id, "--by", "alice")
    assert refused.returncode == 1 and "withdrawn" in refused.stderr
    assert not (approvals / f"{dispatch_id}.approved.json").exists()
    assert daemon.stop() == 0


def test_pending_lists_what_waits_oldest_first(root: Root, tmp_path) -> None:
    approvals = _setup(root, tmp_path)
    now = time.time()
    young = seed_request(root, request_doc("dec-young", "cutover", now - 60))
    old = seed_request(root, request_doc("dec-old2", "cutover", now - 3600))
    done = seed_request(root, request_doc("dec-done", "cutover", now - 7000))
    (approvals / f"{done}.approved.json").write_text("{}")
    doc = json.loads(cli(PY, root, "pending", "--json").stdout)
    assert [r["dispatch_id"] for r in doc["requests"]] == [old, young]
    text = cli(PY, root, "pending").stdout
    assert text.index(old) < text.index(young) and done not in text


def test_a_missing_approvals_folder_reads_no_consumer_yet(root: Root, tmp_path, spawn) -> None:
    root.write_config(approvals_dir=str(tmp_path / "no-consumer" / "approvals"))
    daemon = spawn(PY, root).wait_ready()
    doc = json.loads(cli(PY, root, "status", "--json").stdout)
    assert doc["approvals_dir_state"] == "missing" and doc["healthy"] is True
    text = cli(PY, root, "status").stdout
    assert "no consumer yet" in text and "NO" not in text.split("approvals dir:")[1][:40]
    assert not [ln for ln in root.log_lines() if ln["event"] == "approvals-unreadable"]
    metrics = (root.path / "state" / "metrics.prom").read_text()
    assert "hyops_decision_dispatcher_approvals_dir_readable 1" in metrics
    assert daemon.stop() == 0
    assert not os.path.exists(tmp_path / "no-consumer")  # the daemon never made it
