"""Issue 18, the runner's write protocol observed from outside: `hyops apply` of the fixture
module (a real ansible-playbook run) under `strace -f`; every file the runner puts in place
under the runtime root (the state `latest.json`, the evidence, the rerun files, the work
files) must show RUNNER.md's "temp file, fsync, rename, fsync of the folder", in that order,
each time it is written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from runner_helpers import FIXTURE_ID, FixtureEnv
from syscall_trace import durable_writes, needs_strace, parse_trace, renames_onto, strace_argv

pytestmark = [pytest.mark.slow, needs_strace]

EVIDENCE = {
    "meta.json",
    "preflight_decision.json",
    "preflight_result.json",
    "inputs_resolved.json",
    "resolved.inputs.yml",
    "driver_result.json",
    "result.json",
    "module_state.json",
    "hyops_run.json",
}


def test_apply_writes_state_and_evidence_durably_in_order(
    fixture_env: FixtureEnv, tmp_path: Path
) -> None:
    trace = tmp_path / "hyops.strace"
    run = fixture_env.run("apply", wrapper=strace_argv(str(trace)))
    assert run.returncode == 0, run.stderr
    calls = parse_trace(trace.read_text(errors="replace"))
    state = fixture_env.state()
    evidence = Path(state["evidence_dir"])
    state_writes = durable_writes(calls, str(fixture_env.state_file))
    assert len(state_writes) == 2  # running, then ok
    assert state_writes[-1].size == fixture_env.state_file.stat().st_size
    runner_pid = calls[state_writes[0].renamed].pid
    root = str(fixture_env.root) + os.sep
    # Every file the runner renamed into place under the root, each time.
    targets = {
        c.paths[-1]
        for c in calls
        if c.pid == runner_pid and c.name.startswith("rename") and c.ok
        if c.paths and c.paths[-1].startswith(root)
    }
    assert {str(evidence / name) for name in EVIDENCE} <= targets
    config = fixture_env.root / "config" / "modules" / FIXTURE_ID
    assert str(config / "latest.inputs.yml") in targets
    for target in sorted(targets):
        for write in durable_writes(calls, target):
            assert write.size > 0
        assert len(renames_onto(calls, target)) >= 1
