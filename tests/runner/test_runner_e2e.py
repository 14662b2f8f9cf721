"""End to end: the real module through ``hyops`` against a real systemd host.

A podman container booted from the project's test-host image (testhost/build-image.sh)
stands in for the control host, reached with ``ansible_connection:
containers.podman.podman`` given as a host key in ``inventory_groups``. Apply, re-apply,
a failing apply and destroy; every state document is checked against
schemas/module-state.schema.json. Run with ``make e2e`` (part of ``make test``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runner_helpers import hyops

from hyops_runner import schemas

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
REF = "platform/network/decision-dispatcher"
MODULE_ID = "platform__network__decision-dispatcher"
DEMO_INPUTS = REPO / "examples" / "inputs.demo.yml"
READY = {
    "cap.control.decision_dispatcher": "ready",
    "decision_dispatcher.execution_mode": "record-only",
    "decision_dispatcher.status": "ready",
}
# Unique per checkout so parallel clones on one machine never share a container.
CONTAINER = "hyops-e2e-" + hashlib.sha256(str(REPO).encode()).hexdigest()[:8]


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, check=check, timeout=120
    )


@pytest.fixture(scope="module")
def control_host() -> Iterator[str]:
    built = subprocess.run(
        ["bash", str(REPO / "testhost" / "build-image.sh")],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    image = built.stdout.strip().splitlines()[-1]
    podman(
        "run", "--detach", "--replace", "--name", CONTAINER, "--hostname", "e2e-control",
        "--label", "owner=hyops-e2e", "--runtime=runc", "--network=none", "--systemd=always",
        "--cap-add=SYS_ADMIN", "--ulimit", "nofile=8192:8192", "--ulimit", "nproc=8192:8192",
        image, "/sbin/init",
    )  # fmt: skip
    try:
        state = ""
        for _ in range(60):
            state = podman(
                "exec", CONTAINER, "systemctl", "is-system-running", "--wait", check=False
            ).stdout.strip()
            if state in ("running", "degraded"):
                break
        assert state in ("running", "degraded"), state
        yield CONTAINER
    finally:
        podman("rm", "-f", "--ignore", CONTAINER, check=False)


def host_json(container: str) -> str:
    entry = {
        "name": "e2e-control",
        "host": container,
        "ansible_connection": "containers.podman.podman",
    }
    return json.dumps({"inventory_groups": {"edge_control": [entry]}})


def run(command: str, home: Path, container: str) -> Any:
    # The module root HybridOps users pass (README "With HybridOps.Core"); also the default.
    args = [command, "--env", "e2e", "--module", REF, "--inputs", str(DEMO_INPUTS)]
    args += ["--module-root", str(REPO / "modules")]
    env = {"HOME": str(home), "HYOPS_INPUTS_JSON": host_json(container)}
    return hyops(args, env=env, timeout=300)


def runbook(
    home: Path, container: str, *steps: str, inputs_json: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run docs/RUNBOOK.md steps verbatim, as an operator's shell would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYOPS_")}
    if inputs_json:
        env["HYOPS_INPUTS_JSON"] = inputs_json
    env.update(
        HOME=str(home),
        ENV="e2e",
        INPUTS=str(DEMO_INPUTS),
        ON_HOST=f"podman exec {container}",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
    )
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "runbook-steps.sh"), *steps],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def state(home: Path) -> dict[str, Any]:
    root = home / ".hybridops" / "envs" / "e2e"
    doc = json.loads((root / "state" / "modules" / MODULE_ID / "latest.json").read_text())
    assert schemas.violations("module-state", doc) == [], doc
    return doc


def main_pid(container: str) -> str:
    return podman(
        "exec", container, "systemctl", "show", "-P", "MainPID", "hyops-decision-dispatcher"
    ).stdout.strip()


def changed_tasks(evidence: Path) -> list[str]:
    events = [
        json.loads(line) for line in (evidence / "ansible.events.jsonl").read_text().splitlines()
    ]
    return [
        e["task"] for e in events if e.get("event") == "result" and e.get("status") == "changed"
    ]


def test_apply_reapply_failure_destroy(control_host: str, tmp_path: Path) -> None:
    root = tmp_path / "home"  # --env e2e resolves to <HOME>/.hybridops/envs/e2e

    # preflight with connectivity_check on probes the container with podman exec
    pre = hyops(
        ["preflight", "--env", "e2e", "--module", REF, "--inputs", str(DEMO_INPUTS), "--json"],
        env={
            "HOME": str(root),
            "HYOPS_INPUTS_JSON": host_json(control_host),
            "HYOPS_INPUT_CONNECTIVITY_CHECK": "true",
        },
    )
    assert pre.returncode == 0, pre.stdout + pre.stderr
    probes = {c["name"]: c["status"] for c in json.loads(pre.stdout)["checks"]}
    assert probes["connect e2e-control"] == "ok" and probes["tool podman"] == "ok"

    first = run("apply", root, control_host)
    assert first.returncode == 0, first.stdout + first.stderr
    ok = state(root)
    assert ok["status"] == "ok" and ok["output_count"] == 5
    assert {k: ok["outputs"][k] for k in READY} == READY
    assert ok["outputs"]["decision_dispatcher.last_tick"]
    assert "  changed " in first.stdout  # live progress, one line per task and host
    pid = main_pid(control_host)
    assert pid not in ("", "0")

    # The runbook's verification, then its rollback: re-apply the rerun inputs file alone
    # (no HYOPS_INPUTS_JSON), which must reach the same host and change nothing.
    again = runbook(root, control_host, "context", "verify", "handoff", "rollback")
    assert again.returncode == 0, again.stdout + again.stderr
    assert '"ok"' in again.stdout
    second = state(root)
    assert second["status"] == "ok" and second["run_id"] != ok["run_id"]
    assert changed_tasks(Path(second["evidence_dir"])) == []  # idempotent
    assert main_pid(control_host) == pid  # not restarted

    broken = run("apply", root, control_host + "-missing")
    assert broken.returncode == 1
    err = state(root)
    assert err["status"] == "error" and err["failed_command"] == "apply"
    assert err["last_error"] == f"ansible apply failed (open: {err['evidence_dir']}/ansible.log)"
    assert err["outputs"] == second["outputs"]  # previous outputs kept
    assert broken.stderr.count("\n") == 1 and broken.stderr.startswith("hyops: apply failed: ")
    assert "e2e-control" in broken.stderr  # the failing task and host, for the operator

    # The runbook's destroy step, verbatim (inputs file + the host from the environment).
    gone = runbook(root, control_host, "context", "destroy", inputs_json=host_json(control_host))
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert '"destroyed"' in gone.stdout
    final = state(root)
    assert final["status"] == "destroyed" and final["outputs"] == {} and final["output_count"] == 0
    archive = Path(final["evidence_dir"]) / "archive"
    assert [p for p in archive.rglob("*") if p.is_file()], f"no archive in {archive}"
    loose = [
        p for p in (root / ".hybridops").rglob("*")
        if not p.is_symlink() and (p.stat().st_mode & 0o777) != (0o700 if p.is_dir() else 0o600)
    ]  # fmt: skip
    assert loose == [], loose[:5]
    active = podman(
        "exec", control_host, "systemctl", "is-active", "hyops-decision-dispatcher", check=False
    )
    assert active.stdout.strip() != "active"
