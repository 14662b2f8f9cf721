"""Issue 9, exactly once under faults: a locked ledger or one the service user cannot
open is not corrupt (never moved aside and rebuilt, so an archived request is never
written again), a full disk is reported as itself and retried, and a requests folder
that vanishes or turns unwritable is re-created or reported as degraded."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from .conftest import Root, record, wait_for
from .edges import (
    LIBFAKETIME,
    PY,
    SYSTEM_PYTHON,
    fill,
    ledger_outcomes,
    run,
    service_root,
    service_user,
    status_json,
    tmpfs,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (service user, tmpfs)"),
]

FAST_CLOCK = {"LD_PRELOAD": LIBFAKETIME, "FAKETIME": "+0 x10"}
HOLD_LOCK = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def held_ledger_lock(root: Root) -> Iterator[None]:
    """Another process (an operator's sqlite3 shell, a backup) holds a write lock on the
    ledger for the duration of the block."""
    holder = subprocess.Popen(
        [PY, "-c", HOLD_LOCK, str(root.ledger)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.communicate("", timeout=10)


def _archive_requests(root: Root) -> list[str]:
    """The consumer takes the requests away (approved, executed, archived)."""
    names = sorted(p.name for p in root.requests.glob("*.json"))
    for name in names:
        (root.requests / name).unlink()
    return names


def _moved_aside(root: Root) -> list[str]:
    return sorted(p.name for p in root.ledger.parent.glob(root.ledger.name + ".*"))


@pytest.mark.skipif(not LIBFAKETIME, reason="needs faketime (make venv)")
def test_a_locked_ledger_is_left_alone_and_nothing_is_dispatched_twice(root: Root) -> None:
    root.write_config(settle_seconds=0)
    root.drop("r1.json", record("locked-1"))
    assert run(PY, root, "once").returncode == 0
    assert len(_archive_requests(root)) == 1
    with held_ledger_lock(root):
        # Time runs 10x fast for this pass (libfaketime scales its clocks and sleeps
        # alike), so SQLite's 30 s busy wait, or any backoff, costs a tenth of it.
        result = run(PY, root, "once", timeout=60, env=FAST_CLOCK)
    assert (list(root.requests.glob("*.json")), _moved_aside(root)) == ([], [])
    assert result.returncode != 0, "a locked ledger must not look like a finished pass"
    # The ledger was kept: once the lock is gone, the decision is still known.
    assert run(PY, root, "once").returncode == 0
    assert list(root.requests.glob("*.json")) == []


@pytest.mark.skipif(not LIBFAKETIME, reason="needs faketime (make venv)")
def test_the_service_waits_for_a_locked_ledger_feeding_the_watchdog(root: Root, spawn) -> None:
    root.write_config(settle_seconds=0)
    root.drop("r1.json", record("locked-run-1"))
    assert run(PY, root, "once").returncode == 0
    with held_ledger_lock(root):
        # 10x fast clocks: the daemon's whole wait takes a tenth of it; WatchdogSec 2 s.
        env = {**FAST_CLOCK, "WATCHDOG_USEC": "2000000"}
        daemon = spawn(PY, root, env=env)
        rc = daemon.proc.wait(30)
        pings = daemon.read_notify().count("WATCHDOG=1")
    assert rc != 0 and "READY=1" not in daemon.messages
    # Fed through the whole 15 s wait (a ping is due every second), not only at its ends.
    assert pings >= 7, daemon.messages
    assert _moved_aside(root) == []
    assert str(root.ledger) in daemon.stderr()


def test_a_ledger_the_service_user_cannot_open_is_left_alone() -> None:
    uid, gid = service_user()
    with service_root(uid, gid) as (root, script):
        root.drop("r1.json", record("perm-1"))
        first = run(SYSTEM_PYTHON, root, "once", user=(uid, gid), script=script)
        assert first.returncode == 0, first.stderr
        assert len(_archive_requests(root)) == 1
        # Left root-owned 0600 (an operator's copy, a restore): unreadable, not corrupt.
        os.chown(root.ledger, 0, 0)
        root.ledger.chmod(0o600)
        result = run(SYSTEM_PYTHON, root, "once", user=(uid, gid), script=script)
        assert (list(root.requests.glob("*.json")), _moved_aside(root)) == ([], [])
        assert root.ledger.stat().st_uid == 0
        assert result.returncode != 0 and str(root.ledger) in result.stderr


def test_disk_full_is_reported_as_itself_and_retried(root: Root, spawn) -> None:
    # The ledger on its own tiny file system: the request fits, the ledger commit does not.
    ledger = root.path / "db" / "ledger.sqlite3"
    root.write_config(settle_seconds=0, ledger_file=str(ledger))
    with tmpfs(ledger.parent, "256k"):
        daemon = spawn(PY, root).wait_ready()
        filler = fill(ledger.parent)
        # Room for the journal but not for the ledger to grow: the commit fails, which
        # today surfaces as "cannot commit - no transaction is active".
        os.truncate(filler, filler.stat().st_size - 20480)
        names = [f"full-{i}" for i in range(5)]
        for name in names:
            root.drop(f"{name}.json", record(name, rationale="r" * 2000))
            time.sleep(0.2)

        def noticed() -> bool:
            reasons = " ".join(ln.get("reason") or "" for ln in root.log_lines())
            return "disk is full" in reasons or "No space left" in reasons

        wait_for(lambda: noticed() or daemon.proc.poll() is not None, 10, "the full disk noticed")
        time.sleep(1.0)
        # The cause is named and no follow-on error about the transaction hides it.
        assert noticed(), "the log does not name the full disk"
        assert "no transaction is active" not in root.log.read_text() + daemon.stderr()
        # It keeps retrying (no exit into a restart loop that hits the start limit)...
        assert daemon.proc.poll() is None, (
            f"exited {daemon.proc.returncode}: {daemon.stderr()[-2000:]}"
        )
        # ...and once there is room again the decision is dispatched, once, and recorded.
        filler.unlink()
        daemon.signal(signal.SIGUSR1)
        wait_for(lambda: len(ledger_outcomes(ledger)) == 5, 10, "the ledger rows")
        assert set(ledger_outcomes(ledger).values()) == {"emitted"}
        assert sorted(d["source_decision_id"] for d in root.request_docs()) == names
        assert daemon.stop() == 0


def _requests_written_or_degraded(root: Root, python: str, **kwargs) -> bool:
    if list(root.requests.glob("*.json")):
        return True
    status = status_json(python, root, **kwargs)
    return status.get("status") == "degraded" and status.get("healthy") is False


def test_vanished_requests_folder_is_recreated_or_reported(root: Root, spawn) -> None:
    root.write_config(settle_seconds=0)
    daemon = spawn(PY, root).wait_ready()
    shutil.rmtree(root.requests)
    root.drop("gone.json", record("gone-1"))
    deadline = time.monotonic() + 2
    while not _requests_written_or_degraded(root, PY) and time.monotonic() < deadline:
        time.sleep(0.2)
    if root.requests.is_dir() and list(root.requests.glob("*.json")):
        assert root.requests.stat().st_mode & 0o777 == 0o750
    else:
        assert root.state()["status"] == "degraded"
        assert status_json(PY, root)["healthy"] is False
    assert daemon.stop() == 0


def test_unwritable_requests_folder_is_reported_degraded(spawn) -> None:
    uid, gid = service_user()
    with service_root(uid, gid) as (root, script):
        daemon = spawn(SYSTEM_PYTHON, root, user=uid, script=script)
        daemon.wait_ready()
        root.requests.chmod(0o500)
        root.drop("ro.json", record("ro-1"))
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            if _requests_written_or_degraded(root, SYSTEM_PYTHON, script=script):
                break
            time.sleep(0.2)
        if not list(root.requests.glob("*.json")):
            assert root.state()["status"] == "degraded"
            assert status_json(SYSTEM_PYTHON, root, script=script)["healthy"] is False
        # Writable again: the request is written and the status is healthy again.
        root.requests.chmod(0o750)
        daemon.signal(signal.SIGUSR1)
        wait_for(lambda: len(root.request_docs()) == 1, 10, "the request once writable")
        assert daemon.stop() == 0


def test_one_burst_on_a_full_disk_retries_after_one_second(root: Root, spawn) -> None:
    # The loop owns retry: a pass that fails stops, and the pause is doubled once per
    # retry (1, 2, 4 ... 60 s), not once per record that could not be written.
    requests = root.path / "state" / "requests"
    root.write_config(settle_seconds=0, requests_dir=str(requests))
    with tmpfs(requests, "64k"):
        daemon = spawn(PY, root).wait_ready()
        filler = fill(requests)
        for i in range(8):
            root.drop(f"burst-{i}.json", record(f"burst-{i}", rationale="r" * 2000))

        def pauses() -> list[tuple[float, str]]:
            return [
                (time.mktime(time.strptime(ln["ts"][:19], "%Y-%m-%dT%H:%M:%S")), ln["reason"])
                for ln in root.log_lines()
                if "trying again in" in (ln.get("reason") or "")
            ]

        wait_for(pauses, 10, "the failed write reported")
        time.sleep(0.5)
        first = pauses()
        said = [reason.rsplit("trying again in ", 1)[1] for _, reason in first]
        assert said[0] == "1 s", said
        # Within the first second after the failure no longer pause was scheduled.
        soon = [s for (t, _), s in zip(first, said, strict=True) if t - first[0][0] < 1]
        assert set(soon) == {"1 s"}, said
        filler.unlink()
        wait_for(lambda: len(list(requests.glob("*.json"))) == 8, 15, "all eight requests")
        assert daemon.stop() == 0
