"""Fixtures for the daemon tests: the dispatcher module, throwaway roots, real processes.

Process tests run files/dispatcher.py as a subprocess under the venv's Python and, when
pyenv has one, Python 3.9 (the oldest supported; EL9's system Python)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from hyops_runner.schemas import violations

REPO = Path(__file__).resolve().parents[2]
DISPATCHER = REPO / "files" / "dispatcher.py"

ROUTES: dict[str, dict[str, Any]] = {
    "cutover": {
        "target_kind": "blueprint",
        "target_ref": "dr/postgresql-ha-failover-gcp@v1",
        "target_env": "dr",
        "execution_plane": "runner-local",
    },
    "failback": {
        "target_kind": "module",
        "target_ref": "platform/network/edge-failback@v1",
        "target_env": "prod",
        "execution_plane": "private-overlay",
        "requires_approval": False,
        "approval_ttl_seconds": 3600,
    },
}

# The smallest valid daemon config (no settle/size overrides): pure-core tests build on it.
BASE_CONFIG: dict[str, Any] = {
    "schema_version": 1,
    "root": "/srv/dd",
    "decision_records_dir": "/srv/records",
    "execution_mode": "record-only",
    "require_approval": True,
    "poll_seconds": 15,
    "routes": ROUTES,
}


def install_release(folder: Path) -> Path:
    """A copy of the daemon as the role installs a release: the entry point and the
    package side by side in `folder` (no caches); returns the entry point."""
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    shutil.copy(DISPATCHER, folder / "dispatcher.py")
    shutil.copytree(
        DISPATCHER.parent / "hyops_dispatcher",
        folder / "hyops_dispatcher",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return folder / "dispatcher.py"


def _pyenv_python(prefix: str) -> str | None:
    try:
        root = subprocess.run(
            ["pyenv", "root"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        root = os.path.expanduser("~/.pyenv")
    versions = Path(root) / "versions"
    if not versions.is_dir():
        return None
    found = sorted(p for p in versions.glob(f"{prefix}*/bin/python3") if p.exists())
    return str(found[-1]) if found else None


PY39 = _pyenv_python("3.9.")


@pytest.fixture(
    params=["venv", "py39"],
    ids=["py-venv", "py3.9"],
)
def python(request: pytest.FixtureRequest) -> str:
    """The interpreter that runs the daemon subprocess."""
    if request.param == "venv":
        return sys.executable
    if PY39 is None:
        pytest.skip("pyenv has no Python 3.9 (looked under $(pyenv root)/versions/3.9.*)")
    return PY39


@dataclass
class Root:
    """A throwaway dispatcher root: config, records folder, helpers to read results."""

    path: Path
    records: Path
    config: Path
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def requests(self) -> Path:
        return self.path / "state" / "requests"

    @property
    def state_file(self) -> Path:
        return self.path / "state" / "state.json"

    @property
    def ledger(self) -> Path:
        return self.path / "state" / "ledger.sqlite3"

    @property
    def log(self) -> Path:
        return self.path / "logs" / "dispatcher.log"

    def write_config(self, **overrides: Any) -> None:
        self.overrides.update(overrides)
        doc: dict[str, Any] = {
            "schema_version": 1,
            "root": str(self.path),
            "decision_records_dir": str(self.records),
            "execution_mode": "record-only",
            "require_approval": True,
            "poll_seconds": 5,
            "heartbeat_seconds": 60,
            "log_level": "INFO",
            "max_record_age_seconds": 86400,
            "max_record_bytes": 4096,
            "settle_seconds": 1,
            "ledger_retention_seconds": 2592000,
            "log_max_bytes": 10485760,
            "log_backup_count": 5,
            "routes": ROUTES,
        }
        doc.update(self.overrides)
        doc = {k: v for k, v in doc.items() if v is not None}
        self.config.write_text(json.dumps(doc, indent=2))

    def drop(self, name: str, doc: Any, atomic: bool = True) -> Path:
        """Write a record the way the decision service does (temp + rename)."""
        data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        target = self.records / name
        if atomic:
            tmp = self.records / f".{name}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, target)
        else:
            target.write_bytes(data)
        return target

    def request_docs(self) -> list[dict[str, Any]]:
        docs = []
        for path in sorted(self.requests.glob("*.json")):
            docs.append(json.loads(path.read_text()))
        return docs

    def outcomes(self) -> dict[str, tuple[str, str]]:
        """file name -> (outcome, reason) from the ledger."""
        if not self.ledger.exists():
            return {}
        db = sqlite3.connect(f"file:{self.ledger}?mode=ro", uri=True, timeout=10)
        try:
            rows = db.execute(
                "SELECT name, outcome, reason FROM files WHERE gone_at IS NULL"
            ).fetchall()
        except sqlite3.OperationalError:
            return {}
        finally:
            db.close()
        return {r[0]: (r[1], r[2] or "") for r in rows}

    def state(self) -> dict[str, Any]:
        return json.loads(self.state_file.read_text())

    def log_lines(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def root(tmp_path: Path) -> Root:
    base = tmp_path / "dispatcher"
    (base / "config").mkdir(parents=True)
    records = tmp_path / "records"
    records.mkdir()
    r = Root(path=base, records=records, config=base / "config" / "config.json")
    r.write_config()
    return r


def now_iso(offset: float = 0.0) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(time.time() + offset, tz=UTC).isoformat()


def record(decision_id: str, decision_type: str = "cutover", **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "decision_id": decision_id,
        "decision_type": decision_type,
        "timestamp_utc": now_iso(),
        "status": "emitted",
        "rationale": f"test {decision_id}",
        "checks": [{"metric": "probe", "ok": False}],
    }
    doc.update(extra)
    return {k: v for k, v in doc.items() if v is not None}


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.02)


def assert_valid(name: str, doc: Any) -> None:
    problems = violations(name, doc)
    assert not problems, f"{name}: {problems}"


class Daemon:
    """files/dispatcher.py run as a real process, with its own NOTIFY_SOCKET."""

    def __init__(
        self,
        python: str,
        root: Root,
        env: dict[str, str] | None = None,
        user: int | None = None,
        command: str = "run",
        script: Path = DISPATCHER,
        wrapper: Sequence[str] = (),
    ) -> None:
        """`wrapper`: argv put before the interpreter (e.g. strace); `pid` is then the
        daemon's own pid, the wrapper's only child."""
        self.python = python
        self.wrapper = tuple(wrapper)
        self.root = root
        self.notify_name = f"@hyops-test-{uuid.uuid4().hex}"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind("\0" + self.notify_name[1:])
        self.notify.settimeout(0.05)
        self.messages: list[str] = []
        self.stderr_path = root.path.parent / f"stderr-{uuid.uuid4().hex[:6]}.log"
        full_env = dict(os.environ)
        full_env.pop("HYOPS_DISPATCHER_NO_INOTIFY", None)
        full_env["NOTIFY_SOCKET"] = self.notify_name
        full_env.update(env or {})
        preexec = None
        if user is not None:

            def preexec() -> None:
                os.setgroups([])
                os.setgid(user)
                os.setuid(user)

        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [*wrapper, python, str(script), "--config", str(root.config), command],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=full_env,
                preexec_fn=preexec,
            )

    @property
    def pid(self) -> int:
        """The daemon's pid: the process started, or a wrapper's only child."""
        if not self.wrapper:
            return self.proc.pid
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        found = wait_for(lambda: children.read_text().split(), 10, "the wrapped daemon's pid")
        return int(found[0])

    def read_notify(self) -> list[str]:
        while True:
            try:
                data = self.notify.recv(4096)
            except (TimeoutError, BlockingIOError):
                break
            self.messages.extend(data.decode().splitlines())
        return self.messages

    def wait_ready(self, timeout: float = 20.0) -> Daemon:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited with {self.proc.returncode}: {self.stderr()[-2000:]}"
                )
            return "READY=1" in self.read_notify()

        wait_for(ready, timeout, "READY=1 on NOTIFY_SOCKET")
        return self

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.wrapper:
            os.kill(self.pid, sig)
        else:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
            self.read_notify()
        finally:
            self.close()
        return rc

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.notify.fileno() != -1:
            self.read_notify()
        self.notify.close()


@pytest.fixture
def spawn() -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def _spawn(python: str, root: Root, **kwargs: Any) -> Daemon:
        d = Daemon(python, root, **kwargs)
        started.append(d)
        return d

    yield _spawn
    for d in started:
        with contextlib.suppress(Exception):
            d.close()


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of an operator command: ours without NOTIFY_SOCKET (a command
    must not talk to the test's systemd stand-in), plus `extra`."""
    full_env = dict(os.environ)
    full_env.pop("NOTIFY_SOCKET", None)
    full_env.update(extra or {})
    return full_env


def cli(
    python: str,
    root: Root,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    script: Path = DISPATCHER,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, str(script), "--config", str(root.config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(env),
    )
