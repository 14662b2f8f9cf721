"""The daemon as an unprivileged user, the way the hardened unit runs it: it can write
only <root>/state and <root>/logs, the records folder is read-only to it, and the
operator commands run as root (validate-handoff, replay) do not break it."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Root, assert_valid, cli, install_release, now_iso, record, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user"),
]
NOBODY = 65534
# pyenv's Pythons live under /root (0700): the unprivileged user runs the system one, as
# on a real host.
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture
def sandbox_root() -> Iterator[Root]:
    # pytest's tmp_path is 0700 root: the unprivileged user could not even reach it.
    top = Path(tempfile.mkdtemp(prefix="hyops-sandbox-"))
    top.chmod(0o755)
    base = top / "root"
    for sub in ("config", "state", "logs"):
        (base / sub).mkdir(parents=True)
    for sub in ("state", "logs"):
        os.chown(base / sub, NOBODY, NOBODY)
        (base / sub).chmod(0o750)
    records = top / "records"
    records.mkdir(mode=0o755)
    root = Root(path=base, records=records, config=base / "config" / "config.json")
    root.write_config()
    root.config.chmod(0o644)
    # Installed outside the root, root-owned, like the role does.
    install_release(top / "lib")
    yield root
    shutil.rmtree(top, ignore_errors=True)


def test_runs_unprivileged_and_survives_root_operator_commands(sandbox_root: Root, spawn) -> None:
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"no {SYSTEM_PYTHON}")
    python = SYSTEM_PYTHON
    root = sandbox_root
    script = root.path.parent / "lib" / "dispatcher.py"
    daemon = spawn(python, root, user=NOBODY, script=script).wait_ready()
    root.drop("ok.json", record("sandbox-1"))
    secret = root.records / "secret.json"
    secret.write_text(json.dumps(record("sandbox-2")))
    secret.chmod(0o600)
    wait_for(lambda: root.outcomes().get("secret.json", ("",))[0] == "rejected", 5, "unreadable")
    assert "unreadable" in root.outcomes()["secret.json"][1]
    assert root.outcomes()["ok.json"][0] == "emitted"
    secret.chmod(0o644)  # only ctime changes: still noticed
    wait_for(lambda: root.outcomes()["secret.json"][0] == "emitted", 5, "readable again")

    # Operator commands as root.
    result = cli(python, root, "validate-handoff", script=script)
    assert result.returncode == 0, result.stdout + result.stderr
    root.drop("old.json", record("sandbox-old", timestamp_utc=now_iso(-3 * 86400)))
    wait_for(lambda: root.outcomes().get("old.json", ("",))[0] == "stale", 5, "stale")
    result = cli(python, root, "replay", "sandbox-old", script=script)
    assert result.returncode == 0, result.stderr
    replayed = Path(json.loads(result.stdout)["request"])
    assert replayed.stat().st_uid == NOBODY  # the service user owns every request
    # The daemon still writes its ledger after root touched it.
    root.drop("after.json", record("sandbox-3"))
    wait_for(lambda: root.outcomes().get("after.json", ("",))[0] == "emitted", 5, "after root")
    status = json.loads(cli(python, root, "status", "--json", script=script).stdout)
    assert status["healthy"] is True
    assert daemon.stop() == 0

    # Nothing outside state/ and logs/ was written; everything in them belongs to nobody
    # except what root created on purpose (nothing).
    assert sorted(p.name for p in root.path.iterdir()) == ["config", "logs", "state"]
    for folder in ("state", "logs"):
        for path in (root.path / folder).rglob("*"):
            assert path.stat().st_uid == NOBODY, path
    for doc in root.request_docs():
        assert_valid("dispatch-request", doc)
