"""The full stat scan runs in slices: the loop goes on between them, so a record dropped
while a scan is in progress is dispatched before the scan is over, and the scan still
finds a file changed behind inotify's back.

The scan is made long without a long history: strace delays every stat call of the
daemon by a millisecond (3 000 files: about 3 s of scan), so the order of the log lines
shows whether the loop ran during the scan (no timing is asserted)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from .conftest import Root, record, wait_for

FILES = 3000
STAT_CALLS = "%stat,%lstat,newfstatat,statx"
SLOW_STAT = ["strace", "-f", "-qq", "-o", "/dev/null", "-e"]


def strace_works() -> bool:
    if shutil.which("strace") is None:
        return False
    probe = subprocess.run(
        [*SLOW_STAT, f"inject={STAT_CALLS}:delay_enter=1", "true"],
        capture_output=True,
        text=True,
    )
    return probe.returncode == 0


def events(root: Root) -> list[tuple[str, str]]:
    """(event, file) of the log lines since the daemon last started."""
    seen = [(line["event"], line.get("file", "")) for line in root.log_lines()]
    starts = [i for i, ev in enumerate(seen) if ev[0] == "started"]
    return seen[starts[-1] :] if starts else seen


@pytest.mark.slow
@pytest.mark.skipif(not strace_works(), reason="strace cannot trace (or inject) here")
def test_a_record_is_dispatched_while_the_full_scan_runs(root: Root, spawn) -> None:
    root.write_config(log_level="DEBUG", poll_seconds=3600, heartbeat_seconds=3600)
    for i in range(FILES):
        (root.records / f"bad-{i:05d}.json").write_bytes(b"[]")
    edited = root.records / "edited.json"
    edited.write_bytes(b"[]")
    # The history: every file handled once (all rejected), then the daemon stops.
    spawn(sys.executable, root).wait_ready(120).stop()
    assert root.outcomes()["edited.json"][0] == "rejected"
    # Behind inotify's back (no daemon runs): the same file, the same inode, a valid
    # record now; the folder's mtime is put back, so only a stat of the file shows it.
    folder = os.stat(root.records)
    with open(edited, "r+b") as f:
        f.write(json.dumps(record("dec-edited-0001")).encode())
        f.truncate()
    old = time.time() - 60
    os.utime(edited, (old, old))
    os.utime(root.records, ns=(folder.st_atime_ns, folder.st_mtime_ns))

    slow = [*SLOW_STAT, f"inject={STAT_CALLS}:delay_enter=1000"]
    daemon = spawn(sys.executable, root, wrapper=slow)
    daemon.wait_ready(120)
    wait_for(lambda: ("scan-started", "") in events(root), 60, "the full scan after READY")
    root.drop("dec-new-0001.json", record("dec-new-0001"))
    wait_for(lambda: ("emitted", "dec-new-0001.json") in events(root), 60, "the new request")
    seen = events(root)
    new_at = seen.index(("emitted", "dec-new-0001.json"))
    finished = [i for i, ev in enumerate(seen) if ev == ("scan-finished", "")]
    # The new record was dispatched before the scan in progress was over.
    assert finished == [] or finished[-1] > new_at, seen[-20:]
    # And the scan still found the file changed in place.
    wait_for(lambda: ("scan-finished", "") in events(root), 120, "the end of the full scan")
    assert root.outcomes()["edited.json"][0] == "emitted"
    assert {d["source_decision_id"] for d in root.request_docs()} == {
        "dec-edited-0001",
        "dec-new-0001",
    }
    assert daemon.stop() == 0
