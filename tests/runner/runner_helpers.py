"""Helpers for the runner tests: run ``hyops`` as a real process against a runtime root."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MODULE_ROOT = FIXTURES / "modules"
FIXTURE_REF = "test/runner-fixture"
FIXTURE_ID = "test__runner-fixture"


@contextlib.contextmanager
def hangup_listener(host: str = "127.0.0.1") -> Iterator[int]:
    """A loopback TCP listener that accepts and hangs up at once: TCP probes pass, SSH
    cannot. Yields its port."""
    with socket.socket() as server:
        server.bind((host, 0))
        server.listen(8)
        server.settimeout(0.2)
        stop = threading.Event()

        def serve() -> None:
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except OSError:
                    continue
                conn.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield server.getsockname()[1]
        finally:
            stop.set()
            thread.join(5)


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def hyops(
    args: list[str],
    env: dict[str, str] | None = None,
    timeout: float = 120,
    wrapper: list[str] | None = None,
) -> Run:
    """`wrapper`: argv put before the interpreter (e.g. strace)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HYOPS_")}
    full_env.update(env or {})
    proc = subprocess.run(
        [*(wrapper or []), sys.executable, "-m", "hyops_runner.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


@dataclass
class FixtureEnv:
    root: Path
    marker_dir: Path
    inputs_file: Path

    @property
    def state_file(self) -> Path:
        return self.root / "state" / "modules" / FIXTURE_ID / "latest.json"

    def state(self) -> dict[str, Any]:
        return json.loads(self.state_file.read_text())

    def write_inputs(self, **extra: Any) -> Path:
        doc = {
            # localhost is probed over SSH like any host (HybridOps' rule) unless the
            # entry names its connection.
            "inventory_groups": {
                "edge_control": [
                    {"name": "ctl", "host": "localhost", "ansible_connection": "local"}
                ]
            },
            "fixture_marker_dir": str(self.marker_dir),
            **extra,
        }
        self.inputs_file.write_text(yaml.safe_dump(doc))
        return self.inputs_file

    def run(
        self,
        command: str,
        *more: str,
        env: dict[str, str] | None = None,
        wrapper: list[str] | None = None,
    ) -> Run:
        args = [command, "--root", str(self.root), "--module", FIXTURE_REF]
        args += ["--module-root", str(MODULE_ROOT)]
        if command != "show":
            args += ["--inputs", str(self.inputs_file)]
        return hyops([*args, *more], env=env, wrapper=wrapper)
