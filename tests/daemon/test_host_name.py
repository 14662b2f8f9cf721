"""The daemon names its host in `started`/`stopped`, state.json and `status`: in a cluster
(RUNBOOK "High availability") the log and the state move between hosts with the shared
root, so each line and each state file must say which host wrote it."""

from __future__ import annotations

import json
import socket

import pytest

from .conftest import Root, assert_valid, cli, record, wait_for

pytestmark = pytest.mark.slow


def test_started_stopped_state_and_status_name_the_host(python: str, root: Root, spawn) -> None:
    host = socket.gethostname()
    daemon = spawn(python, root).wait_ready()
    root.drop("h1.json", record("host-1"))
    wait_for(lambda: root.state()["counters"]["emitted"] == 1, 10, "one request")
    state = root.state()
    assert_valid("dispatcher-state", state)
    assert state["host"] == host
    status = json.loads(cli(python, root, "status", "--json").stdout)
    assert status["host"] == host and status["healthy"] is True
    human = cli(python, root, "status").stdout
    assert f"host:             {host}" in human.splitlines()
    assert daemon.stop() == 0
    assert root.state()["host"] == host
    lines = {line["event"]: line for line in root.log_lines()}
    assert lines["started"]["host"] == host and lines["stopped"]["host"] == host
