"""Checks that a run can work before anything touches a host.

Inputs, tools (ansible-playbook; ssh or podman when a host needs them), the runtime
root (read only), required environment variables and, with ``connectivity_check``, each
host but 0.0.0.0 (HybridOps' rule): TCP then an SSH probe (through the jump host when
one is set), ``podman exec`` for hosts whose ``ansible_connection`` is podman. During a
run each probe's output is evidence: ``connectivity_ssh_auth.<group>.<host>.*``.
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

from . import runtime
from .fsutil import atomic_write_bytes, atomic_write_json
from .inventory import Host
from .playbook import find_tool
from .sshopts import Jump, proxy_command

PODMAN_CONNECTIONS = frozenset({"containers.podman.podman", "podman"})
PLACEHOLDER_HOSTS = frozenset({"0.0.0.0"})


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
    ssh_like = ("ssh", "paramiko", "ansible.builtin.ssh")
    needs = {"ssh": any(h.hostvars.get("ansible_connection", "ssh") in ssh_like for h in hosts)}
    needs["podman"] = any(h.connection in PODMAN_CONNECTIONS for h in hosts)
    for name, needed in needs.items():
        if not needed:
            continue
        found = find_tool(name)
        out.append(Check(f"tool {name}", "ok" if found else "fail", found or f"{name} not on PATH"))
    return out


def root_check(root: Path) -> Check:
    """Would a run be allowed to use ``root``? Reads only: preflight writes nothing."""
    name = "runtime root"
    try:
        problem = runtime.root_problem(root)
    except OSError as exc:
        return Check(name, "fail", f"{root}: {exc.strerror}")
    if problem:
        return Check(name, "fail", problem)
    if root.exists():
        ok = os.access(root, os.W_OK | os.X_OK)
        return Check(name, "ok" if ok else "fail", str(root) if ok else f"{root}: not writable")
    parent = root.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    ok = os.access(parent, os.W_OK | os.X_OK)
    detail = f"{root} (will be created in {parent})" if ok else f"{parent}: not writable"
    return Check(name, "ok" if ok else "fail", detail)


def required_env(names: list[str], environ: Mapping[str, str]) -> Check:
    missing = [n for n in names if not environ.get(n)]
    if missing:
        return Check("required env", "fail", "unset: " + ", ".join(missing))
    return Check("required env", "ok", ", ".join(names) or "none required")


@dataclass(frozen=True)
class Probe:
    """How this run reaches hosts: host key handling, jump host, where probe output goes."""

    key_options: list[str]
    jump: Jump | None = None
    evidence: Path | None = None


def connectivity(host: Host, inputs: dict[str, Any], probe: Probe) -> list[Check]:
    """HybridOps probes every host but 0.0.0.0, localhost included; a host that names its
    own ``ansible_connection`` is probed over that connection instead."""
    name = f"connect {host.name}"
    explicit = str(host.hostvars.get("ansible_connection", ""))
    if host.address in PLACEHOLDER_HOSTS:
        return [Check(name, "skip", f"placeholder address {host.address}")]
    if explicit == "local":
        return [Check(name, "ok", "local connection")]
    timeout = float(inputs["connectivity_timeout_s"])
    if explicit in PODMAN_CONNECTIONS:
        return [_podman_probe(name, host, timeout, probe.evidence)]
    if explicit and explicit not in ("ssh", "paramiko", "ansible.builtin.ssh"):
        return [Check(name, "skip", f"no probe for connection {explicit}")]
    port = int(host.hostvars.get("ansible_port", inputs["target_port"]))
    # Through a jump host only the jump host is reachable from here.
    tcp_host, tcp_port = (probe.jump.host, probe.jump.port) if probe.jump else (host.address, port)
    tcp = _tcp_probe(tcp_host, tcp_port, timeout, float(inputs["connectivity_wait_s"]))
    checks = [
        Check(
            f"tcp {host.name}",
            "ok" if tcp is None else "fail",
            tcp or f"{tcp_host}:{tcp_port} open",
        )
    ]
    if tcp is None:
        checks.append(_ssh_probe(f"ssh {host.name}", host, port, inputs, timeout, probe))
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


def ssh_probe_argv(
    ssh: str, host: Host, port: int, inputs: dict[str, Any], timeout: float, probe: Probe
) -> list[str]:
    user = str(host.hostvars.get("ansible_user", inputs["target_user"]))
    key = host.hostvars.get("ansible_ssh_private_key_file") or inputs.get("ssh_private_key_file")
    key = str(key or "")
    argv = [ssh, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, int(timeout))}"]
    argv += [*probe.key_options, "-p", str(port)]
    if key:
        argv += ["-i", str(Path(key).expanduser())]
    if probe.jump is not None:
        argv += ["-o", "ProxyCommand=" + proxy_command(probe.jump, key, probe.key_options)]
    # "--" ends the options: a destination can never be read as one.
    return [*argv, "--", f"{user}@{host.address}", "true"]


def _ssh_probe(
    name: str, host: Host, port: int, inputs: dict[str, Any], timeout: float, probe: Probe
) -> Check:
    ssh = find_tool("ssh")
    if ssh is None:
        return Check(name, "fail", "ssh not on PATH")
    argv = ssh_probe_argv(ssh, host, port, inputs, timeout, probe)
    via = f" via {probe.jump.user}@{probe.jump.host}" if probe.jump else ""
    ok = f"ssh {argv[-2]}:{port}{via} ok"
    label = f"connectivity_ssh_auth.{host.label}"
    return _command_probe(name, argv, timeout + 5, ok, probe.evidence, label)


def _podman_probe(name: str, host: Host, timeout: float, evidence: Path | None) -> Check:
    podman = find_tool("podman")
    if podman is None:
        return Check(name, "fail", "podman not on PATH")
    argv = [podman, "exec", "--", host.address, "true"]
    label = f"connectivity_podman_exec.{host.label}"
    ok = f"podman exec {host.address} ok"
    return _command_probe(name, argv, timeout + 5, ok, evidence, label)


def _command_probe(
    name: str,
    argv: list[str],
    timeout: float,
    ok_detail: str,
    evidence: Path | None = None,
    label: str = "",
) -> Check:
    started = time.monotonic()
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = _text(exc.stdout), _text(exc.stderr)
        _record(evidence, label, argv, 124, out, started)
        return Check(name, "fail", f"no answer within {timeout:.0f} s")
    _record(evidence, label, argv, proc.returncode, (proc.stdout, proc.stderr), started)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return Check(name, "fail", " ".join(last.split())[:200])
    return Check(name, "ok", ok_detail)


def _text(data: bytes | str | None) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data or ""


def _record(
    evidence: Path | None,
    label: str,
    argv: list[str],
    rc: int,
    out: tuple[str, str],
    started: float,
) -> None:
    """HybridOps' evidence for one command: <label>.stdout.txt, .stderr.txt, .result.json."""
    if evidence is None or not label:
        return
    atomic_write_bytes(evidence / f"{label}.stdout.txt", out[0].encode("utf-8"))
    atomic_write_bytes(evidence / f"{label}.stderr.txt", out[1].encode("utf-8"))
    duration_ms = int((time.monotonic() - started) * 1000)
    doc = {"argv": argv, "cwd": os.getcwd(), "rc": rc, "duration_ms": duration_ms}
    atomic_write_json(evidence / f"{label}.result.json", doc)


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
