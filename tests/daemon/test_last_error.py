"""`last_error` tells what is wrong now (issue 16): it comes with `last_error_at`, and
when its cause is gone (a good reload after a refused one, a disk with room again) it is
cleared, kept as `last_recovered_from` with `last_recovered_at`, so `healthy: yes` never
stands next to a stale error. Real daemon, SIGHUP, a tiny tmpfs."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from .conftest import Root, cli, wait_for
from .edges import PY, full_requests_disk


def _status(root: Root) -> dict:
    return json.loads(cli(PY, root, "status", "--json").stdout)


def test_a_good_reload_clears_a_refused_one(root: Root, spawn) -> None:
    daemon = spawn(PY, root).wait_ready()
    root.write_config(poll_seconds=1)
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in _status(root).get("last_error", ""), 10, "refused")
    doc = _status(root)
    assert doc["last_error_at"] and abs(time.time() - _epoch(doc["last_error_at"])) < 30
    assert doc["last_recovered_at"] is None
    root.write_config(poll_seconds=5)
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: _status(root).get("last_error") == "", 10, "the refusal cleared")
    doc = _status(root)
    assert doc["healthy"] is True and doc["last_error_at"] is None
    assert "reload refused" in doc["last_recovered_from"] and doc["last_recovered_at"]
    text = cli(PY, root, "status").stdout
    assert "reload refused" not in text.split("recovered")[0], text
    assert daemon.stop() == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (tmpfs)")
def test_a_full_disk_error_is_cleared_when_writes_work_again(root: Root, spawn) -> None:
    with full_requests_disk(root, spawn) as (daemon, filler):
        wait_for(lambda: "No space left" in _status(root).get("last_error", ""), 10, "ENOSPC")
        assert _status(root)["last_error_at"]
        filler.unlink()
        daemon.signal(signal.SIGUSR1)
        wait_for(lambda: _status(root)["healthy"], 15, "healthy again")
        doc = _status(root)
        assert doc["last_error"] == "" and doc["last_error_at"] is None
        assert "No space left" in doc["last_recovered_from"] and doc["last_recovered_at"]
        assert daemon.stop() == 0


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()
