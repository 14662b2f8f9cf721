"""Issue 15, a big backlog at start is visible: while the first pass (before READY) works
through records written while the daemon was stopped, `status` and `status --json` say
the first pass is in progress and how far it is (`first pass: N of M`, from state.json,
rewritten during that pass); once it is over they say nothing about it. A real daemon on
/dev/shm, `status` run as a process."""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Root, assert_valid, cli, record, wait_for
from .edges import PY

pytestmark = pytest.mark.slow

BACKLOG = 30_000


@pytest.fixture
def shm_root() -> Iterator[Root]:
    top = Path(tempfile.mkdtemp(prefix="hyops-backlog-", dir="/dev/shm"))
    try:
        base = top / "dispatcher"
        (base / "config").mkdir(parents=True)
        records = top / "records"
        records.mkdir()
        root = Root(path=base, records=records, config=base / "config" / "config.json")
        root.write_config(settle_seconds=0, max_record_bytes=1024)
        yield root
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _status(root: Root) -> dict:
    return json.loads(cli(PY, root, "status", "--json").stdout)


def test_status_shows_the_first_pass_over_a_backlog_then_nothing(shm_root: Root, spawn) -> None:
    root = shm_root
    for i in range(BACKLOG):
        root.drop(f"b-{i:05d}.json", record(f"backlog-{i:05d}", decision_type="failback"))
    daemon = spawn(PY, root)

    def in_progress() -> dict | None:
        assert daemon.proc.poll() is None, daemon.stderr()[-2000:]
        # READY ends the first pass: status must have shown it before.
        assert "READY=1" not in daemon.read_notify(), "READY before status showed the pass"
        doc = _status(root)
        first = doc.get("first_pass")
        return doc if first and 0 < first["seen"] < first["total"] else None

    doc = wait_for(in_progress, 120, "status --json showing the first pass in progress")
    assert doc["first_pass"]["total"] == BACKLOG, doc["first_pass"]
    assert doc["status"] == "starting" and doc["healthy"] is False, doc
    assert "READY=1" not in daemon.read_notify()
    assert_valid("dispatcher-state", root.state())
    # Held still, so the human form reads the same state.json the JSON one did.
    daemon.signal(signal.SIGSTOP)
    try:
        first = root.state()["first_pass"]
        text = cli(PY, root, "status", env={"NO_COLOR": "1"}).stdout
    finally:
        daemon.signal(signal.SIGCONT)
    assert f"first pass:       {first['seen']} of {first['total']} records" in text, text
    assert "starting" in text, text
    daemon.wait_ready(180)
    done = wait_for(lambda: (d := _status(root))["healthy"] and d, 30, "healthy after the pass")
    assert done.get("first_pass") is None, done
    assert_valid("dispatcher-state", root.state())
    assert "first pass" not in cli(PY, root, "status", env={"NO_COLOR": "1"}).stdout
    assert daemon.stop() == 0
