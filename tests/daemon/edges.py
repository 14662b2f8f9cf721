"""Helpers for the issue 9 edge tests: a service user, a root owned by it, CLI runs as a
given user, a tiny tmpfs and a steppable wall clock (libfaketime). Only public interfaces
of files/dispatcher.py are used (CLI, files, signals), so the tests survive its split."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .conftest import DISPATCHER, Root, cli_env, install_release, record

# The daemon's interpreter; HYOPS_EDGES_PYTHON runs the set under another one (e.g. 3.9).
PY = os.environ.get("HYOPS_EDGES_PYTHON") or sys.executable
SERVICE_USER = "hyops-test-svc"
# pyenv's Pythons live under /root (0700): the service user runs the system one, as on a
# real host (test_sandbox.py does the same).
SYSTEM_PYTHON = "/usr/bin/python3"
# Debian's faketime package (scripts/system-test-deps.sh installs it); "" when missing.
LIBFAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), "")


def service_user() -> tuple[int, int]:
    """(uid, gid) of the test service user, created once (idempotent)."""
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVICE_USER,
            ],
            check=False,
            capture_output=True,
        )
        entry = pwd.getpwnam(SERVICE_USER)
    return entry.pw_uid, entry.pw_gid


@contextlib.contextmanager
def service_root(uid: int, gid: int) -> Iterator[tuple[Root, Path]]:
    """A root laid out like the role does it: state/ and logs/ belong to the service
    user (0750), config and the installed script are root's, the records folder is
    root's and world-readable. Yields (root, installed script)."""
    top = Path(tempfile.mkdtemp(prefix="hyops-edges-"))
    try:
        top.chmod(0o755)
        base = top / "root"
        for sub in ("config", "state", "logs"):
            (base / sub).mkdir(parents=True)
        for sub in ("state", "logs"):
            os.chown(base / sub, uid, gid)
            (base / sub).chmod(0o750)
        records = top / "records"
        records.mkdir(mode=0o755)
        root = Root(path=base, records=records, config=base / "config" / "config.json")
        root.write_config(settle_seconds=0)
        root.config.chmod(0o644)
        script = install_release(top / "lib")
        yield root, script
    finally:
        shutil.rmtree(top, ignore_errors=True)


def run(
    python: str,
    root: Root,
    *args: str,
    user: tuple[int, int] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 30,
    script: Path = DISPATCHER,
) -> subprocess.CompletedProcess[str]:
    """One CLI command, optionally as (uid, gid); raises TimeoutExpired if it hangs."""
    preexec = None
    if user is not None:
        uid, gid = user

        def preexec() -> None:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)

    return subprocess.run(
        [python, str(script), "--config", str(root.config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(env),
        stdin=subprocess.DEVNULL,
        preexec_fn=preexec,
    )


def faketime_env(control: Path) -> dict[str, str]:
    """Environment that lets the test step the process's wall clock by writing an offset
    such as "-3600s" to `control`; the monotonic clock stays real."""
    control.write_text("+0s\n")
    return {
        "LD_PRELOAD": LIBFAKETIME,
        "FAKETIME_TIMESTAMP_FILE": str(control),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


@contextlib.contextmanager
def tmpfs(path: Path, size: str, mode: int = 0o750) -> Iterator[Path]:
    """A tiny tmpfs mounted at `path` (root only), always unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode={mode:o}", "tmpfs", str(path)],
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def fill(folder: Path) -> Path:
    """Fill the file system of `folder` to the last byte; returns the filler file."""
    filler = folder / "filler.bin"
    block = b"\0" * 4096
    with open(filler, "wb", buffering=0) as fh:
        with contextlib.suppress(OSError):
            while True:
                fh.write(block)
        with contextlib.suppress(OSError):
            while True:
                fh.write(b"\0")
    return filler


@contextlib.contextmanager
def full_requests_disk(root: Root, spawn: Any, python: str = PY) -> Iterator[tuple[Any, Path]]:
    """A running daemon whose requests folder (a 64k tmpfs) is full while a routed record
    waits: yields (daemon, filler); unlink the filler and SIGUSR1 to give it room."""
    requests = root.path / "state" / "requests"
    root.write_config(settle_seconds=0, requests_dir=str(requests))
    with tmpfs(requests, "64k"):
        daemon = spawn(python, root).wait_ready()
        filler = fill(requests)
        root.drop("full-1.json", record("full-1", rationale="r" * 3000))
        yield daemon, filler


def status_json(python: str, root: Root, **kwargs: Any) -> dict[str, Any]:
    return json.loads(run(python, root, "status", "--json", **kwargs).stdout)


def requests_ever(root: Root) -> list[str]:
    """Dispatch ids the daemon logged as emitted (requests may since be archived)."""
    return [ln["dispatch_id"] for ln in root.log_lines() if ln["event"] == "emitted"]


def ledger_outcomes(ledger: Path) -> dict[str, str]:
    """file name -> outcome from a ledger at any path (read-only)."""
    if not ledger.exists():
        return {}
    db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT name, outcome FROM files WHERE gone_at IS NULL").fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        db.close()
    return dict(rows)
