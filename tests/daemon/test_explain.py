"""`explain` runs the daemon's own pipeline (judge_record_file): for every kind of file it
names the outcome and reason the daemon gave it."""

from __future__ import annotations

import json
import os
import re

import pytest

from .conftest import Root, cli, now_iso, record, wait_for

pytestmark = pytest.mark.slow


def age_masked(reason: str) -> str:
    return re.sub(r"\d+ s old", "N s old", reason)


def test_explain_agrees_with_the_daemon(python: str, root: Root) -> None:
    root.write_config(settle_seconds=0)
    root.drop("ok.json", record("ex-ok"))
    root.drop("old.json", record("ex-old", timestamp_utc=now_iso(-3 * 86400)))
    root.drop("unrouted.json", record("ex-u", "reboot"))
    root.drop("local.json", record("ex-l", status="queued-local-exec"))
    root.drop("array.json", b"[]")
    root.drop("big.json", b" " * 5000)  # over max_record_bytes 4096
    os.symlink(root.records / "ok.json", root.records / "link.json")
    result = cli(python, root, "once")
    assert result.returncode == 0, result.stderr
    outcomes = root.outcomes()
    assert len(outcomes) == 7
    for name, (outcome, reason) in outcomes.items():
        explained = json.loads(cli(python, root, "explain", name).stdout)
        if outcome == "emitted":
            # Already handled: explain says so instead of offering a second request.
            assert explained["would"].startswith("nothing"), (name, explained)
            continue
        # The age in a stale reason is measured at each call: it may tick over a second.
        assert (explained["would"], age_masked(explained["reason"])) == (
            outcome,
            age_masked(reason),
        ), name


def test_file_edited_in_place_while_stopped_is_judged_again(python: str, root: Root, spawn) -> None:
    """READY comes after the listing pass (new and replaced files); an in-place edit keeps
    the inode and the folder mtime, so the stat of every file right after READY finds it."""
    root.write_config(settle_seconds=0)
    daemon = spawn(python, root).wait_ready()
    # Stale (not rejected or pending: those are re-stat'ed on every pass anyway).
    root.drop("edit.json", record("edited-0", timestamp_utc=now_iso(-3 * 86400)))
    wait_for(lambda: root.outcomes().get("edit.json", ("",))[0] == "stale", 5, "stale")
    assert daemon.stop() == 0
    folder_mtime = root.records.stat().st_mtime_ns
    with open(root.records / "edit.json", "r+") as fh:  # same inode, same folder mtime
        fh.truncate()
        fh.write(json.dumps(record("edited-1")))
    assert root.records.stat().st_mtime_ns == folder_mtime
    daemon = spawn(python, root).wait_ready()
    wait_for(lambda: root.outcomes()["edit.json"][0] == "emitted", 5, "emitted after READY")
    assert [doc["source_decision_id"] for doc in root.request_docs()] == ["edited-1"]
    assert daemon.stop() == 0
