"""`replay` goes through the daemon's one write path, and requests appear exactly once.

Each replay case here failed on the code before issue 8: `replay` then read whatever the
record file held now, wrote that decision's request (even one the consumer had already
taken away) and marked the asked decision as emitted, all behind the running daemon."""

from __future__ import annotations

import ctypes
import json
import os
import select
import struct
import sys
import time
from pathlib import Path

import pytest
from hyops_dispatcher.config import load_config
from hyops_dispatcher.decide import decide
from hyops_dispatcher.jsontext import dump_json
from hyops_dispatcher.ledger import Ledger

from .conftest import Root, cli, now_iso, record, wait_for

pytestmark = pytest.mark.slow

OLD = -3 * 86400  # older than max_record_age_seconds: stale, replayable


def ledger_decision(root: Root, decision_id: str) -> dict:
    ledger = Ledger(str(root.ledger), readonly=True)
    try:
        return ledger.get_decision(decision_id) or {}
    finally:
        ledger.close()


def once(python: str, root: Root) -> None:
    result = cli(python, root, "once")
    assert result.returncode == 0, result.stderr


def test_replay_refuses_a_reused_file_whose_decision_was_consumed(python: str, root: Root) -> None:
    root.drop("f.json", record("old-x", timestamp_utc=now_iso(OLD)))
    once(python, root)
    assert ledger_decision(root, "old-x")["outcome"] == "stale"
    # The same file name now holds another decision, which is dispatched and consumed.
    root.drop("f.json", record("new-y"))
    once(python, root)
    assert [doc["source_decision_id"] for doc in root.request_docs()] == ["new-y"]
    for path in root.requests.glob("*.json"):
        path.unlink()
    result = cli(python, root, "replay", "old-x")
    assert result.returncode == 1, result.stdout
    assert "new-y" in result.stderr and "f.json" in result.stderr
    assert root.request_docs() == []  # the consumed request is not written again
    assert ledger_decision(root, "old-x")["outcome"] == "stale"
    assert ledger_decision(root, "new-y")["outcome"] == "emitted"


def test_replay_refuses_when_the_file_holds_another_decision(python: str, root: Root) -> None:
    root.drop("f.json", record("old-x", timestamp_utc=now_iso(OLD)))
    once(python, root)
    root.drop("f.json", record("old-z", timestamp_utc=now_iso(OLD - 60)))
    once(python, root)
    result = cli(python, root, "replay", "old-x")
    assert result.returncode == 1, result.stdout
    assert "old-z" in result.stderr
    assert root.request_docs() == []
    assert ledger_decision(root, "old-x")["outcome"] == "stale"
    # The decision the file holds now is replayable by its own id.
    result = cli(python, root, "replay", "old-z")
    assert result.returncode == 0, result.stderr
    assert [doc["source_decision_id"] for doc in root.request_docs()] == ["old-z"]


def test_replay_refuses_a_decision_whose_request_is_already_there(python: str, root: Root) -> None:
    doc = record("old-x", timestamp_utc=now_iso(OLD))
    root.drop("f.json", doc)
    once(python, root)
    # A request for it is already in the requests folder (an earlier replay that was cut
    # off before its ledger row): the folder is the truth, a second write is refused.
    cfg = load_config(str(root.config))
    decision = decide(
        doc,
        record_path=str(root.records / "f.json"),
        mtime=0.0,
        config=cfg,
        now=time.time(),
        force=True,
    )
    target = root.requests / f"{decision.dispatch_id}.json"
    target.write_bytes(dump_json(decision.request))
    before = target.read_bytes()
    result = cli(python, root, "replay", "old-x")
    assert result.returncode == 1, result.stdout
    assert "already" in result.stderr and decision.dispatch_id in result.stderr
    assert target.read_bytes() == before


def test_replay_refuses_a_dispatch_id_owned_by_another_decision(python: str, root: Root) -> None:
    doc = record("old-x", timestamp_utc=now_iso(OLD))
    root.drop("f.json", doc)
    once(python, root)
    cfg = load_config(str(root.config))
    decision = decide(doc, record_path="f", mtime=0.0, config=cfg, now=time.time(), force=True)
    target = root.requests / f"{decision.dispatch_id}.json"
    target.write_text(json.dumps({**decision.request, "source_decision_id": "someone-else"}))
    result = cli(python, root, "replay", "old-x")
    assert result.returncode == 1, result.stdout
    assert "someone-else" in result.stderr
    assert json.loads(target.read_text())["source_decision_id"] == "someone-else"
    assert ledger_decision(root, "old-x")["outcome"] == "stale"


def test_replay_is_done_by_the_running_daemon(python: str, root: Root, spawn) -> None:
    daemon = spawn(python, root).wait_ready()
    root.drop("old.json", record("old-r", timestamp_utc=now_iso(OLD)))
    wait_for(lambda: root.outcomes().get("old.json", ("",))[0] == "stale", 5, "stale")
    emitted_before = root.state()["counters"]["emitted"]
    result = cli(python, root, "replay", "old-r")
    assert result.returncode == 0, result.stderr
    dispatch_id = json.loads(result.stdout)["dispatch_id"]
    # The daemon itself wrote it: its state shows the replay without a restart.
    state = wait_for(
        lambda: root.state()["last_dispatch_id"] == dispatch_id and root.state(), 5, "state"
    )
    assert state["last_decision_id"] == "old-r"
    assert state["counters"]["emitted"] == emitted_before + 1
    replayed = [ln for ln in root.log_lines() if ln["event"] == "replayed"]
    assert [ln["dispatch_id"] for ln in replayed] == [dispatch_id]
    assert root.outcomes()["old.json"][0] == "emitted"
    assert daemon.stop() == 0


IN_CLOSE_WRITE = 0x08
IN_MOVED_TO = 0x80


def test_request_is_closed_before_it_is_renamed(python: str, root: Root) -> None:
    """An inotify reader of the requests folder sees each request once, as IN_MOVED_TO,
    and never an IN_CLOSE_WRITE under the final name."""
    root.requests.mkdir(parents=True)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK)
    assert fd >= 0
    try:
        wd = libc.inotify_add_watch(fd, os.fsencode(root.requests), IN_CLOSE_WRITE | IN_MOVED_TO)
        assert wd >= 0
        for i in range(3):  # a small batch: the path that fsyncs each file itself
            root.drop(f"c{i}.json", record(f"close-{i}"))
        once(python, root)
        events: list[tuple[int, str]] = []
        while select.select([fd], [], [], 0.2)[0]:
            buf = os.read(fd, 65536)
            pos = 0
            while pos < len(buf):
                _wd, mask, _cookie, length = struct.unpack_from("iIII", buf, pos)
                name = buf[pos + 16 : pos + 16 + length].split(b"\0", 1)[0].decode()
                events.append((mask, name))
                pos += 16 + length
    finally:
        os.close(fd)
    final = {f"{doc['dispatch_id']}.json" for doc in root.request_docs()}
    assert len(final) == 3
    on_final = [(mask, name) for mask, name in events if name in final]
    assert sorted(on_final) == sorted((IN_MOVED_TO, name) for name in final)


def test_replay_cli_rejects_an_unsafe_id(root: Root) -> None:
    result = cli(sys.executable, root, "replay", "../x")
    assert result.returncode == 2 and "decision_id" in result.stderr
    assert not Path(root.path / "state" / "replay").exists() or not list(
        (root.path / "state" / "replay").iterdir()
    )
