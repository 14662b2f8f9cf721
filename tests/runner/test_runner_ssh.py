"""SSH as HybridOps does it, with host keys pinned on first use instead of ignored:
the jump host (``ssh_proxy_jump_*``) in the inventory and in the probe, and the runtime
root's own ``ssh/known_hosts``. Network traffic stays on loopback."""

from __future__ import annotations

import json
import shlex
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from runner_helpers import FIXTURE_ID, FixtureEnv
from runner_helpers import hangup_listener as loopback_hangup

from hyops_runner.inventory import render
from hyops_runner.sshopts import Jump, jump_host

BASE: dict[str, Any] = {
    "inventory_state_ref": "",
    "target_user": "ops",
    "target_port": 22,
    "ssh_private_key_file": "",
    "become": True,
    "become_user": "root",
    "inventory_groups": {"edge_control": [{"name": "ctl", "host": "127.0.0.3"}]},
}


class _Unsafe(yaml.SafeLoader):
    """Reads ``!unsafe`` strings back as plain strings."""


_Unsafe.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


def common_args(text: str) -> list[str]:
    doc = yaml.load(text, Loader=_Unsafe)  # a SafeLoader subclass
    value = doc["all"]["children"]["targets"]["vars"]["ansible_ssh_common_args"]
    return shlex.split(value)  # how Ansible splits the option string


def test_inventory_pins_host_keys_in_the_runtime_root(tmp_path: Path) -> None:
    known = tmp_path / "ssh" / "known_hosts"
    args = common_args(render(BASE, known))
    assert args == [
        "-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={known}",
    ]  # fmt: skip


def test_inventory_reaches_targets_through_the_jump_host(tmp_path: Path) -> None:
    known = tmp_path / "ssh" / "known_hosts"
    jump = Jump("127.0.0.1", "bastion", 2222)
    args = common_args(render({**BASE, "ssh_private_key_file": "/keys/id"}, known, jump))
    proxy = next(a for a in args if a.startswith("ProxyCommand="))
    inner = shlex.split(proxy.removeprefix("ProxyCommand="))
    assert inner[:5] == ["ssh", "-W", "%h:%p", "-p", "2222"]
    assert inner[-2:] == ["--", "bastion@127.0.0.1"]
    assert "-i" in inner and "/keys/id" in inner and f"UserKnownHostsFile={known}" in inner


def test_jump_host_auto_comes_from_the_proxmox_init_record(tmp_path: Path) -> None:
    assert jump_host({"ssh_proxy_jump_auto": True}, tmp_path) is None
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "proxmox.ready.json").write_text(
        json.dumps({"runtime": {"api_ip": "127.0.0.9"}})
    )
    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials" / "proxmox.credentials.tfvars").write_text(
        'proxmox_ssh_username = "pve"\n'
    )
    auto = jump_host({"ssh_proxy_jump_auto": True, "ssh_proxy_jump_user": "root"}, tmp_path)
    assert auto is not None and (auto.host, auto.user, auto.port) == ("127.0.0.9", "pve", 22)
    assert "ssh_proxy_jump_auto" in auto.note
    assert jump_host({"ssh_proxy_jump_auto": False}, tmp_path) is None
    given = jump_host({"ssh_proxy_jump_host": "127.0.0.8", "ssh_proxy_jump_auto": True}, tmp_path)
    assert given == Jump("127.0.0.8", "root", 22)


@pytest.fixture
def hangup_listener() -> Iterator[int]:
    with loopback_hangup() as port:
        yield port


def test_the_probe_goes_through_the_jump_host(
    fixture_env: FixtureEnv, hangup_listener: int
) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.3", 0))
    target_port = closed.getsockname()[1]
    closed.close()
    # The target's own port is closed: only a probe through the jump host gets past TCP.
    fixture_env.write_inputs(
        inventory_groups={"edge_control": [{"name": "far", "host": "127.0.0.3"}]},
        target_port=target_port,
        ssh_proxy_jump_host="127.0.0.1",
        ssh_proxy_jump_user="bastion",
        ssh_proxy_jump_port=hangup_listener,
        connectivity_timeout_s=3,
    )
    run = fixture_env.run("apply")
    assert run.returncode == 1
    assert "ssh far:" in run.stderr and "tcp far" not in run.stderr
    assert not fixture_env.state_file.exists()
    top = fixture_env.root / "logs" / "module" / FIXTURE_ID
    evidence = next(top.iterdir())
    checks = {
        c["name"]: c for c in json.loads((evidence / "hyops_run.json").read_text())["preflight"]
    }
    assert checks["tcp far"] == {
        "name": "tcp far", "status": "ok", "detail": f"127.0.0.1:{hangup_listener} open",
    }  # fmt: skip
    assert checks["ssh far"]["status"] == "fail"
    label = "connectivity_ssh_auth.edge_control.far"
    names = {p.name for p in evidence.iterdir()}
    assert {f"{label}.stdout.txt", f"{label}.stderr.txt", f"{label}.result.json"} <= names
    envelope = json.loads((evidence / f"{label}.result.json").read_text())
    assert set(envelope) == {"argv", "cwd", "rc", "duration_ms"} and envelope["rc"] != 0
    argv = envelope["argv"]
    assert argv[-3:] == ["--", "root@127.0.0.3", "true"]
    proxy = next(a for a in argv if a.startswith("ProxyCommand="))
    assert f"-p {hangup_listener}" in proxy and "bastion@127.0.0.1" in proxy
    known = fixture_env.root / "ssh" / "known_hosts"
    assert f"UserKnownHostsFile={known}" in argv
    meta = json.loads((evidence / "meta.json").read_text())
    assert meta["proxy_jump"]["host"] == "127.0.0.1" and meta["proxy_jump"]["user"] == "bastion"
