"""The readiness probe the role runs on the host: active unit AND a fresh state.json tick.

`systemctl` is replaced by a real executable on PATH that prints a given state, so the
probe's own logic (freshness, errors, exit code) runs as the role runs it: a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

PROBE = Path(__file__).resolve().parents[2] / "roles/decision_dispatcher/files/ready_probe.py"


def run_probe(
    tmp_path: Path, active: str, state: object | None, window: float = 60
) -> tuple[int, dict]:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    systemctl = bindir / "systemctl"
    systemctl.write_text(f"#!/bin/sh\necho {active}\n", encoding="utf-8")
    systemctl.chmod(0o755)
    state_file = tmp_path / "state.json"
    if state is not None:
        state_file.write_text(state if isinstance(state, str) else json.dumps(state), "utf-8")
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE.read_text("utf-8"), "x.service", str(state_file), str(window)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    return done.returncode, json.loads(done.stdout)


def stamp(age_s: float, suffix: str = "") -> str:
    moment = datetime.now(timezone.utc) - timedelta(seconds=age_s)
    text = moment.isoformat()
    return text.replace("+00:00", "Z") if suffix == "Z" else text


@pytest.mark.parametrize("suffix", ["", "Z"])
def test_active_and_fresh_is_ready(tmp_path: Path, suffix: str) -> None:
    rc, seen = run_probe(
        tmp_path, "active", {"timestamp_utc": stamp(1, suffix), "status": "running"}
    )
    assert rc == 0 and seen["ready"] and seen["state"]["status"] == "running"


@pytest.mark.parametrize(
    ("active", "state", "why"),
    [
        ("activating", {"timestamp_utc": stamp(1), "status": "running"}, "not yet active"),
        ("active", {"timestamp_utc": stamp(1), "status": "degraded"}, "records unusable"),
        ("active", {"timestamp_utc": stamp(120), "status": "running"}, "stale tick"),
        ("active", None, "no state.json"),
        ("active", "[1, 2]", "state.json not an object"),
        ("active", {"timestamp_utc": "2026-01-01T00:00:00"}, "no UTC offset"),
        ("failed", {"timestamp_utc": stamp(1), "status": "running"}, "failed unit"),
    ],
)
def test_not_ready(tmp_path: Path, active: str, state: object, why: str) -> None:
    rc, seen = run_probe(tmp_path, active, state)
    assert rc == 1 and not seen["ready"], why
    assert seen["active_state"] == active
