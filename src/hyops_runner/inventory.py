"""Render ``inventory.ini`` from ``inventory_groups`` the way HybridOps does.

``[<group>]`` with ``<name> ansible_host=<host>`` lines (``ansible_connection=local`` for
localhost addresses), then ``[targets:children]`` and ``[targets:vars]`` with
``ansible_become`` always and ``ansible_become_user`` only when it is not root. Extra
keys of a host entry that are valid Ansible variable names become host variables, which
is how a test host is reached with ``ansible_connection: containers.podman.podman``.

Every value is data: Ansible templates inventory variables when it reads them, so a
value holding ``{{``, ``{%`` or ``{#`` is refused, and a user or host starting with
``-`` (which ssh would read as an option) too. SSH options (host keys, jump host) go in
``ansible_ssh_common_args``; see sshopts.py.
"""

from __future__ import annotations

import keyword
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .redact import is_secret_name, is_secret_value
from .sshopts import Jump, host_key_options, proxy_command

LOCAL_ADDRESSES = frozenset({"localhost", "127.0.0.1", "::1"})
VAR_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
GROUP_RE = VAR_NAME_RE
TEMPLATE_RE = re.compile(r"\{[{%#]")
# Keys whose value ssh reads as a login or a destination.
OPTION_LIKE_KEYS = frozenset({"ansible_host", "ansible_user", "ansible_ssh_user", "host", "name"})


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

    @property
    def label(self) -> str:
        """``<group>.<name>``, safe in a file name (HybridOps' evidence labels)."""
        token = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{self.group}.{self.name}").strip("._-")
        return token or "host"


def check_data(where: str, value: Any, option_like: bool = False) -> None:
    """Refuse what Ansible would template or ssh would read as an option (ValueError)."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, float)):
        return
    text = str(value)
    if is_secret_value(text):
        shown = "a value holding key material (hidden)"
    elif is_secret_name(where.rsplit(".", 1)[-1]):
        shown = "a value"
    else:
        shown = repr(text)
    if TEMPLATE_RE.search(text):
        raise ValueError(f"{where}: {shown} holds '{{{{', '{{%' or '{{#' (inputs are data)")
    if "\n" in text or "\r" in text or "\0" in text:
        raise ValueError(f"{where}: {shown} holds a line break or NUL")
    if option_like and text.startswith("-"):
        raise ValueError(f"{where}: {shown} starts with '-' (ssh would read it as an option)")


def hosts(inputs: dict[str, Any]) -> list[Host]:
    if inputs.get("inventory_state_ref"):
        # Resolving another module's published inventory needs its output format, which
        # this package does not know; refuse loudly rather than run against nothing.
        raise ValueError(
            "inputs.inventory_state_ref: not supported by this runner; list the hosts in "
            "inputs.inventory_groups instead"
        )
    out: list[Host] = []
    for group, entries in (inputs.get("inventory_groups") or {}).items():
        for index, entry in enumerate(entries or []):
            where = f"inputs.inventory_groups.{group}[{index}]"
            for key, value in entry.items():
                if key not in ("name", "host") and (
                    not VAR_NAME_RE.match(key) or keyword.iskeyword(key)
                ):
                    raise ValueError(f"{where}: key {key!r} is not a valid Ansible variable name")
                check_data(f"{where}.{key}", value, key in OPTION_LIKE_KEYS)
            extra = {k: v for k, v in entry.items() if k not in ("name", "host")}
            out.append(Host(str(group), str(entry["name"]), str(entry["host"]), extra))
    return out


def _ini_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    # INI inventory splits host lines with shlex; quote anything it would split or eat.
    return shlex.quote(text) if re.search(r"[\s#;'\"\\=]", text) or not text else text


def _vars_value(text: str) -> str:
    """A ``[group:vars]`` value: Ansible reads it as a Python literal when it parses."""
    return repr(text)


def ssh_common_args(inputs: dict[str, Any], known_hosts: Path | None, jump: Jump | None) -> str:
    keys = host_key_options(known_hosts, write=True) if known_hosts is not None else []
    args = list(keys)
    if jump is not None:
        proxy = proxy_command(jump, str(inputs.get("ssh_private_key_file") or ""), keys)
        args += ["-o", f'ProxyCommand="{proxy}"']
    return " ".join(a if a.startswith("ProxyCommand=") else shlex.quote(a) for a in args)


def render(
    inputs: dict[str, Any], known_hosts: Path | None = None, jump: Jump | None = None
) -> str:
    for key in ("target_user", "become_user", "ssh_private_key_file"):
        check_data(f"inputs.{key}", inputs.get(key, ""), option_like=True)
    if jump is not None:
        check_data("inputs.ssh_proxy_jump_host", jump.host, option_like=True)
        check_data("inputs.ssh_proxy_jump_user", jump.user, option_like=True)
    groups: dict[str, list[Host]] = {}
    for host in hosts(inputs):
        groups.setdefault(host.group, []).append(host)
    lines: list[str] = []
    for group, members in groups.items():
        if not GROUP_RE.match(group):
            raise ValueError(f"inputs.inventory_groups.{group}: not a valid group name")
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
    common = ssh_common_args(inputs, known_hosts, jump)
    if common:
        lines.append(f"ansible_ssh_common_args={_vars_value(common)}")
    lines.append(f"ansible_become={_ini_value(bool(inputs.get('become', True)))}")
    become_user = str(inputs.get("become_user") or "root")
    if become_user != "root":
        # Forcing root here would override a role's own become_user (HybridOps does not).
        lines.append(f"ansible_become_user={_ini_value(become_user)}")
    return "\n".join(lines) + "\n"
