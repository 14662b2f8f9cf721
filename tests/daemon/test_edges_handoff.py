"""Issue 9, never an unapproved synthetic request: validate-handoff on a route with
requires_approval false must never put a `queued` request (one a consumer would run) into
the requests folder, even for the milliseconds before it cleans up."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path

import pytest

from .conftest import Root, cli
from .edges import PY

pytestmark = pytest.mark.slow


class FolderWatch(threading.Thread):
    """A consumer polling the requests folder as fast as it can, reading every request."""

    def __init__(self, folder: Path) -> None:
        super().__init__(daemon=True)
        self.folder = folder
        self.seen: dict[str, dict] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                names = [n for n in os.listdir(self.folder) if n.endswith(".json")]
            except FileNotFoundError:
                continue
            for name in names:
                if name in self.seen:
                    continue
                # Gone (cleaned up) or half-read: looked at again next round.
                with contextlib.suppress(OSError, ValueError):
                    self.seen[name] = json.loads((self.folder / name).read_bytes())


def test_handoff_on_a_no_approval_route_never_writes_a_queued_request(root: Root, spawn) -> None:
    root.write_config(settle_seconds=0)  # route failback: requires_approval false
    daemon = spawn(PY, root).wait_ready()
    watch = FolderWatch(root.requests)
    watch.start()
    try:
        result = cli(
            PY, root, "validate-handoff", "--json", "--decision-type", "failback", "--timeout", "5"
        )
    finally:
        watch.done.set()
        watch.join(5)
    # A consumer never saw a request it would run without approval.
    assert not [d for d in watch.seen.values() if d.get("status") == "queued"], watch.seen
    verdict = json.loads(result.stdout)
    statuses = {c["name"]: c for c in verdict["checks"]}
    if result.returncode == 0:
        # The check ran: its request waited for approval and said it is synthetic.
        assert statuses["status"]["actual"] == "awaiting-approval", verdict
        assert statuses["synthetic"]["ok"] is True, verdict
        # The request lives for milliseconds: on a busy host the poller may miss it, so
        # what it saw (if anything) is checked, not that it saw it.
        assert [d.get("status") for d in watch.seen.values()] in ([], ["awaiting-approval"])
        assert all(d.get("synthetic") is True for d in watch.seen.values())
    else:
        # Or the check refuses such a route, and writes nothing at all.
        assert not statuses["route"]["ok"], verdict
        assert watch.seen == {}
    assert os.listdir(root.requests) == []
    assert daemon.stop() == 0


def test_a_synthetic_request_approved_during_the_check_is_left_in_place(
    root: Root, spawn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A consumer approves the synthetic request in the moment between the check reading
    it and cleaning up: the request is never pulled away from under that approval; the
    check fails and says so (the record is still removed)."""
    from hyops_dispatcher import handoff
    from hyops_dispatcher.config import load_config
    from hyops_dispatcher.states import EXIT_HANDOFF

    from .request_seed import approve

    approvals = tmp_path / "approvals"
    root.write_config(settle_seconds=0, approvals_dir=str(approvals))
    daemon = spawn(PY, root).wait_ready()
    config = load_config(str(root.config))
    real_read = handoff.read_json_quiet
    approved: list[str] = []

    def read_then_the_consumer_approves(path: str):
        doc = real_read(path)
        if doc is not None and os.path.dirname(path) == config.requests_dir:
            approve(approvals, doc["dispatch_id"])
            approved.append(path)
        return doc

    monkeypatch.setattr(handoff, "read_json_quiet", read_then_the_consumer_approves)
    rc = handoff.cmd_validate_handoff(config, "cutover", 10)
    verdict = json.loads(capsys.readouterr().out)
    assert approved, verdict
    assert rc == EXIT_HANDOFF, verdict
    cleanup = {c["name"]: c for c in verdict["checks"]}["cleanup"]
    assert cleanup["ok"] is False and "approved" in cleanup["detail"], cleanup
    assert [str(p) for p in root.requests.glob("*.json")] == approved
    assert list(root.records.iterdir()) == []  # the synthetic record is gone
    assert daemon.stop() == 0
