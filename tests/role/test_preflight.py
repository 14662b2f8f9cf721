"""The role's preflight refuses bad input with a message naming the variable.

One real ansible-playbook run on the controller (connection local) runs the role's
preflight tasks once per case, each in its own block, and records pass or the message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
GOOD_ROUTE = {
    "target_kind": "blueprint",
    "target_ref": "dr/postgresql-ha-failover-gcp@v1",
    "target_env": "dr",
    "execution_plane": "runner-local",
}
CASES: dict[str, tuple[dict[str, Any], str | None]] = {
    "good": ({}, None),
    "good_absent": (
        {"decision_dispatcher_state": "absent", "decision_dispatcher_archive_dir": "/tmp/a"},
        None,
    ),
    "no_routes": ({"decision_dispatcher_routes": {}}, "decision_dispatcher_routes"),
    "poll_too_low": ({"decision_dispatcher_poll_seconds": 4}, "poll_seconds >= 5"),
    "unknown_route_key": (
        {"decision_dispatcher_routes": {"cutover": {**GOOD_ROUTE, "requires_aproval": False}}},
        "decision_dispatcher_routes.cutover",
    ),
    "approval_not_bool": (
        {"decision_dispatcher_routes": {"cutover": {**GOOD_ROUTE, "requires_approval": "no"}}},
        "requires_approval must be a boolean",
    ),
    "bad_plane": (
        {"decision_dispatcher_routes": {"cutover": {**GOOD_ROUTE, "execution_plane": "ssh"}}},
        "decision_dispatcher_routes.cutover",
    ),
    "upper_case_type": (
        {"decision_dispatcher_routes": {"Cutover": GOOD_ROUTE}},
        "decision_dispatcher_routes.Cutover",
    ),
    "records_inside_root": (
        {"decision_dispatcher_records_dir": "/opt/hybridops/decision-dispatcher/records"},
        "must not be '/'",
    ),
    "script_inside_root": (
        {"decision_dispatcher_script_path": "/opt/hybridops/decision-dispatcher/d.py"},
        "decision_dispatcher_script_path",
    ),
    "root_user": ({"decision_dispatcher_service_user": "root"}, "not root"),
    "handoff_unrouted": (
        {
            "decision_dispatcher_handoff_check": True,
            "decision_dispatcher_handoff_decision_type": "x",
        },
        "is not a key of decision_dispatcher_routes",
    ),
    "absent_without_archive": (
        {"decision_dispatcher_state": "absent"},
        "decision_dispatcher_archive_dir is empty",
    ),
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    work = tmp_path_factory.mktemp("preflight")
    out = work / "outcomes.json"
    tasks: list[dict[str, Any]] = []
    for name, (overrides, _) in CASES.items():
        tasks.append(
            {
                "name": f"case {name}",
                "block": [
                    {
                        "name": f"preflight {name}",
                        "ansible.builtin.include_role": {
                            "name": "decision_dispatcher",
                            "tasks_from": "preflight.yml",
                        },
                        "vars": {
                            "decision_dispatcher_routes": {"cutover": GOOD_ROUTE},
                            **overrides,
                        },
                    },
                    {
                        "name": f"passed {name}",
                        "ansible.builtin.set_fact": {
                            "outcomes": f"{{{{ outcomes | combine({{'{name}': 'passed'}}) }}}}"
                        },
                    },
                ],
                "rescue": [
                    {
                        "name": f"failed {name}",
                        "ansible.builtin.set_fact": {
                            # a failed loop item carries its message in results[]
                            "outcomes": (
                                f"{{{{ outcomes | combine({{'{name}': "
                                "([ansible_failed_result.msg | default('failed')]"
                                " + (ansible_failed_result.results | default([])"
                                " | selectattr('failed', 'defined') | selectattr('failed')"
                                " | map(attribute='msg') | list)) | join(' ')}) }}"
                            )
                        },
                    }
                ],
            }
        )
    tasks.append(
        {
            "name": "write outcomes",
            "ansible.builtin.copy": {"content": "{{ outcomes | to_json }}", "dest": str(out)},
        }
    )
    play = [
        {
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars": {"outcomes": {}, "ansible_python_interpreter": sys.executable},
            "tasks": tasks,
        }
    ]
    playbook = work / "preflight.yml"
    playbook.write_text(yaml.safe_dump(play, sort_keys=False), encoding="utf-8")
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(REPO / "roles"), "ANSIBLE_NOCOLOR": "1"}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), str(playbook)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_preflight(outcomes: dict[str, str], case: str) -> None:
    expected = CASES[case][1]
    if expected is None:
        assert outcomes[case] == "passed"
    else:
        assert outcomes[case] != "passed", f"{case} was accepted"
        assert expected in outcomes[case]
