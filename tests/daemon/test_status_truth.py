"""`status` tells the truth the way `systemctl is-active` does (issue 16): it exits 0
only when the daemon is healthy, 6 when no daemon runs (`crashed` after a kill -9, whose
state.json still says running; `stopped` after a clean stop or before the first start),
7 when one runs but is not healthy (`degraded`: e.g. a full disk). The state word in
`status` and `status --json` is the judged one, never `running` for a dead process; what
state.json said is kept as `reported_status`. Real processes, signals and a tiny tmpfs."""

from __future__ import annotations

import json
import os
import signal

import pytest

from .conftest import Root, cli, wait_for
from .edges import PY, full_requests_disk

EXIT_NOT_RUNNING = 6
EXIT_DEGRADED = 7


def _status(root: Root) -> tuple[int, dict]:
    result = cli(PY, root, "status", "--json")
    return result.returncode, json.loads(result.stdout)


def _human(root: Root) -> tuple[int, str]:
    result = cli(PY, root, "status", env={"NO_COLOR": "1"})
    return result.returncode, result.stdout


def test_healthy_exits_0_and_a_kill_9_reads_crashed_exit_6(root: Root, spawn) -> None:
    daemon = spawn(PY, root).wait_ready()
    wait_for(lambda: _status(root)[1]["healthy"], 10, "healthy")
    rc, doc = _status(root)
    assert (rc, doc["status"], doc["running"]) == (0, "running", True)
    assert _human(root)[0] == 0
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(10)
    assert root.state()["status"] == "running"  # what the dead process left behind
    rc, doc = _status(root)
    assert rc == EXIT_NOT_RUNNING, doc
    assert doc["status"] == "crashed" and doc["reported_status"] == "running"
    assert doc["running"] is False and doc["healthy"] is False
    rc, text = _human(root)
    assert rc == EXIT_NOT_RUNNING
    assert "crashed" in text
    assert not [line for line in text.splitlines() if line.split()[-1:] == ["running"]], text


def test_a_clean_stop_reads_stopped_exit_6(root: Root, spawn) -> None:
    daemon = spawn(PY, root).wait_ready()
    assert daemon.stop() == 0
    rc, doc = _status(root)
    assert (rc, doc["status"], doc["running"], doc["healthy"]) == (
        EXIT_NOT_RUNNING,
        "stopped",
        False,
        False,
    )
    rc, text = _human(root)
    assert rc == EXIT_NOT_RUNNING and "stopped" in text


def test_never_started_reads_stopped_exit_6(root: Root) -> None:
    rc, doc = _status(root)
    assert (rc, doc["status"], doc["healthy"]) == (EXIT_NOT_RUNNING, "stopped", False)
    assert "no state.json" in doc["status_reason"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (tmpfs)")
def test_a_full_disk_reads_degraded_exit_7_then_0_once_it_has_room(root: Root, spawn) -> None:
    with full_requests_disk(root, spawn) as (daemon, filler):
        wait_for(lambda: _status(root)[1]["status"] == "degraded", 10, "degraded")
        rc, doc = _status(root)
        assert rc == EXIT_DEGRADED and doc["running"] is True and doc["healthy"] is False
        assert "No space left" in doc["last_error"], doc["last_error"]
        rc, text = _human(root)
        assert rc == EXIT_DEGRADED and "degraded" in text
        filler.unlink()
        daemon.signal(signal.SIGUSR1)
        wait_for(lambda: _status(root)[0] == 0, 15, "healthy again")
        assert daemon.stop() == 0
