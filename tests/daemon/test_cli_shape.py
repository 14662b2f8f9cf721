"""A short command on the host (issue 16), daemon side: `--config` before or after the
subcommand, `--version`, no arguments prints the help (never a daemon in the
foreground: the unit runs `run` explicitly), and every command's `--help` has an
example. The real entry point as a process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import DISPATCHER, REPO, Root, cli_env

PY = sys.executable


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, str(DISPATCHER), *args],
        capture_output=True,
        text=True,
        timeout=20,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
    )


def test_config_before_or_after_the_subcommand(root: Root) -> None:
    before = _run("--config", str(root.config), "status", "--json")
    after = _run("status", "--json", "--config", str(root.config))
    assert after.returncode == before.returncode == 6, after.stderr
    assert json.loads(after.stdout)["state_file"] == json.loads(before.stdout)["state_file"]
    assert _run("check-config", "--config", str(root.config)).returncode == 0


def test_no_arguments_prints_help_and_starts_nothing(tmp_path: Path) -> None:
    result = _run()
    assert result.returncode == 2 and "usage:" in result.stdout.lower()
    assert "status" in result.stdout and "approve" in result.stdout


def test_version_flag() -> None:
    result = _run("--version")
    assert result.returncode == 0 and result.stdout.startswith("hyops-decision-dispatcher ")


def test_every_command_help_has_an_example() -> None:
    top = _run("--help").stdout
    commands = ["status", "list", "pending", "explain", "replay", "approve", "withdraw"]
    commands += ["validate-handoff", "check-config", "once", "run"]
    for command in commands:
        assert command in top, command
        text = _run(command, "--help").stdout
        assert "example" in text and "dispatcher.py " + command in text, (command, text)


def test_the_unit_runs_run_explicitly() -> None:
    unit = (REPO / "roles/decision_dispatcher/templates/dispatcher.service.j2").read_text()
    exec_start = [ln for ln in unit.splitlines() if ln.startswith("ExecStart=")]
    assert exec_start and exec_start[0].split()[-1] == "run", exec_start
