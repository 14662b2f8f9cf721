"""Read commands never go blind (issue 16): the daemon keeps the config it runs on
(`state/config.running.json`, written at start and at each good reload); when the file
on disk is invalid, `status`, `list`, `explain` and `validate-handoff` use that copy and
say so in one line on stderr naming the file and the bad key. `status` shows the config
path, digest, version, PID and uptime. Real daemon, real SIGHUP."""

from __future__ import annotations

import json
import signal

from .conftest import Root, cli, record, wait_for


def _refused(root: Root) -> bool:
    return any("reload refused" in (ln.get("reason") or "") for ln in root.log_lines())


def test_a_bad_config_on_disk_does_not_blind_the_read_commands(root: Root, spawn, python) -> None:
    daemon = spawn(python, root).wait_ready()
    root.drop("r1.json", record("running-cfg-1"))
    wait_for(lambda: root.request_docs(), 10, "the request")
    good = json.loads(cli(python, root, "status", "--json").stdout)
    root.write_config(poll_seconds=1)  # below the minimum of 5
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: _refused(root), 10, "the refused reload")
    for args in (
        ("status", "--json"),
        ("status",),
        ("list", "--json"),
        ("list",),
        ("explain", "r1.json"),
        ("validate-handoff", "--timeout", "10"),
    ):
        result = cli(python, root, *args)
        assert result.returncode == 0, (args, result.returncode, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (args, result.stderr)
        assert "invalid" in lines[0] and "poll_seconds" in lines[0], lines
        assert str(root.config) in lines[0] and "running config" in lines[0], lines
    status = json.loads(cli(python, root, "status", "--json").stdout)
    assert status["healthy"] is True
    assert status["config_digest"] == good["config_digest"]
    assert status["config_on_disk"]["valid"] is False
    assert "poll_seconds" in status["config_on_disk"]["error"]
    # check-config and once judge the file itself: still refused.
    assert cli(python, root, "check-config").returncode == 3
    assert daemon.stop() == 0


def test_status_names_config_digest_version_pid_and_uptime(root: Root, spawn) -> None:
    import sys

    daemon = spawn(sys.executable, root).wait_ready()
    doc = json.loads(cli(sys.executable, root, "status", "--json").stdout)
    assert doc["config_file"] == str(root.config) and doc["pid"] == daemon.proc.pid
    assert doc["config_on_disk"] == {"valid": True, "digest": doc["config_digest"]}
    assert isinstance(doc["uptime_s"], (int, float)) and doc["uptime_s"] >= 0
    text = cli(sys.executable, root, "status").stdout
    for needle in (str(root.config), doc["config_digest"], str(daemon.proc.pid), "up "):
        assert needle in text, (needle, text)
    assert daemon.stop() == 0


def test_without_a_running_copy_a_bad_config_still_exits_3(root: Root) -> None:
    import sys

    root.write_config(poll_seconds=1)
    result = cli(sys.executable, root, "status", "--json")
    assert result.returncode == 3 and "poll_seconds" in result.stderr
