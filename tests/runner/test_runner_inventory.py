"""inventory.yml rendering: groups, local addresses, host variable pass-through, !unsafe strings."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from hyops_runner.inventory import hosts, render

BASE: dict[str, Any] = {
    "inventory_state_ref": "",
    "target_user": "ops",
    "target_port": 2222,
    "ssh_private_key_file": "",
    "become": True,
    "become_user": "root",
}


def inputs(groups: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**BASE, "inventory_groups": groups, **extra}


class _Unsafe(yaml.SafeLoader):
    """Reads ``!unsafe`` strings back as plain strings (as Ansible's loader keeps them)."""


_Unsafe.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


def load(text: str) -> dict[str, Any]:
    return yaml.load(text, Loader=_Unsafe)  # a SafeLoader subclass


def test_contract_shape() -> None:
    text = render(
        inputs(
            {
                "edge_control": [
                    {"name": "ctrl-01", "host": "10.10.0.5"},
                    {"name": "lo", "host": "127.0.0.1"},
                ]
            },
            ssh_private_key_file="/keys/id",
        )
    )
    assert load(text) == {
        "all": {
            "children": {
                "targets": {
                    "children": {
                        "edge_control": {
                            "hosts": {
                                "ctrl-01": {"ansible_host": "10.10.0.5"},
                                "lo": {"ansible_host": "127.0.0.1", "ansible_connection": "local"},
                            }
                        }
                    },
                    "vars": {
                        "ansible_user": "ops",
                        "ansible_port": 2222,
                        "ansible_python_interpreter": "/usr/bin/python3",
                        "ansible_ssh_private_key_file": "/keys/id",
                        "ansible_become": True,
                    },
                }
            }
        }
    }  # no ansible_become_user for root (HybridOps leaves it to the role)
    # every string value is data for Ansible; numbers and booleans stay typed
    assert "ansible_user: !unsafe 'ops'" in text and "ansible_port: 2222" in text
    assert "ansible_become: true" in text


def test_host_variables_pass_through() -> None:
    entry = {
        "name": "demo",
        "host": "hyops-demo-abc",
        "ansible_connection": "containers.podman.podman",
        "ansible_python_interpreter": "/usr/bin/python3.11",
        "note": "two words",
    }
    doc = load(render(inputs({"edge_control": [entry]})))
    hostvars = doc["all"]["children"]["targets"]["children"]["edge_control"]["hosts"]["demo"]
    assert hostvars == {
        "ansible_host": "hyops-demo-abc",
        "ansible_connection": "containers.podman.podman",
        "ansible_python_interpreter": "/usr/bin/python3.11",
        "note": "two words",
    }
    assert hosts(inputs({"edge_control": [entry]}))[0].connection == "containers.podman.podman"


@pytest.mark.parametrize("key", ["class", "1abc", "a-b"])
def test_invalid_host_variable_names_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match=f"key '{key}' is not a valid Ansible variable name"):
        render(inputs({"edge_control": [{"name": "h", "host": "x", key: 1}]}))


def test_inventory_state_ref_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="inventory_state_ref: not supported"):
        render(inputs({}, inventory_state_ref="platform/onprem/vm@state"))


def test_become_user_is_written_only_when_it_is_not_root() -> None:
    doc = load(render(inputs({"edge_control": [{"name": "a", "host": "h"}]}, become_user="app")))
    assert doc["all"]["children"]["targets"]["vars"]["ansible_become_user"] == "app"
    doc = load(render(inputs({"edge_control": [{"name": "a", "host": "h"}]})))
    assert "ansible_become_user" not in doc["all"]["children"]["targets"]["vars"]
