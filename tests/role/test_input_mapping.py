"""Every module input reaches the role or the runner; module.yml stays the source of defaults."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MAPPING: dict[str, str] = yaml.safe_load(
    (REPO / "playbooks" / "vars" / "module_inputs.yml").read_text(encoding="utf-8")
)
ROLE_DEFAULTS: dict[str, Any] = yaml.safe_load(
    (REPO / "roles" / "decision_dispatcher" / "defaults" / "main.yml").read_text(encoding="utf-8")
)
PLAYBOOK_TEXT = "\n".join(
    p.read_text(encoding="utf-8") for p in sorted((REPO / "playbooks").rglob("*.yml"))
)
# Inputs the runner turns into the inventory (docs/INTERFACES.md "Role variables"), not
# playbook variables.
RUNNER_ONLY = {
    "inventory_groups",
    "inventory_state_ref",
    "inventory_vm_groups",
    "target_user",
    "target_port",
    "ssh_private_key_file",
    "ssh_proxy_jump_auto",
    "ssh_proxy_jump_host",
    "ssh_proxy_jump_user",
    "ssh_proxy_jump_port",
    "load_vault_env",
}
# Inputs HybridOps' validator requires that the playbooks ignore (module.yml says why).
UPSTREAM_ONLY = {"dispatcher_role_fqcn"}
# Inputs the playbooks read themselves (become, connectivity, required environment).
PLAYBOOK_LEVEL = {
    "become",
    "become_user",
    "connectivity_check",
    "connectivity_timeout_s",
    "connectivity_wait_s",
    "required_env",
    "required_env_destroy",
}
# dispatcher_state is set by the play (apply: the input; destroy: always absent).
PLAY_SET = {"dispatcher_state"}


def role_variable(input_name: str) -> str:
    if input_name == "dispatcher_decision_records_dir":
        return "decision_dispatcher_records_dir"
    return "decision_" + input_name


def test_inputs_are_partitioned(input_defaults: dict[str, Any]) -> None:
    dispatcher = {k for k in input_defaults if k.startswith("dispatcher_")} - UPSTREAM_ONLY
    others = set(input_defaults) - dispatcher - UPSTREAM_ONLY
    assert others == RUNNER_ONLY | PLAYBOOK_LEVEL, "a new non-dispatcher input needs a home"
    mapped = {role_variable(k) for k in dispatcher - PLAY_SET}
    assert set(MAPPING) == mapped, (
        "playbooks/vars/module_inputs.yml maps exactly the dispatcher_* inputs"
    )


@pytest.mark.parametrize("name", sorted(PLAYBOOK_LEVEL | PLAY_SET))
def test_play_level_inputs_are_read_by_the_playbooks(name: str) -> None:
    assert re.search(rf"\b{name}\b", PLAYBOOK_TEXT), f"{name} is not read by any playbook"


def test_every_dispatcher_input_maps_to_its_role_variable(input_defaults: dict[str, Any]) -> None:
    for name in sorted(k for k in input_defaults if k.startswith("dispatcher_")):
        if name in PLAY_SET | UPSTREAM_ONLY:
            continue
        variable = role_variable(name)
        expression = MAPPING[variable]
        assert re.search(rf"\b{name}\b", expression), f"{variable} does not read input {name}"
        assert f"__hyops_defaults.{name}" in expression, f"{variable}: no manifest fallback"
        assert variable in ROLE_DEFAULTS, f"{variable} is not a role variable"


def test_role_defaults_agree_with_the_manifest(input_defaults: dict[str, Any]) -> None:
    for name, value in input_defaults.items():
        if name.startswith("dispatcher_") and name not in UPSTREAM_ONLY:
            assert ROLE_DEFAULTS[role_variable(name)] == value, f"{name}: role default differs"


def test_playbooks_target_edge_control_and_the_manifest_names_them(
    module_spec: dict[str, Any],
) -> None:
    for lifecycle, relative in module_spec["playbooks"].items():
        plays = yaml.safe_load((REPO / relative).read_text(encoding="utf-8"))
        assert [p["hosts"] for p in plays] == ["edge_control"], lifecycle
        assert plays[0]["roles"][0]["role"] == "decision_dispatcher", lifecycle
