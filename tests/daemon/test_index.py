"""FileIndex from outside: bad files are bounded. A running daemon with 10 000 rejected
record files does the same work per idle pass, and holds the same memory, as one with 10
(work counted in system calls with strace, not timed)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import Daemon, Root

PASSES = 10


def bad_root(tmp_path: Path, name: str, count: int) -> Root:
    """A root whose records folder holds `count` files that are rejected at once (a JSON
    array is not a record, whatever happens to the file later)."""
    base = tmp_path / name / "dispatcher"
    (base / "config").mkdir(parents=True)
    records = tmp_path / name / "records"
    records.mkdir()
    root = Root(path=base, records=records, config=base / "config" / "config.json")
    root.write_config(poll_seconds=3600, heartbeat_seconds=3600)
    for i in range(count):
        (records / f"bad-{i:05d}.json").write_bytes(b"[]")
    old = time.time() - 60  # past the racy window of the folder mtime: listed once
    os.utime(records, (old, old))
    return root


def idle_work(daemon: Daemon) -> dict[str, int]:
    """System calls made by the daemon over PASSES poll passes (SIGUSR1 runs the pass the
    poll timer runs), by name, from `strace -c`."""
    out = daemon.root.path.parent / "strace.txt"
    tracer = subprocess.Popen(
        ["strace", "-c", "-f", "-o", str(out), "-p", str(daemon.proc.pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert tracer.stderr is not None
    attached = tracer.stderr.readline()  # "strace: Process N attached"
    if "attached" not in attached:
        tracer.kill()
        pytest.skip(f"strace cannot attach here: {attached.strip()}")
    for _ in range(PASSES):
        daemon.signal(signal.SIGUSR1)
        time.sleep(0.05)
    time.sleep(0.5)  # let the last pass finish before detaching
    tracer.send_signal(signal.SIGINT)
    tracer.wait(20)
    calls: dict[str, int] = {}
    for line in out.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 5 and re.fullmatch(r"[0-9.]+", fields[0]) and fields[-1] != "total":
            calls[fields[-1]] = int(fields[3])
    return calls


def rss_kib(daemon: Daemon) -> int:
    status = Path(f"/proc/{daemon.proc.pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_rejected_files_cost_an_idle_pass_nothing(tmp_path: Path, spawn) -> None:
    few = bad_root(tmp_path, "few", 10)
    many = bad_root(tmp_path, "many", 10_000)
    daemons = {}
    for name, root in (("few", few), ("many", many)):
        daemons[name] = spawn(sys.executable, root).wait_ready(120)
    for name, root in (("few", few), ("many", many)):
        want = 10 if name == "few" else 10_000
        outcomes = root.outcomes()
        assert len(outcomes) == want
        assert {o for o, _reason in outcomes.values()} == {"rejected"}
    for daemon in daemons.values():
        idle_work(daemon)  # the full stat scan right after READY is over; warm up
    work = {name: idle_work(daemon) for name, daemon in daemons.items()}
    rss = {name: rss_kib(daemon) for name, daemon in daemons.items()}
    total = {name: sum(calls.values()) for name, calls in work.items()}
    stats = {
        name: sum(n for call, n in calls.items() if "stat" in call) for name, calls in work.items()
    }
    # The same passes: a folder stat and the few files of the daemon's own, not one
    # stat per rejected file (10 passes x 10 000 files would be 100 000 calls).
    assert stats["many"] <= stats["few"] + 2 * PASSES, (stats, work)
    assert total["many"] <= total["few"] * 1.5 + 10 * PASSES, (total, work)
    # Memory: no object per rejected file (the old index held one per file, ~5 MiB for
    # 10 000); SQLite's bounded page cache is the only thing that may differ.
    assert rss["many"] - rss["few"] <= 3 * 1024, rss
    for daemon in daemons.values():
        assert daemon.stop() == 0
