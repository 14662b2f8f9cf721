"""The role in cluster mode on a real systemd host of the HA image (testhost/build-ha-image.sh).

No cluster runs yet (the bootstrap case of RUNBOOK "High availability"): the role installs
and configures, enables and starts nothing, asks the cluster and finds no active host, so
it probes nothing; the unit is `static`; nothing is created under the shared mount point
while nothing is mounted there; the config is local; a second converge changes nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .common import PREFIX, REPO, UNIT, cutover_route

pytestmark = pytest.mark.e2e

NODE = PREFIX + "node1"
ROUTES = {"cutover": cutover_route()}


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, check=check, timeout=180
    )


def on(node: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return podman("exec", node, *argv, check=False)


@pytest.fixture(scope="module")
def node() -> Iterator[str]:
    built = subprocess.run(
        ["bash", str(REPO / "testhost" / "build-ha-image.sh")],
        capture_output=True, text=True, check=True, timeout=900,
    )  # fmt: skip
    image = built.stdout.strip().splitlines()[-1]
    try:
        podman(
            "run", "--detach", "--replace", "--name", NODE, "--hostname", "node1",
            "--label", "owner=hyops-ha", "--runtime=runc", "--network=none",
            "--systemd=always", "--cap-add=SYS_ADMIN",
            "--ulimit", "nofile=8192:8192", "--ulimit", "nproc=8192:8192", image, "/sbin/init",
        )  # fmt: skip
        state = ""
        for _ in range(60):
            state = on(NODE, "systemctl", "is-system-running", "--wait").stdout.strip()
            if state in ("running", "degraded"):
                break
        assert state in ("running", "degraded"), state
        assert on(NODE, "mkdir", "-p", "/srv/hyops").returncode == 0  # a mount point, unmounted
        yield NODE
    finally:
        podman("rm", "-f", "--ignore", NODE, check=False)


def converge(tmp_path: Path, node: str, active: str = "") -> subprocess.CompletedProcess[str]:
    inventory = tmp_path / "inventory.json"
    inventory.write_text(
        json.dumps(
            {
                "ha_nodes": {
                    "hosts": {"node1": {"ansible_host": node}},
                    "vars": {
                        "ansible_connection": "containers.podman.podman",
                        "decision_dispatcher_service_managed_by": "cluster",
                        "decision_dispatcher_shared_mount": "/srv/hyops",
                        "decision_dispatcher_root": "/srv/hyops/decision-dispatcher",
                        "decision_dispatcher_records_dir": "/srv/hyops/decision-service/records",
                        "decision_dispatcher_approvals_dir": "/srv/hyops/consumer/approvals",
                        "decision_dispatcher_routes": ROUTES,
                        "decision_dispatcher_cluster_active_host": active,
                    },
                }
            }
        )
    )
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(REPO / "roles"), ANSIBLE_NOCOLOR="1")
    env["ANSIBLE_CALLBACK_RESULT_FORMAT"] = "yaml"
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(REPO / ".venv" / "collections"))
    playbook = str(Path(sys.executable).parent / "ansible-playbook")  # the venv's, unactivated
    return subprocess.run(
        [playbook, "-i", str(inventory), str(Path(__file__).parent / "converge.yml")],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip


def recap_changed(output: str) -> int:
    line = next(x for x in output.splitlines() if x.startswith("node1") and "changed=" in x)
    return int(line.split("changed=")[1].split()[0])


def test_cluster_mode_installs_without_starting_and_converges_twice(
    node: str, tmp_path: Path
) -> None:
    first = converge(tmp_path, node)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert recap_changed(first.stdout) > 0
    assert on(node, "systemctl", "is-enabled", UNIT).stdout.strip() == "static"
    assert on(node, "systemctl", "is-active", UNIT).stdout.strip() == "inactive"
    # the unmounted shared mount point stays empty; the config is local
    assert on(node, "ls", "-A", "/srv/hyops").stdout.strip() == ""
    config = on(node, "cat", f"/etc/{UNIT}/config.json")
    assert config.returncode == 0 and json.loads(config.stdout)["root"].startswith("/srv/hyops/")
    unit = on(node, "cat", f"/etc/systemd/system/{UNIT}.service").stdout
    lines = unit.splitlines()
    assert "AssertPathIsMountPoint=/srv/hyops" in lines and "[Install]" not in lines
    second = converge(tmp_path, node)
    assert second.returncode == 0, second.stdout[-4000:]
    assert recap_changed(second.stdout) == 0, second.stdout[-4000:]


def test_mounted_the_folders_appear_and_the_probe_runs_only_on_the_active_host(
    node: str, tmp_path: Path
) -> None:
    # the shared filesystem arrives (a tmpfs stands in for the cluster's Filesystem resource)
    assert on(node, "mount", "-t", "tmpfs", "tmpfs", "/srv/hyops").returncode == 0
    mounted = converge(tmp_path, node)
    assert mounted.returncode == 0, mounted.stdout[-4000:]
    assert on(node, "test", "-d", "/srv/hyops/decision-dispatcher/state/requests").returncode == 0
    assert on(node, "systemctl", "is-active", UNIT).stdout.strip() == "inactive"
    # the cluster starts the unit here; told so, the role probes it and changes nothing
    assert on(node, "systemctl", "start", UNIT).returncode == 0
    active = converge(tmp_path, node, active="node1")
    assert active.returncode == 0, active.stdout[-4000:]
    assert "Wait until the daemon reports itself healthy" in active.stdout
    assert recap_changed(active.stdout) == 0, active.stdout[-4000:]
    status = json.loads(
        on(
            node,
            "python3",
            "/usr/local/lib/hyops-decision-dispatcher/dispatcher.py",
            "--config",
            f"/etc/{UNIT}/config.json",
            "status",
            "--json",
        ).stdout
    )
    assert status["healthy"] is True and status["host"] == "node1"
