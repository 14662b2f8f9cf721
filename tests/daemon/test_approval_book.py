"""ApprovalBook in-process (issue 10): the daemon's view of which requests wait for a
person follows markers, expiries, supersedes and request files taken away, without
listing the requests folder on an idle pass."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from hyops_dispatcher.approvals import ApprovalBook
from hyops_dispatcher.config import load_config
from hyops_dispatcher.ids import parse_iso_utc
from hyops_dispatcher.jsonlog import JsonLog
from hyops_dispatcher.ledger import Ledger

from .conftest import Root
from .request_seed import approve, request_doc, seed_request


class Clock:
    """The book's monotonic clock (its heartbeat interval), moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def open_book(root: Root, approvals: Path, mono: Clock) -> tuple[Any, Any]:
    root.write_config(approvals_dir=str(approvals))
    cfg = load_config(str(root.config))
    os.makedirs(os.path.dirname(cfg.ledger_file), exist_ok=True)
    log = JsonLog(None, "INFO", 1 << 20, 1, to_stderr=False)
    ledger = Ledger(cfg.ledger_file)
    book = ApprovalBook(cfg, log, ledger, resync=True, monotonic=mono)
    return book, ledger


def counts(book: Any, now: float) -> dict[str, int]:
    book.refresh(now)
    return book.state_fields()["approvals"]


def test_markers_expiry_supersedes_and_files_taken_away(root: Root, tmp_path: Path) -> None:
    approvals = tmp_path / "approvals"
    approvals.mkdir()
    now = time.time()
    cutover = seed_request(root, request_doc("b-cut", "cutover", now - 600))
    ttl = seed_request(root, request_doc("b-ttl", "cutover", now - 30, ttl=60))
    gone = seed_request(root, request_doc("b-gone", "cutover", now - 20))
    mono = Clock()
    book, ledger = open_book(root, approvals, mono)
    assert counts(book, now) == {
        "awaiting": 3,
        "approved": 0,
        "expired": 0,
        "superseded": 0,
        "not-required": 0,
    }
    assert book.oldest_awaiting == parse_iso_utc(
        request_doc("x", "cutover", now - 600)["timestamp_utc"]
    )
    # A failback written by the daemon names the cutover it supersedes.
    failback = request_doc("b-fb", "failback", now - 5, requires_approval=False)
    failback["supersedes"] = cutover
    ledger.begin()
    book.note(failback, replace=True)
    ledger.commit()
    # The marker appears: seen at the next pass (the folder's mtime changed).
    approve(approvals, ttl)
    book.tick(now)
    assert counts(book, now) == {
        "awaiting": 1,
        "approved": 1,
        "expired": 0,
        "superseded": 1,
        "not-required": 1,
    }
    # The last awaiting one is taken away: dropped at the heartbeat, not before.
    (root.requests / f"{gone}.json").unlink()
    mono.now += 1
    book.tick(now + 1)
    assert counts(book, now + 1)["awaiting"] == 1
    mono.now += 60
    book.tick(now + 61)
    assert counts(book, now + 61)["awaiting"] == 0
    assert book.oldest_awaiting is None
    rows = {r["dispatch_id"]: r["approval"] for r in book.state_fields()["requests_open"]}
    assert rows == {cutover: "superseded"}
    ledger.close()


def test_an_expiry_that_passes_is_counted_without_a_marker_check(
    root: Root, tmp_path: Path
) -> None:
    now = time.time()
    seed_request(root, request_doc("e-1", "cutover", now - 30, ttl=60))
    book, ledger = open_book(root, tmp_path / "missing-approvals", Clock())
    assert counts(book, now)["awaiting"] == 1 and book.readable is False
    assert book.next_expiry == parse_iso_utc(
        json.loads(next(root.requests.glob("*.json")).read_text())["expires_at"]
    )
    book.tick(book.next_expiry + 1)
    assert counts(book, book.next_expiry + 1)["expired"] == 1
    ledger.close()
