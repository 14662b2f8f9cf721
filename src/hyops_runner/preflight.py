"""Checks that a run can work before anything touches a host.

Inputs, tools (ansible-playbook; ssh or podman when a host needs them), a writable
runtime root, required environment variables and, with ``connectivity_check``, each
host: TCP then an SSH probe for ssh hosts, ``podman exec`` for podman-connection hosts.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .fsutil import ensure_private_dir
from .inventory import Host
from .playbook import find_tool

PODMAN_CONNECTIONS = frozenset({"containers.podman.podman", "podman"})


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | fail | skip
    detail: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def tools(hosts: list[Host]) -> list[Check]:
    out = []
    tool = find_tool("ansible-playbook")
    if tool is None:
        out.append(Check("tool ansible-playbook", "fail", "not found; run make venv"))
    else:
        out.append(Check("tool ansible-playbook", "ok", _version(tool)))
    needs = {"ssh": any(h.connection == "ssh" for h in hosts)}
    needs["podman"] = any(h.connection in PODMAN_CONNECTIONS for h in hosts)
    for name, needed in needs.items():
        if not needed:
            continue
        found = find_tool(name)
        out.append(Check(f"tool {name}", "ok" if found else "fail", found or f"{name} not on PATH"))
    return out


def root_writable(root: Path) -> Check:
    probe = root / f".preflight-{os.getpid()}"
    try:
        ensure_private_dir(root)  # the run would create it the same way
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return Check("runtime root writable", "fail", f"{root}: {exc.strerror}")
    return Check("runtime root writable", "ok", str(root))


def required_env(names: list[str], environ: Mapping[str, str]) -> Check:
    missing = [n for n in names if not environ.get(n)]
    if missing:
        return Check("required env", "fail", "unset: " + ", ".join(missing))
    return Check("required env", "ok", ", ".join(names) or "none required")


def connectivity(host: Host, inputs: dict[str, Any]) -> list[Check]:
    name = f"connect {host.name}"
    if host.connection == "local":
        return [Check(name, "ok", "local connection")]
    if host.connection in PODMAN_CONNECTIONS:
        return [_podman_probe(name, host, float(inputs["connectivity_timeout_s"]))]
    if host.connection not in ("ssh", "paramiko"):
        return [Check(name, "skip", f"no probe for connection {host.connection}")]
    port = int(host.hostvars.get("ansible_port", inputs["target_port"]))
    timeout = float(inputs["connectivity_timeout_s"])
    tcp = _tcp_probe(host.address, port, timeout, float(inputs["connectivity_wait_s"]))
    checks = [
        Check(
            f"tcp {host.name}",
            "ok" if tcp is None else "fail",
            tcp or f"{host.address}:{port} open",
        )
    ]
    if tcp is None:
        checks.append(_ssh_probe(f"ssh {host.name}", host, port, inputs, timeout))
    return checks


def _tcp_probe(address: str, port: int, timeout: float, wait: float) -> str | None:
    """None when a TCP connection opens; else why not, after retrying for ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with socket.create_connection((address, port), timeout=timeout):
                return None
        except OSError as exc:
            reason = f"{address}:{port}: {exc.strerror or exc}"
        if time.monotonic() >= deadline:
            return reason
        time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))


def _ssh_probe(name: str, host: Host, port: int, inputs: dict[str, Any], timeout: float) -> Check:
    ssh = find_tool("ssh")
    if ssh is None:
        return Check(name, "fail", "ssh not on PATH")
    user = str(host.hostvars.get("ansible_user", inputs["target_user"]))
    argv = [ssh, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(timeout)}", "-p", str(port)]
    key = host.hostvars.get("ansible_ssh_private_key_file") or inputs.get("ssh_private_key_file")
    if key:
        argv += ["-i", str(key)]
    argv += [f"{user}@{host.address}", "true"]
    return _command_probe(name, argv, timeout + 5, f"ssh {user}@{host.address}:{port} ok")


def _podman_probe(name: str, host: Host, timeout: float) -> Check:
    podman = find_tool("podman")
    if podman is None:
        return Check(name, "fail", "podman not on PATH")
    argv = [podman, "exec", host.address, "true"]
    return _command_probe(name, argv, timeout + 5, f"podman exec {host.address} ok")


def _command_probe(name: str, argv: list[str], timeout: float, ok_detail: str) -> Check:
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Check(name, "fail", f"no answer within {timeout:.0f} s")
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return Check(name, "fail", " ".join(last.split())[:200])
    return Check(name, "ok", ok_detail)


def _version(tool: str) -> str:
    try:
        proc = subprocess.run(
            [tool, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return tool
    first = proc.stdout.splitlines()[0] if proc.stdout else tool
    return " ".join(first.split())


def table(checks: list[Check]) -> str:
    width = max([len(c.name) for c in checks] + [5])
    lines = [f"{'CHECK':<{width}}  {'STATUS':<6}  DETAIL"]
    lines += [f"{c.name:<{width}}  {c.status.upper():<6}  {c.detail}" for c in checks]
    return "\n".join(lines)
