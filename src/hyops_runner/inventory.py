"""Render ``inventory.yml`` from ``inventory_groups``, with HybridOps' groups and variables.

Each group's hosts with ``ansible_host`` (``ansible_connection: local`` for localhost
addresses), all under the group ``targets``, whose variables are those HybridOps writes
under ``[targets:vars]``: ``ansible_become`` always, ``ansible_become_user`` only when
it is not root. Extra keys of a host entry that are valid Ansible variable names become
host variables, which is how a test host is reached with
``ansible_connection: containers.podman.podman``.

Every value is data: the file is YAML with every string tagged ``!unsafe``, so Ansible
never decodes nor templates a value (HybridOps' INI form evaluated Python literals, so
an escaped ``\\x7b\\x7b`` became ``{{``). A value holding ``{{``, ``{%`` or ``{#``, a
line break or NUL is refused all the same, and a user or host starting with ``-``
(which ssh would read as an option) too. SSH options (host keys, jump host) go in
``ansible_ssh_common_args``; see sshopts.py.
"""

from __future__ import annotations

import difflib
import keyword
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import extravars
from .redact import is_secret_name, is_secret_value
from .sshopts import Jump, host_key_options, proxy_command

LOCAL_ADDRESSES = frozenset({"localhost", "127.0.0.1", "::1"})
VAR_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
GROUP_RE = VAR_NAME_RE
TEMPLATE_RE = re.compile(r"\{[{%#]")
# Ansible's host variables a host entry is likely to set; an unknown ansible_* key close
# to one of them is a typo (Ansible would ignore it and connect another way).
KNOWN_ANSIBLE_KEYS = frozenset(
    f"ansible_{name}"
    for name in (
        "host",
        "port",
        "user",
        "connection",
        "password",
        "ssh_pass",
        "ssh_private_key_file",
        "private_key_file",
        "ssh_common_args",
        "ssh_extra_args",
        "sftp_extra_args",
        "scp_extra_args",
        "ssh_pipelining",
        "pipelining",
        "ssh_executable",
        "ssh_host",
        "ssh_port",
        "ssh_user",
        "become",
        "become_method",
        "become_user",
        "become_password",
        "become_pass",
        "become_exe",
        "become_flags",
        "sudo_pass",
        "shell_type",
        "shell_executable",
        "python_interpreter",
        "remote_tmp",
        "timeout",
        "connection_timeout",
        "podman_executable",
        "podman_extra_args",
        "docker_extra_args",
        "network_os",
        "winrm_transport",
        "winrm_scheme",
        "winrm_server_cert_validation",
    )
)
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


def _check_ansible_key(where: str, key: str) -> None:
    if not key.startswith("ansible_") or key in KNOWN_ANSIBLE_KEYS:
        return
    close = difflib.get_close_matches(key, sorted(KNOWN_ANSIBLE_KEYS), n=1, cutoff=0.85)
    if close:
        raise ValueError(f"{where}: unknown Ansible variable; did you mean {close[0]}?")


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
                _check_ansible_key(f"{where}.{key}", key)
                check_data(f"{where}.{key}", value, key in OPTION_LIKE_KEYS)
            extra = {k: v for k, v in entry.items() if k not in ("name", "host")}
            out.append(Host(str(group), str(entry["name"]), str(entry["host"]), extra))
    return out


def ssh_common_args(inputs: dict[str, Any], known_hosts: Path | None, jump: Jump | None) -> str:
    keys = host_key_options(known_hosts, write=True) if known_hosts is not None else []
    args = list(keys)
    if jump is not None:
        proxy = proxy_command(jump, str(inputs.get("ssh_private_key_file") or ""), keys)
        args += ["-o", f'ProxyCommand="{proxy}"']
    return " ".join(a if a.startswith("ProxyCommand=") else shlex.quote(a) for a in args)


def document(
    inputs: dict[str, Any], known_hosts: Path | None = None, jump: Jump | None = None
) -> dict[str, Any]:
    """The inventory as data: ``all.children.targets`` holds each group's hosts and the
    connection variables HybridOps writes under ``[targets:vars]``."""
    for key in ("target_user", "become_user", "ssh_private_key_file"):
        check_data(f"inputs.{key}", inputs.get(key, ""), option_like=True)
    if jump is not None:
        check_data("inputs.ssh_proxy_jump_host", jump.host, option_like=True)
        check_data("inputs.ssh_proxy_jump_user", jump.user, option_like=True)
    groups: dict[str, dict[str, Any]] = {}
    for host in hosts(inputs):
        if not GROUP_RE.match(host.group):
            raise ValueError(f"inputs.inventory_groups.{host.group}: not a valid group name")
        hostvars: dict[str, Any] = {"ansible_host": host.address}
        if host.address in LOCAL_ADDRESSES and "ansible_connection" not in host.hostvars:
            hostvars["ansible_connection"] = "local"
        hostvars.update(host.hostvars)
        groups.setdefault(host.group, {"hosts": {}})["hosts"][host.name] = hostvars
    targets: dict[str, Any] = {
        "ansible_user": str(inputs["target_user"]),
        "ansible_port": int(inputs["target_port"]),
        "ansible_python_interpreter": "/usr/bin/python3",
    }
    if inputs.get("ssh_private_key_file"):
        targets["ansible_ssh_private_key_file"] = str(inputs["ssh_private_key_file"])
    common = ssh_common_args(inputs, known_hosts, jump)
    if common:
        targets["ansible_ssh_common_args"] = common
    targets["ansible_become"] = bool(inputs.get("become", True))
    become_user = str(inputs.get("become_user") or "root")
    if become_user != "root":
        # Forcing root here would override a role's own become_user (HybridOps does not).
        targets["ansible_become_user"] = become_user
    return {"all": {"children": {"targets": {"children": groups, "vars": targets}}}}


def render(
    inputs: dict[str, Any], known_hosts: Path | None = None, jump: Jump | None = None
) -> str:
    """``inventory.yml``: every string tagged ``!unsafe``, so Ansible neither decodes
    (the INI reader evaluates Python literals: ``'\\x7b\\x7b'`` became ``{{``) nor
    templates a value."""
    header = "# Inventory for ansible-playbook, written by hyops; strings are !unsafe (data).\n"
    return header + extravars.dumps(document(inputs, known_hosts, jump))
