"""Issue 9, operator commands cannot be turned against root: run as root they never
follow a symlink or block on a FIFO the service user planted under state/ or logs/, never
leave a file the service cannot open, and never rotate the service's log."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Root, now_iso, record
from .edges import SYSTEM_PYTHON, run, service_root, service_user

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (operator commands as root)"),
    pytest.mark.skipif(not os.access(SYSTEM_PYTHON, os.X_OK), reason=f"no {SYSTEM_PYTHON}"),
]
PY = SYSTEM_PYTHON  # the service user cannot reach pyenv's Pythons under /root


@pytest.fixture
def svc() -> tuple[int, int]:
    return service_user()


@contextlib.contextmanager
def _installed_root(svc: tuple[int, int]) -> Iterator[tuple[Root, Path]]:
    """A root the service has already run in once (ledger, log, lock, state exist), with
    a stale decision an operator may replay."""
    with service_root(*svc) as (root, script):
        root.drop("old.json", record("root-old", timestamp_utc=now_iso(-3 * 86400)))
        first = run(PY, root, "once", user=svc, script=script)
        assert first.returncode == 0, first.stderr
        yield root, script


@pytest.fixture
def installed(svc: tuple[int, int]) -> Iterator[tuple[Root, Path]]:
    with _installed_root(svc) as pair:
        yield pair


def _paths(root: Root) -> dict[str, Path]:
    return {
        "lock": root.path / "state" / "dispatcher.lock",
        "log": root.log,
        "ledger": root.ledger,
        "state": root.state_file,
    }


def _victim(root: Root, name: str, data: bytes) -> Path:
    """A root-owned 0600 file in a folder only root can enter."""
    folder = root.path.parent / "victims"
    folder.mkdir(mode=0o700, exist_ok=True)
    victim = folder / name
    victim.write_bytes(data)
    victim.chmod(0o600)
    return victim


def _fingerprint(path: Path) -> tuple[bytes, int, int, int]:
    st = path.stat()
    return path.read_bytes(), st.st_mode, st.st_uid, st.st_mtime_ns


@pytest.mark.parametrize(
    "link",
    [
        "lock",
        "log",
        # An empty root file: SQLite would happily make it a ledger.
        "ledger",
        # Already safe today (state.json is replaced by rename, never written through):
        # kept as a guard.
        "state",
    ],
)
def test_root_commands_leave_the_target_of_a_planted_symlink_alone(
    installed: tuple[Root, Path], link: str
) -> None:
    root, script = installed
    data = b"" if link == "ledger" else b'{"root": "secret"}\n'
    victim = _victim(root, f"victim-{link}", data)
    before = _fingerprint(victim)
    planted = _paths(root)[link]
    planted.unlink()
    os.symlink(victim, planted)  # what the service user can do in its own folders
    time.sleep(0.01)  # a write through the link would move the victim's mtime
    for args in (
        ("once",),
        ("replay", "root-old"),
        ("status", "--json"),
        ("validate-handoff", "--timeout", "1"),
    ):
        result = run(PY, root, *args, timeout=20, script=script)
        assert "secret" not in result.stdout, (args, "read a root-only file through the link")
        assert _fingerprint(victim) == before, (args, result.returncode, result.stderr[-300:])


FIFO_COMMANDS = {
    "once": ("once",),
    "replay": ("replay", "root-old"),
    "status": ("status", "--json"),
    "validate-handoff": ("validate-handoff", "--timeout", "1"),
}


def test_root_commands_return_when_a_fifo_is_planted(svc: tuple[int, int]) -> None:
    with contextlib.ExitStack() as stack:
        # One root per (FIFO place, command), all run side by side: a hang costs one
        # timeout, and no command can unblock another by opening the same FIFO.
        procs = {}
        planted = []
        for where in ("lock", "log", "state"):
            for name, args in FIFO_COMMANDS.items():
                root, script = stack.enter_context(_installed_root(svc))
                fifo = _paths(root)[where]
                fifo.unlink()
                os.mkfifo(fifo, 0o600)
                planted.append(fifo)
                procs[f"{name} (FIFO at {where})"] = subprocess.Popen(
                    [PY, str(script), "--config", str(root.config), *args],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
        deadline = time.monotonic() + 4  # each returns in well under a second
        hung = []
        for name, proc in procs.items():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                hung.append(name)
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        assert hung == []
        # Left for the operator to look at, not replaced.
        assert all(path.is_fifo() for path in planted)


def test_root_once_on_a_fresh_root_then_the_service_starts(svc: tuple[int, int], spawn) -> None:
    with service_root(*svc) as (root, script):
        # The operator runs a pass before the service ever started.
        root.drop("first.json", record("fresh-1"))
        result = run(PY, root, "once", script=script)
        assert result.returncode == 0, result.stderr
        # Every file root left under state/ and logs/ is the service user's.
        foreign = [
            str(p)
            for folder in ("state", "logs")
            for p in (root.path / folder).rglob("*")
            if p.stat().st_uid != svc[0]
        ]
        daemon = spawn(PY, root, user=svc[0], script=script)
        try:
            daemon.wait_ready(10)
        except AssertionError as exc:
            raise AssertionError(f"service did not start after root 'once': {exc}") from None
        assert foreign == []
        root.drop("second.json", record("fresh-2"))
        assert daemon.stop() == 0


def _pad_log(log: Path, size: int) -> None:
    """Append valid JSON lines until the log is exactly `size` bytes."""

    def line(length: int) -> str:
        body = {"ts": now_iso(), "level": "INFO", "event": "pad", "reason": ""}
        body["reason"] = "x" * (length - len(json.dumps(body)) - 1)
        return json.dumps(body) + "\n"

    with open(log, "a") as fh:
        while size - log.stat().st_size >= 400:
            fh.write(line(300))
            fh.flush()
        fh.write(line(size - log.stat().st_size))


def test_operator_commands_do_not_rotate_the_log(installed: tuple[Root, Path], spawn) -> None:
    root, script = installed
    root.write_config(settle_seconds=0, log_max_bytes=65536)
    # The service's log is a few bytes under its rotation size: any event rotates it.
    _pad_log(root.log, 65536 - 40)
    root.drop("new.json", record("rotate-1"))
    for args in (("once",), ("replay", "root-old"), ("status",), ("list",)):
        run(PY, root, *args, script=script)
    logs = sorted(p.name for p in root.log.parent.iterdir())
    assert logs == ["dispatcher.log"], "an operator command rotated the service's log"
    assert root.log.stat().st_uid == service_user()[0]
    daemon = spawn(PY, root, user=service_user()[0], script=script).wait_ready(10)
    assert daemon.stop() == 0
