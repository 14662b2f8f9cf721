"""The controller catches typos before a host sees them (issue 16, "The controller catches
typos"): each test drives ``python -m hyops_runner.cli`` and failed before the change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runner_helpers import FixtureEnv, hyops


def local_host(**extra: object) -> dict[str, object]:
    return {"edge_control": [{"name": "ctl", "host": "localhost", **extra}]}


@pytest.mark.parametrize(
    ("typo", "meant"),
    [("ansible_conection", "ansible_connection"), ("ansible_pyhton_interpreter",
     "ansible_python_interpreter"), ("ansible_becom_user", "ansible_become_user")],
)  # fmt: skip
def test_an_ansible_host_key_typo_says_did_you_mean(
    fixture_env: FixtureEnv, typo: str, meant: str
) -> None:
    fixture_env.write_inputs(inventory_groups=local_host(**{typo: "local"}))
    for command in ("validate", "preflight", "apply"):
        run = fixture_env.run(command)
        assert run.returncode == 1, run.stdout + run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1, run.stderr
        assert f"inputs.inventory_groups.edge_control[0].{typo}: " in lines[0]
        assert f"did you mean {meant}?" in lines[0]
    assert not fixture_env.root.exists()


def test_known_and_own_host_keys_still_pass(fixture_env: FixtureEnv) -> None:
    fixture_env.write_inputs(
        inventory_groups=local_host(ansible_connection="local", note="x", ansible_port=22)
    )
    assert fixture_env.run("validate").returncode == 0


def test_a_duplicate_key_is_refused_naming_its_line(fixture_env: FixtureEnv) -> None:
    text = fixture_env.inputs_file.read_text()
    fixture_env.inputs_file.write_text(text + "fixture_sleep_s: 0\nfixture_sleep_s: 1\n")
    dup_line = len(text.splitlines()) + 2
    for command in ("validate", "apply"):
        run = fixture_env.run(command)
        assert run.returncode == 1, run.stdout + run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1, run.stderr
        assert f"({fixture_env.inputs_file}): " in lines[0]
        assert f"line {dup_line}: key 'fixture_sleep_s' given twice" in lines[0], lines[0]
    # nested mappings too
    fixture_env.inputs_file.write_text(text + "fixture_extra:\n  a: 1\n  a: 2\n")
    run = fixture_env.run("validate")
    assert run.returncode == 1 and "key 'a' given twice" in run.stderr, run.stderr


@pytest.mark.parametrize("command", ["validate", "preflight", "apply"])
def test_json_prints_a_document_on_every_outcome(fixture_env: FixtureEnv, command: str) -> None:
    fixture_env.write_inputs(fixture_sleep_s="soon")  # invalid: not an integer
    run = fixture_env.run(command, "--json")
    assert run.returncode == 1
    doc = json.loads(run.stdout)
    assert doc["ok"] is False
    assert any("inputs.fixture_sleep_s" in p for p in doc["input_problems"]), doc
    assert doc["input_source"] == str(fixture_env.inputs_file)
    # a failure that is not about inputs: a bad --state-instance (usage, exit 2)
    run = fixture_env.run(command, "--json", "--state-instance", "../x")
    assert run.returncode == 2
    doc = json.loads(run.stdout)
    assert doc["ok"] is False and "state-instance" in doc["error"], doc


@pytest.mark.parametrize(
    ("name", "value"),
    [("HYOPS_INPUT_FIXTURE_SLEEP_S", '"soon"'), ("HYOPS_INPUTS_JSON", '{"fixture_sleep_s": "x"}')],
)
def test_an_invalid_environment_input_is_blamed_on_its_variable(
    fixture_env: FixtureEnv, name: str, value: str
) -> None:
    for command in ("validate", "preflight", "apply"):
        run = fixture_env.run(command, env={name: value})
        assert run.returncode == 1
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1, run.stderr
        assert lines[0].startswith(f"hyops: invalid inputs ({name}): inputs.fixture_sleep_s: ")
        assert str(fixture_env.inputs_file) not in lines[0]


REAL_INPUTS = """\
inventory_groups:
  edge_control:
    - {name: ctrl-01, host: 127.0.0.1}
connectivity_check: false
dispatcher_handoff_check: true
dispatcher_handoff_decision_type: HANDOFF
dispatcher_routes:
  cutover:
    target_kind: blueprint
    target_ref: dr/postgresql-ha-failover-gcp@v1
    target_env: dr
    execution_plane: runner-local
"""


def test_the_handoff_type_must_have_a_route(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs.yml"
    inputs.write_text(REAL_INPUTS.replace("HANDOFF", "cut_over"))
    base = ["--root", str(tmp_path / "runtime"), "--module", "platform/network/decision-dispatcher"]
    for command in ("validate", "preflight"):
        run = hyops([command, *base, "--inputs", str(inputs)])
        assert run.returncode == 1, run.stdout + run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1, run.stderr
        assert "inputs.dispatcher_handoff_decision_type: 'cut_over' has no route" in lines[0]
        assert "cutover" in lines[0]  # the routes there are
    inputs.write_text(REAL_INPUTS.replace("HANDOFF", "cutover"))
    assert hyops(["validate", *base, "--inputs", str(inputs)]).returncode == 0
    # no handoff check asked for: the type is not held to the routes
    inputs.write_text(
        REAL_INPUTS.replace("HANDOFF", "cut_over").replace("check: true", "check: false")
    )
    assert hyops(["validate", *base, "--inputs", str(inputs)]).returncode == 0
