"""The role's preflight refuses bad input before anything changes on the host.

Bounds and route rules have one source, the daemon: preflight renders config.json on the
controller and runs `dispatcher.py check-config` on it, so for those cases the expected
message is whatever check-config itself says about the same rendered config. The role
checks only what the daemon cannot (paths apart, service user, handoff route, archive).

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

from .rendering import REPO, ROLE, check_config_verdict

GOOD_ROUTE = {
    "target_kind": "blueprint",
    "target_ref": "dr/postgresql-ha-failover-gcp@v1",
    "target_env": "dr",
    "execution_plane": "runner-local",
}
# Expected: None = accepted; DAEMON = refused with check-config's own message for the
# rendered config; any other string = refused with a message containing it.
DAEMON = "<check-config>"
CASES: dict[str, tuple[dict[str, Any], str | None]] = {
    "good": ({}, None),
    "good_absent": (
        {"decision_dispatcher_state": "absent", "decision_dispatcher_archive_dir": "/tmp/a"},
        None,
    ),
    # absent never renders a config: a value only the daemon would refuse does not block it
    "absent_ignores_daemon_bounds": (
        {
            "decision_dispatcher_state": "absent",
            "decision_dispatcher_archive_dir": "/tmp/a",
            "decision_dispatcher_heartbeat_seconds": 1,
        },
        None,
    ),
    "cluster_good": (
        {
            "decision_dispatcher_service_managed_by": "cluster",
            "decision_dispatcher_shared_mount": "/srv/hyops",
            "decision_dispatcher_root": "/srv/hyops/decision-dispatcher",
        },
        None,
    ),
    "cluster_without_shared_mount": (
        {"decision_dispatcher_service_managed_by": "cluster"},
        "needs decision_dispatcher_shared_mount",
    ),
    "cluster_root_outside_the_mount": (
        {
            "decision_dispatcher_service_managed_by": "cluster",
            "decision_dispatcher_shared_mount": "/srv/hyops",
        },
        "needs decision_dispatcher_shared_mount",
    ),
    "no_routes": ({"decision_dispatcher_routes": {}}, DAEMON),
    "poll_too_low": ({"decision_dispatcher_poll_seconds": 4}, DAEMON),
    "heartbeat_schema_min_minus_1": ({"decision_dispatcher_heartbeat_seconds": 4}, DAEMON),
    # values the old preflight accepted (its own copies of the bounds had drifted)
    "heartbeat_1": ({"decision_dispatcher_heartbeat_seconds": 1}, DAEMON),
    "heartbeat_above_max": ({"decision_dispatcher_heartbeat_seconds": 3601}, DAEMON),
    "max_record_age_1": ({"decision_dispatcher_max_record_age_seconds": 1}, DAEMON),
    # issue 15: a row pruned while its record may still be dispatched (0 was accepted)
    "retention_below_max_age": ({"decision_dispatcher_ledger_retention_seconds": 0}, DAEMON),
    "retention_below_explicit_max_age": (
        {
            "decision_dispatcher_max_record_age_seconds": 7200,
            "decision_dispatcher_ledger_retention_seconds": 3600,
        },
        DAEMON,
    ),
    "max_record_bytes_1": ({"decision_dispatcher_max_record_bytes": 1}, DAEMON),
    "log_max_bytes_2048": ({"decision_dispatcher_log_max_bytes": 2048}, DAEMON),
    "log_backup_count_0": ({"decision_dispatcher_log_backup_count": 0}, DAEMON),
    "settle_above_max": ({"decision_dispatcher_settle_seconds": 301}, DAEMON),
    "unknown_route_key": (
        {"decision_dispatcher_routes": {"cutover": {**GOOD_ROUTE, "requires_aproval": False}}},
        DAEMON,
    ),
    "approval_not_bool": (
        {"decision_dispatcher_routes": {"cutover": {**GOOD_ROUTE, "requires_approval": "no"}}},
        DAEMON,
    ),
    "coalesce_above_max": (
        {"decision_dispatcher_routes": {"cutover": {**GOOD_ROUTE, "coalesce_seconds": 604801}}},
        DAEMON,
    ),
    "supersedes_unknown_route": (
        {"decision_dispatcher_routes": {"cutover": {**GOOD_ROUTE, "supersedes": ["failback"]}}},
        DAEMON,
    ),
    "bad_plane": (
        {"decision_dispatcher_routes": {"cutover": {**GOOD_ROUTE, "execution_plane": "ssh"}}},
        DAEMON,
    ),
    "upper_case_type": ({"decision_dispatcher_routes": {"Cutover": GOOD_ROUTE}}, DAEMON),
    "records_inside_root": (
        {"decision_dispatcher_records_dir": "/opt/hybridops/decision-dispatcher/records"},
        "must not be '/'",
    ),
    "script_inside_root": (
        {"decision_dispatcher_script_path": "/opt/hybridops/decision-dispatcher/d.py"},
        "decision_dispatcher_script_path",
    ),
    "root_user": ({"decision_dispatcher_service_user": "root"}, "not root"),
    "user_too_long": (
        {"decision_dispatcher_service_user": "u" * 33},
        "decision_dispatcher_service_user",
    ),
    "user_32_chars": ({"decision_dispatcher_service_user": "u" * 32}, None),
    "ready_timeout_below_schema": (
        {"decision_dispatcher_ready_timeout_s": 4},
        "decision_dispatcher_ready_timeout_s",
    ),
    "ready_timeout_above_schema": (
        {"decision_dispatcher_ready_timeout_s": 601},
        "decision_dispatcher_ready_timeout_s",
    ),
    "ready_timeout_schema_min": ({"decision_dispatcher_ready_timeout_s": 5}, None),
    "watchdog_too_low": (
        {"decision_dispatcher_watchdog_seconds": 1},
        "decision_dispatcher_watchdog_seconds",
    ),
    "handoff_unrouted": (
        {
            "decision_dispatcher_handoff_check": True,
            "decision_dispatcher_handoff_decision_type": "x",
        },
        "is not a key of decision_dispatcher_routes",
    ),
    # Issue 11: paths follow schemas/common.schema.json safe_path. The role judges root,
    # records, script and archive itself (absent runs never run check-config); check-config
    # judges the other paths of the rendered config.
    "root_with_space": (
        {"decision_dispatcher_root": "/opt/hy ops"},
        "decision_dispatcher_root: '/opt/hy ops' must be",
    ),
    "records_with_dollar": (
        {"decision_dispatcher_records_dir": "/srv/$x/records"},
        "decision_dispatcher_records_dir: '/srv/$x/records' must be",
    ),
    "approvals_with_percent": ({"decision_dispatcher_approvals_dir": "/srv/50%"}, DAEMON),
    "metrics_with_space": ({"decision_dispatcher_metrics_textfile": "/srv/a b.prom"}, DAEMON),
    "script_with_quote": (
        {"decision_dispatcher_script_path": "/usr/local/lib/it's/dispatcher.py"},
        "decision_dispatcher_script_path: '/usr/local/lib/it's/dispatcher.py' must be",
    ),
    "absent_root_with_space": (
        {
            "decision_dispatcher_state": "absent",
            "decision_dispatcher_archive_dir": "/tmp/a",
            "decision_dispatcher_root": "/opt/hy ops",
        },
        "decision_dispatcher_root: '/opt/hy ops' must be",
    ),
    # Issue 16: installed alert rules link to the RUNBOOK by an absolute URL.
    "rules_without_base": (
        {"decision_dispatcher_alert_rules_file": "/etc/prometheus/rules/dd.rules.yml"},
        "decision_dispatcher_runbook_base_url: '' must be the absolute http(s) URL",
    ),
    "rules_with_relative_base": (
        {
            "decision_dispatcher_alert_rules_file": "/etc/prometheus/rules/dd.rules.yml",
            "decision_dispatcher_runbook_base_url": "docs/RUNBOOK.md",
        },
        "decision_dispatcher_runbook_base_url: 'docs/RUNBOOK.md' must be",
    ),
    "rules_with_base": (
        {
            "decision_dispatcher_alert_rules_file": "/etc/prometheus/rules/dd.rules.yml",
            "decision_dispatcher_runbook_base_url": "https://wiki.ops.test/dd/RUNBOOK.md",
        },
        None,
    ),
    "rules_file_with_space": (
        {
            "decision_dispatcher_alert_rules_file": "/etc/prom rules/dd.yml",
            "decision_dispatcher_runbook_base_url": "https://wiki.ops.test/dd/RUNBOOK.md",
        },
        "decision_dispatcher_alert_rules_file: '/etc/prom rules/dd.yml' must be",
    ),
    "absent_archive_with_quote": (
        {"decision_dispatcher_state": "absent", "decision_dispatcher_archive_dir": "/tmp/a'b"},
        "decision_dispatcher_archive_dir: '/tmp/a'b' must be",
    ),
    "absent_without_archive": (
        {"decision_dispatcher_state": "absent"},
        "decision_dispatcher_archive_dir is empty",
    ),
}


def ansible_env() -> dict[str, str]:
    return {**os.environ, "ANSIBLE_ROLES_PATH": str(REPO / "roles"), "ANSIBLE_NOCOLOR": "1"}


def ansible_playbook(playbook: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), *args, str(playbook)],
        capture_output=True,
        text=True,
        env=ansible_env(),
        check=False,
        timeout=300,
    )


def case_vars(overrides: dict[str, Any]) -> dict[str, Any]:
    return {"decision_dispatcher_routes": {"cutover": GOOD_ROUTE}, **overrides}


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
                        "vars": case_vars(overrides),
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
    done = ansible_playbook(playbook)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_preflight(outcomes: dict[str, str], case: str, tmp_path: Path) -> None:
    overrides, expected = CASES[case]
    if expected is None:
        assert outcomes[case] == "passed"
        return
    assert outcomes[case] != "passed", f"{case} was accepted"
    if expected == DAEMON:
        rc, message = check_config_verdict(tmp_path / "config.json", **case_vars(overrides))
        assert rc == 3, f"{case}: check-config itself accepts it ({message})"
        expected = message
    assert expected in outcomes[case]
    assert "\n" not in outcomes[case].strip(), "the refusal is one line"


def host_task_headers() -> set[str]:
    """The output header of every task that changes the host (install, configure, service)."""
    names: set[str] = set()
    for part in ("install", "configure", "service"):
        pending = yaml.safe_load((ROLE / "tasks" / f"{part}.yml").read_text(encoding="utf-8"))
        while pending:
            task = pending.pop()
            names.add(task["name"])
            pending += task.get("block", []) + task.get("rescue", []) + task.get("always", [])
    return {f"TASK [decision_dispatcher : {name}]" for name in names}


def test_a_value_only_the_daemon_refuses_stops_the_role_before_the_host_changes(
    tmp_path: Path,
) -> None:
    """The whole role in check mode (nothing on this machine changes, even where the
    refusal is missing): preflight must fail before any install task would run."""
    overrides = {
        "decision_dispatcher_routes": {"cutover": GOOD_ROUTE},
        "decision_dispatcher_heartbeat_seconds": 1,
        "decision_dispatcher_log_max_bytes": 2048,
        "decision_dispatcher_root": str(tmp_path / "root"),
        "decision_dispatcher_records_dir": str(tmp_path / "records"),
        "decision_dispatcher_script_path": str(tmp_path / "lib" / "dispatcher.py"),
        "decision_dispatcher_unit_name": "hyops-preflight-test",
        "decision_dispatcher_service_user": "hyops-preflight-test",
    }
    play = [
        {
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars": {"ansible_python_interpreter": sys.executable, **overrides},
            "roles": [{"role": "decision_dispatcher"}],
        }
    ]
    playbook = tmp_path / "role.yml"
    playbook.write_text(yaml.safe_dump(play, sort_keys=False), encoding="utf-8")
    done = ansible_playbook(playbook, "--check")
    output = done.stdout + done.stderr
    _, daemon_says = check_config_verdict(tmp_path / "config.json", **overrides)
    assert done.returncode != 0, "the role accepted heartbeat 1 / log_max_bytes 2048"
    headers = host_task_headers()
    assert [line for line in output.splitlines() if line.rstrip(" *") in headers] == []
    assert "changed:" not in output
    assert daemon_says in output
    assert not (tmp_path / "root").exists()
