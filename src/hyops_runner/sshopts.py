"""SSH options shared by the inventory and the connectivity probe: the jump host and
trust-on-first-use host keys.

Jump host (``ssh_proxy_jump_*``, as HybridOps has them): SSH to a target goes through
``ProxyCommand=ssh -W %h:%p ... -- user@jump``; with ``ssh_proxy_jump_auto`` and no
host given, the jump host is the Proxmox host ``hyops init`` recorded in
``<root>/meta/proxmox.ready.json`` (``runtime.api_ip``), its user
``proxmox_ssh_username`` from ``<root>/credentials/proxmox.credentials.tfvars``.

Host keys: HybridOps turns checking off. Here a key is accepted the first time and
pinned in the runtime root's own ``ssh/known_hosts`` (``StrictHostKeyChecking=accept-new``);
a changed key then fails the run. ``hyops preflight`` reads that file but writes nothing.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Characters ssh or a shell would read as more than a path (%-tokens, quotes, $, braces).
UNSAFE_PATH_RE = re.compile(r"[\s%'\"\\$`{}]")
TFVARS_USER_RE = re.compile(r'^\s*proxmox_ssh_username\s*=\s*"([^"]*)"\s*$', re.MULTILINE)


@dataclass(frozen=True)
class Jump:
    host: str
    user: str
    port: int
    note: str = ""


def known_hosts_file(root: Path) -> Path:
    return root / "ssh" / "known_hosts"


def jump_host(inputs: dict[str, Any], root: Path) -> Jump | None:
    """The jump host for this run, or None for direct SSH."""
    host = str(inputs.get("ssh_proxy_jump_host") or "").strip()
    user = str(inputs.get("ssh_proxy_jump_user") or "").strip() or "root"
    port = int(inputs.get("ssh_proxy_jump_port") or 22)
    if host:
        return Jump(host, user, port)
    if not inputs.get("ssh_proxy_jump_auto"):
        return None
    auto_host, auto_user = _proxmox_bastion(root)
    if not auto_host:
        return None
    user = auto_user or user
    return Jump(auto_host, user, port, f"ssh_proxy_jump_auto: via {user}@{auto_host}")


def _proxmox_bastion(root: Path) -> tuple[str, str]:
    try:
        ready = json.loads((root / "meta" / "proxmox.ready.json").read_text(encoding="utf-8"))
        host = str(((ready or {}).get("runtime") or {}).get("api_ip") or "").strip()
    except (OSError, ValueError, AttributeError):
        return "", ""
    try:
        tfvars = (root / "credentials" / "proxmox.credentials.tfvars").read_text(encoding="utf-8")
        found = TFVARS_USER_RE.search(tfvars)
        user = found.group(1).strip() if found else ""
    except OSError:
        user = ""
    return host, user


def host_key_options(known_hosts: Path, write: bool) -> list[str]:
    """``-o`` options for host keys: accept and pin a new key (``write``), or check
    against the pinned ones and accept new ones only for this connection."""
    text = str(known_hosts)
    if UNSAFE_PATH_RE.search(text):
        raise ValueError(
            f"runtime root {known_hosts.parent.parent}: its path cannot hold spaces, quotes, "
            "'%', '$', '\\' or braces (ssh and the inventory read them)"
        )
    if write:
        return ["-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={text}"]
    return [
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        f"GlobalKnownHostsFile={text}",
    ]


def proxy_command(jump: Jump, key_file: str, key_options: list[str]) -> str:
    """The ProxyCommand (one shell line) that reaches ``%h:%p`` through the jump host."""
    parts = ["ssh", "-W", "%h:%p", "-p", str(int(jump.port)), "-o", "BatchMode=yes", *key_options]
    if key_file:
        parts += ["-i", str(Path(key_file).expanduser())]
    parts += ["--", f"{jump.user}@{jump.host}"]
    return " ".join(shlex.quote(p) if p != "%h:%p" else p for p in parts)
