"""Render ``inventory.ini`` from ``inventory_groups`` the way HybridOps does.

``[<group>]`` with ``<name> ansible_host=<host>`` lines (``ansible_connection=local`` for
localhost addresses), then ``[targets:children]`` and ``[targets:vars]``. Extra keys of
a host entry that are valid Ansible variable names become host variables, which is how
a test host is reached with ``ansible_connection: containers.podman.podman``.
"""

from __future__ import annotations

import keyword
import re
import shlex
from dataclasses import dataclass
from typing import Any

from .errors import HyopsError

LOCAL_ADDRESSES = frozenset({"localhost", "127.0.0.1", "::1"})
VAR_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
GROUP_RE = VAR_NAME_RE


@dataclass(frozen=True)
class Host:
    group: str
    name: str
    address: str
    hostvars: dict[str, Any]

    @property
    def connection(self) -> str:
        if "ansible_connection" in self.hostvars:
            return str(self.hostvars["ansible_connection"])
        return "local" if self.address in LOCAL_ADDRESSES else "ssh"


def hosts(inputs: dict[str, Any]) -> list[Host]:
    if inputs.get("inventory_state_ref"):
        # Resolving another module's published inventory needs its output format, which
        # this package does not know; refuse loudly rather than run against nothing.
        raise HyopsError(
            "hyops: inputs.inventory_state_ref is not supported by this runner; list the "
            "hosts in inputs.inventory_groups instead"
        )
    out: list[Host] = []
    for group, entries in (inputs.get("inventory_groups") or {}).items():
        for entry in entries or []:
            extra = {k: v for k, v in entry.items() if k not in ("name", "host")}
            for key in extra:
                if not VAR_NAME_RE.match(key) or keyword.iskeyword(key):
                    raise HyopsError(
                        f"hyops: inputs.inventory_groups.{group}: host {entry.get('name')!r} key "
                        f"{key!r} is not a valid Ansible variable name"
                    )
            out.append(Host(group, str(entry["name"]), str(entry["host"]), extra))
    return out


def _ini_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    # INI inventory splits host lines with shlex; quote anything it would split or eat.
    return shlex.quote(text) if re.search(r"[\s#;'\"\\=]", text) or not text else text


def render(inputs: dict[str, Any]) -> str:
    groups: dict[str, list[Host]] = {}
    for host in hosts(inputs):
        groups.setdefault(host.group, []).append(host)
    lines: list[str] = []
    for group, members in groups.items():
        if not GROUP_RE.match(group):
            raise HyopsError(f"hyops: inputs.inventory_groups.{group}: not a valid group name")
        lines.append(f"[{group}]")
        for host in members:
            fields = [host.name, f"ansible_host={_ini_value(host.address)}"]
            if host.address in LOCAL_ADDRESSES and "ansible_connection" not in host.hostvars:
                fields.append("ansible_connection=local")
            fields += [f"{k}={_ini_value(v)}" for k, v in sorted(host.hostvars.items())]
            lines.append(" ".join(fields))
        lines.append("")
    lines.append("[targets:children]")
    lines.extend(groups)
    lines.append("")
    lines.append("[targets:vars]")
    lines.append(f"ansible_user={_ini_value(inputs['target_user'])}")
    lines.append(f"ansible_port={int(inputs['target_port'])}")
    lines.append("ansible_python_interpreter=/usr/bin/python3")
    if inputs.get("ssh_private_key_file"):
        lines.append(f"ansible_ssh_private_key_file={_ini_value(inputs['ssh_private_key_file'])}")
    lines.append(f"ansible_become={_ini_value(bool(inputs.get('become', True)))}")
    lines.append(f"ansible_become_user={_ini_value(inputs.get('become_user', 'root'))}")
    return "\n".join(lines) + "\n"
