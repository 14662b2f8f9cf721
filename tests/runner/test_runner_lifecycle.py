"""The runner driving real ansible-playbook runs of the fixture module (local connection).

Apply, idempotent re-apply, failure with kept outputs, destroy, publish filtering,
preflight failures recorded in the state, lock contention and the progress lines.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from runner_helpers import FIXTURE_REF, MODULE_ROOT, FixtureEnv, hangup_listener, hyops


def test_apply_writes_state_workdir_and_evidence(fixture_env: FixtureEnv) -> None:
    run = fixture_env.run("apply")
    assert run.returncode == 0, run.stderr
    doc = fixture_env.state()
    assert doc["status"] == "ok"
    # Only keys in outputs.publish reach the state; the playbook wrote two more.
    assert doc["outputs"] == {"cap.test.fixture": "ready", "fixture.status": "ready"}
    assert doc["output_count"] == 2
    assert list(doc) == sorted(doc)
    rid = doc["run_id"]
    work = fixture_env.root / "work" / "test__runner-fixture" / rid
    evidence = fixture_env.root / "logs" / "module" / "test__runner-fixture" / rid
    assert doc["evidence_dir"] == str(evidence)
    assert {p.name for p in work.iterdir()} == {
        "inventory.yml",
        "hyops.inputs.yml",
        "hyops.outputs.json",
    }
    extra = (work / "hyops.inputs.yml").read_text()
    for var in ("hyops_outputs_file", "hyops_run_id", "hyops_runtime_root", "hyops_module_ref"):
        assert f"\n{var}: " in extra
    assert "hyops_lifecycle_command: !unsafe 'apply'" in extra
    assert {"resolved.inputs.yml", "ansible.log", "result.json", "hyops_run.json"} <= {
        p.name for p in evidence.iterdir()
    }
    assert "TASK [Write the marker file]" in (evidence / "ansible.log").read_text()
    report = json.loads((evidence / "hyops_run.json").read_text())
    assert report["status"] == "ok" and report["outputs_written"]["fixture.not_published"] == "leak"
    rerun = yaml.safe_load(Path(doc["rerun_inputs_file"]).read_text())
    assert rerun["fixture_marker_dir"] == str(fixture_env.marker_dir)
    for path in [fixture_env.state_file, work / "inventory.yml", evidence / "result.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # live progress: one line per task and host
    assert "  changed     ctl              Write the marker file" in run.stdout
    assert f"hyops: apply ok: {fixture_env.state_file}" in run.stdout


def test_reapply_is_idempotent_and_destroy_clears_outputs(fixture_env: FixtureEnv) -> None:
    assert fixture_env.run("apply").returncode == 0
    first = fixture_env.state()
    again = fixture_env.run("apply")
    assert again.returncode == 0
    assert "  ok          ctl              Write the marker file" in again.stdout
    second = fixture_env.state()
    assert second["run_id"] != first["run_id"]
    assert second["outputs"] == first["outputs"]
    gone = fixture_env.run("destroy")
    assert gone.returncode == 0, gone.stderr
    doc = fixture_env.state()
    assert doc["status"] == "destroyed" and doc["outputs"] == {} and doc["output_count"] == 0
    assert doc["run_id"].startswith("destroy-")
    assert "rerun_inputs_file" not in doc and "resolved_inputs_file" not in doc
    assert not (fixture_env.marker_dir / "marker").exists()


def test_failed_apply_keeps_previous_outputs(fixture_env: FixtureEnv) -> None:
    assert fixture_env.run("apply").returncode == 0
    good = fixture_env.state()
    fixture_env.write_inputs(fixture_fail=True)
    run = fixture_env.run("apply")
    assert run.returncode == 1
    doc = fixture_env.state()
    assert doc["status"] == "error" and doc["failed_command"] == "apply"
    assert doc["outputs"] == good["outputs"]
    evidence = Path(doc["evidence_dir"])
    assert doc["last_error"] == f"ansible apply failed (open: {evidence / 'ansible.log'})"
    err = run.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hyops: apply failed: task 'Fail when asked to'")
    assert err[0].endswith(f"ansible apply failed (open: {evidence / 'ansible.log'})")
    # latest.inputs.yml holds the inputs of the failed run (HybridOps); the last good
    # inputs are kept next to it for rollback
    rerun = Path(good["rerun_inputs_file"])
    assert yaml.safe_load(rerun.read_text())["fixture_fail"] is True
    good_file = rerun.with_name("latest.last-good.inputs.yml")
    assert yaml.safe_load(good_file.read_text())["fixture_fail"] is False


def test_missing_published_output_is_an_error(fixture_env: FixtureEnv) -> None:
    fixture_env.write_inputs(fixture_skip_output="cap.test.fixture")
    run = fixture_env.run("apply")
    assert run.returncode == 1
    doc = fixture_env.state()
    assert doc["status"] == "error"
    assert "did not write published output(s) cap.test.fixture" in doc["last_error"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        return s.getsockname()[1]


def test_unreachable_host_fails_in_preflight_without_state(fixture_env: FixtureEnv) -> None:
    port = _closed_port()
    fixture_env.write_inputs(
        inventory_groups={"edge_control": [{"name": "far", "host": "127.0.0.2"}]},
        target_port=port,
    )
    run = fixture_env.run("apply")
    assert run.returncode == 1
    assert not fixture_env.state_file.exists()  # HybridOps: a failing preflight writes no state
    assert f"preflight: tcp far: 127.0.0.2:{port}: Connection refused" in run.stderr
    pre = fixture_env.run("preflight", "--json")
    assert pre.returncode == 1
    checks = {c["name"]: c["status"] for c in json.loads(pre.stdout)["checks"]}
    assert checks["tcp far"] == "fail" and checks["inputs"] == "ok" and checks["tool ssh"] == "ok"


def test_required_env_is_checked(fixture_env: FixtureEnv) -> None:
    fixture_env.write_inputs(required_env=["HYOPS_TEST_NEEDED"])
    failed = fixture_env.run("apply")
    assert failed.returncode == 1 and not fixture_env.state_file.exists()
    assert "required env: unset: HYOPS_TEST_NEEDED" in failed.stderr
    ok = fixture_env.run("apply", env={"HYOPS_TEST_NEEDED": "1"})
    assert ok.returncode == 0, ok.stderr


def test_concurrent_apply_fails_fast(fixture_env: FixtureEnv) -> None:
    fixture_env.write_inputs(fixture_sleep_s=4)
    args = [sys.executable, "-m", "hyops_runner.cli", "apply", "--root", str(fixture_env.root)]
    args += [
        "--module",
        FIXTURE_REF,
        "--module-root",
        str(MODULE_ROOT),
        "--inputs",
        str(fixture_env.inputs_file),
    ]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        # wait until the first run holds the lock and has written "running"
        while not (fixture_env.state_file.exists() and fixture_env.state()["status"] == "running"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        t0 = time.monotonic()
        second = fixture_env.run("apply")
        elapsed = time.monotonic() - t0
        assert second.returncode == 1
        assert "another hyops run holds .latest.lock" in second.stderr
        assert elapsed < 3
        assert fixture_env.state()["status"] == "running"  # the loser did not touch the state
        runs = list((fixture_env.root / "logs" / "module" / "test__runner-fixture").iterdir())
        assert len(runs) == 1  # and left no evidence folder of its own
    finally:
        _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert fixture_env.state()["status"] == "ok"
    # an instance slot has its own lock and state file
    inst = fixture_env.run("apply", "--state-instance", "blue")
    assert inst.returncode == 0
    assert (fixture_env.state_file.parent / "instances" / "blue.json").is_file()


def test_show_and_usage_errors(fixture_env: FixtureEnv) -> None:
    missing = fixture_env.run("show")
    assert missing.returncode == 1 and "not applied yet" in missing.stderr
    assert fixture_env.run("apply").returncode == 0
    shown = fixture_env.run("show", "--json")
    assert json.loads(shown.stdout) == fixture_env.state()
    human = fixture_env.run("show")
    assert "status     ok" in human.stdout and "fixture.status = ready" in human.stdout
    unknown = hyops(["apply", "--root", str(fixture_env.root), "--module", "no/such-module"])
    assert unknown.returncode == 2 and "module 'no/such-module' not found" in unknown.stderr
    assert hyops(["apply", "--module", FIXTURE_REF, "--env", "../x"]).returncode == 2
    assert hyops(["frobnicate"]).returncode == 2


def test_apply_json_prints_the_state(fixture_env: FixtureEnv) -> None:
    run = fixture_env.run("apply", "--json")
    assert run.returncode == 0
    assert json.loads(run.stdout) == fixture_env.state()
    assert "Write the marker file" in run.stderr


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie has ended; it only waits to be reaped)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat_line.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("helper", ["plain", "stubborn"])
def test_sigterm_stops_the_playbooks_whole_process_group(
    fixture_env: FixtureEnv, helper: str
) -> None:
    # A helper process of the run (backgrounded by a task; "stubborn" ignores SIGTERM)
    # must be gone when the runner returns: the runner stops ansible-playbook's whole
    # group and waits for it. Nothing here waits on a clock but the generous deadlines.
    fixture_env.write_inputs(fixture_sleep_s=300, fixture_helper=helper)
    pid_file = fixture_env.marker_dir / "helper.pid"
    args = [sys.executable, "-m", "hyops_runner.cli", "apply", "--root", str(fixture_env.root)]
    args += ["--module", FIXTURE_REF, "--module-root", str(MODULE_ROOT)]
    args += ["--inputs", str(fixture_env.inputs_file)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid = 0
    try:
        deadline = time.monotonic() + 120
        events = None
        while events is None or "Hold the run open" not in events.read_text():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
            if fixture_env.state_file.exists():
                events = Path(fixture_env.state()["evidence_dir"]) / "ansible.events.jsonl"
                events = events if events.exists() else None
        pid = int(pid_file.read_text())
        assert _alive(pid)
        # ansible-playbook runs in its own session: a terminal's Ctrl-C reaches hyops only
        assert os.getsid(pid) != os.getsid(proc.pid)
        proc.terminate()
        _, err = proc.communicate(timeout=120)
        assert not _alive(pid), "a process of the run outlived the runner"
        assert proc.returncode == 1
        assert "apply interrupted" in err
        doc = fixture_env.state()
        assert doc["status"] == "error" and "cancelled after apply started" in doc["last_error"]
    finally:
        if pid and _alive(pid):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_timeout_stops_a_hung_playbook(fixture_env: FixtureEnv) -> None:
    fixture_env.write_inputs(fixture_sleep_s=60)
    t0 = time.monotonic()
    run = fixture_env.run("apply", "--timeout", "3")
    assert time.monotonic() - t0 < 20
    assert run.returncode == 1
    assert "exceeded --timeout 3 s" in fixture_env.state()["last_error"]


def test_open_port_that_is_not_ssh_fails_the_ssh_probe(fixture_env: FixtureEnv) -> None:
    with hangup_listener("127.0.0.2") as port:
        fixture_env.write_inputs(
            inventory_groups={"edge_control": [{"name": "far", "host": "127.0.0.2"}]},
            target_port=port,
        )
        pre = fixture_env.run("preflight", "--json")
    report = json.loads(pre.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert pre.returncode == 1 and report["ok"] is False
    assert checks["tcp far"]["status"] == "ok"
    assert checks["ssh far"]["status"] == "fail" and checks["ssh far"]["detail"]


def test_unwritable_state_folder_is_a_one_line_failure(fixture_env: FixtureEnv) -> None:
    assert fixture_env.run("apply").returncode == 0
    state_dir = fixture_env.state_file.parent
    # Replace the state file by a folder: the rename onto it fails like a broken disk.
    fixture_env.state_file.unlink()
    fixture_env.state_file.mkdir()
    try:
        run = fixture_env.run("apply")
    finally:
        fixture_env.state_file.rmdir()
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hyops: "), run.stderr
    assert lines[0] == f"hyops: cannot write state file {fixture_env.state_file}: Is a directory"
    assert state_dir.is_dir()
