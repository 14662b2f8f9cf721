"""The state and evidence on every failure path, as HybridOps' own ``hyops`` leaves them
(docs/RUNNER.md): exact ``latest.json`` keys and evidence file names."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import yaml
from runner_helpers import FIXTURE_ID, FixtureEnv

OK_KEYS = {
    "dependencies", "evidence_dir", "execution", "module_ref", "output_count", "outputs",
    "requirements", "rerun_inputs_file", "resolved_inputs_file", "run_id", "status",
    "updated_at",
}  # fmt: skip
# error = the running document (previous + this run) with active_command swapped for
# last_error and failed_command.
ERROR_KEYS = OK_KEYS | {"last_error", "failed_command"}
START_EVIDENCE = {"meta.json", "preflight_decision.json", "inputs_resolved.json", "hyops_run.json"}
PREFLIGHT_FAIL_EVIDENCE = START_EVIDENCE | {"preflight_result.json", "driver_result.json"}
PLAYBOOK_EVIDENCE = {
    "ansible.log", "ansible.events.jsonl", "driver_result.json", "result.json",
    "preflight_result.json",
}  # fmt: skip


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def evidence_names(env: FixtureEnv) -> dict[str, set[str]]:
    top = env.root / "logs" / "module" / FIXTURE_ID
    return {p.name: {f.name for f in p.iterdir()} for p in sorted(top.iterdir())}


def test_preflight_failure_on_top_of_ok_writes_no_state(fixture_env: FixtureEnv) -> None:
    assert fixture_env.run("apply").returncode == 0
    before = fixture_env.state_file.read_bytes()
    rerun_before = Path(fixture_env.state()["rerun_inputs_file"]).read_bytes()
    port = closed_port()
    # 127.0.0.1 is probed like any host (only 0.0.0.0 is skipped), over TCP then SSH.
    fixture_env.write_inputs(
        inventory_groups={
            "edge_control": [{"name": "lo", "host": "127.0.0.1"}, {"name": "p", "host": "0.0.0.0"}]
        },
        target_port=port,
    )
    run = fixture_env.run("apply")
    assert run.returncode == 1
    assert fixture_env.state_file.read_bytes() == before  # still ok, same run id
    assert Path(fixture_env.state()["rerun_inputs_file"]).read_bytes() == rerun_before
    line = run.stderr.strip()
    assert "\n" not in line and f"tcp lo: 127.0.0.1:{port}: Connection refused" in line
    runs = evidence_names(fixture_env)
    failed = [name for name in runs if name != fixture_env.state()["run_id"]]
    assert len(failed) == 1
    assert runs[failed[0]] == PREFLIGHT_FAIL_EVIDENCE
    evidence = fixture_env.root / "logs" / "module" / FIXTURE_ID / failed[0]
    result = json.loads((evidence / "preflight_result.json").read_text())
    assert result["status"] == "error" and result["command"] == "preflight"
    assert set(result) == {
        "command", "driver", "error", "normalized_outputs", "run_id", "status", "warnings",
    }  # fmt: skip
    assert json.loads((evidence / "driver_result.json").read_text()) == result
    decision = json.loads((evidence / "preflight_decision.json").read_text())
    assert decision["status"] == "failed" and decision["guarantee"] == "not-established"
    assert decision["detail"] == result["error"]
    # placeholder 0.0.0.0 was not probed; 127.0.0.1 was
    report = json.loads((evidence / "hyops_run.json").read_text())
    assert [c["name"] for c in report["preflight"]] == ["required env", "tcp lo", "connect p"]


def test_playbook_failure_keeps_previous_keys_and_adds_the_error(fixture_env: FixtureEnv) -> None:
    assert fixture_env.run("apply").returncode == 0
    good = fixture_env.state()
    fixture_env.write_inputs(fixture_fail=True)
    run = fixture_env.run("apply")
    assert run.returncode == 1
    doc = fixture_env.state()
    assert set(doc) == ERROR_KEYS
    evidence = Path(doc["evidence_dir"])
    assert doc["status"] == "error" and doc["failed_command"] == "apply"
    assert doc["last_error"] == f"ansible apply failed (open: {evidence}/ansible.log)"
    assert doc["outputs"] == good["outputs"] and doc["output_count"] == 2
    assert doc["run_id"] != good["run_id"] and doc["run_id"].startswith("apply-")
    assert doc["resolved_inputs_file"] == str(evidence / "resolved.inputs.yml")
    assert {p.name for p in evidence.iterdir()} == (
        START_EVIDENCE | PLAYBOOK_EVIDENCE | {"resolved.inputs.yml", "module_state.json"}
        | {f"ansible_apply.{s}" for s in ("stdout.txt", "stderr.txt", "result.json")}
    )  # fmt: skip
    log = (evidence / "ansible.log").read_text()
    assert (
        "\n[hyops] ansible_apply start argv=[" in log and "[hyops] ansible_apply end rc=2\n" in log
    )
    assert "fixture asked to fail" in log
    envelope = json.loads((evidence / "ansible_apply.result.json").read_text())
    assert set(envelope) == {"argv", "cwd", "rc", "duration_ms"} and envelope["rc"] == 2
    driver = json.loads((evidence / "driver_result.json").read_text())
    assert driver["status"] == "error" and driver["error"] == doc["last_error"]
    module_state = json.loads((evidence / "module_state.json").read_text())
    assert module_state["status"] == "error" and module_state["path"] == str(fixture_env.state_file)
    # latest.inputs.yml: the inputs of this (failed) run, HybridOps' meaning
    assert yaml.safe_load(Path(doc["rerun_inputs_file"]).read_text())["fixture_fail"] is True


def test_destroy_failure_writes_no_state(fixture_env: FixtureEnv) -> None:
    assert fixture_env.run("apply").returncode == 0
    before = fixture_env.state_file.read_bytes()
    fixture_env.write_inputs(fixture_fail=True)
    run = fixture_env.run("destroy")
    assert run.returncode == 1
    assert fixture_env.state_file.read_bytes() == before
    assert run.stderr.startswith("hyops: destroy failed: task 'Fail when asked to' failed on ctl")
    runs = evidence_names(fixture_env)
    destroy = [name for name in runs if name.startswith("destroy-")]
    assert len(destroy) == 1
    assert runs[destroy[0]] == START_EVIDENCE | PLAYBOOK_EVIDENCE | {
        f"ansible_destroy.{s}" for s in ("stdout.txt", "stderr.txt", "result.json")
    }
    assert (fixture_env.marker_dir / "marker").exists()


def test_success_evidence_and_become_go_only_through_the_inventory(
    fixture_env: FixtureEnv,
) -> None:
    fixture_env.write_inputs(become=False, become_user="root")
    assert fixture_env.run("apply").returncode == 0
    doc = fixture_env.state()
    assert set(doc) == OK_KEYS
    evidence = Path(doc["evidence_dir"])
    names = {p.name for p in evidence.iterdir()}
    assert names == (
        START_EVIDENCE | PLAYBOOK_EVIDENCE | {"resolved.inputs.yml", "module_state.json"}
        | {f"ansible_apply.{s}" for s in ("stdout.txt", "stderr.txt", "result.json")}
    )  # fmt: skip
    meta = json.loads((evidence / "meta.json").read_text())
    for key in ("command", "driver", "profile", "pack_id", "pack_stack", "playbook", "workdir",
                "inventory", "inputs_file", "outputs_file"):  # fmt: skip
        assert key in meta, key
    work = Path(meta["workdir"])
    extra = yaml.safe_load((work / "hyops.inputs.yml").read_text().replace("!unsafe ", ""))
    assert "become" not in extra and "become_user" not in extra
    inventory = (work / "inventory.yml").read_text()
    assert "ansible_become: false" in inventory and "ansible_become_user" not in inventory
    module_state = json.loads((evidence / "module_state.json").read_text())
    assert module_state["published_outputs"] == ["cap.test.fixture", "fixture.status"]
    driver = json.loads((evidence / "driver_result.json").read_text())
    assert driver["status"] == "ok" and "error" not in driver
    assert json.loads((evidence / "result.json").read_text()) == driver
