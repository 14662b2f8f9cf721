"""Two control-host containers of the HA image as a Pacemaker/Corosync cluster.

An internal podman network joins them (no way out), a podman volume mounted at SHARED on
both stands in for DRBD + Filesystem (always mounted, so the units' AssertPathIsMountPoint
holds on both), and each node's fence folder is a host directory the `Fencer` watches.
Everything is named with the caller's prefix and removed by `destroy()`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from . import chain_stubs, fencing

NODES = ("node1", "node2")
DISPATCHER = "hyops-decision-dispatcher"
GROUP = "hyops-chain"
RESOURCES = (chain_stubs.DECISION_UNIT, DISPATCHER, chain_stubs.CONSUMER_UNIT)
# The primitives are named after their units; the dispatcher's is the role's default
# decision_dispatcher_cluster_resource.
PRIMITIVES = {unit: unit for unit in RESOURCES}
TOKEN_MS = 1500  # totem token: a lost node is noticed in ~token + consensus (1.2 x token)
FENCE_DELAY = "2s"  # pcmk_delay_base on node1's device: in a link cut node1 shoots first


def podman(*args: str, check: bool = True, timeout: int = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, check=check, timeout=timeout
    )


def corosync_conf(ips: dict[str, str]) -> str:
    nodes = "".join(
        f"  node {{\n    ring0_addr: {ips[n]}\n    name: {n}\n    nodeid: {i}\n  }}\n"
        for i, n in enumerate(NODES, 1)
    )
    return f"""totem {{
  version: 2
  cluster_name: hyops-ha-test
  transport: knet
  token: {TOKEN_MS}
  crypto_cipher: none
  crypto_hash: none
}}
nodelist {{
{nodes}}}
quorum {{
  provider: corosync_votequorum
  two_node: 1
}}
logging {{
  to_syslog: yes
  to_stderr: no
  timestamp: on
}}
"""


def cib() -> str:
    """The cluster configuration in crm shell syntax: two fence devices, one group."""
    ops = (
        "op monitor interval=5s timeout=20s"
        " op start interval=0 timeout=90s op stop interval=0 timeout=60s"
    )
    lines = [
        "property stonith-enabled=true no-quorum-policy=stop stonith-timeout=150s"
        " cluster-recheck-interval=1min",
        "rsc_defaults resource-stickiness=100 migration-threshold=3",
    ]
    for node in NODES:
        delay = f" pcmk_delay_base={FENCE_DELAY}" if node == "node1" else ""
        lines += [
            f"primitive fence-{node} stonith:fence_hyops_podman params pcmk_host_list={node}"
            f"{delay} op monitor interval=60s",
            f"location fence-{node}-elsewhere fence-{node} -inf: {node}",
        ]
    lines += [f"primitive {PRIMITIVES[u]} systemd:{u} {ops}" for u in RESOURCES]
    lines.append(f"group {GROUP} " + " ".join(PRIMITIVES[u] for u in RESOURCES))
    return "\n".join(lines) + "\n"


class Cluster:
    def __init__(self, prefix: str, image: str, workdir: Path) -> None:
        self.prefix = prefix
        self.image = image
        self.workdir = workdir
        self.network = prefix + "net"
        self.volume = prefix + "shared"
        self.container = {n: prefix + "cl-" + n for n in NODES}
        self.fence_dirs = {n: workdir / f"fence-{n}" for n in NODES}
        self.ips: dict[str, str] = {}

    # -- podman -------------------------------------------------------------------------
    def on(self, node: str, *argv: str, timeout: int = 60) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.container[node], *argv, check=False, timeout=timeout)

    def sh(self, node: str, script: str, timeout: int = 60) -> subprocess.CompletedProcess[str]:
        return self.on(node, "sh", "-c", script, timeout=timeout)

    def state(self, container: str) -> str:
        got = podman("inspect", "--format", "{{.State.Status}}", container, check=False)
        return got.stdout.strip() or "gone"

    def kill(self, container: str) -> None:
        podman("kill", container)

    def write(self, node: str, path: str, text: str, mode: str = "0644") -> None:
        put = subprocess.run(
            ["podman", "exec", "-i", self.container[node], "sh", "-c",
             f"mkdir -p {os.path.dirname(path)} && cat > {path} && chmod {mode} {path}"],
            input=text, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert put.returncode == 0, put.stderr

    # -- life cycle ---------------------------------------------------------------------
    def create(self) -> None:
        podman("network", "create", "--internal", self.network)
        subnet = json.loads(podman("network", "inspect", self.network).stdout)[0]["subnets"][0]
        net = ipaddress.ip_network(subnet["subnet"])
        self.ips = {n: str(net.network_address + 11 + i) for i, n in enumerate(NODES)}
        podman("volume", "create", self.volume)
        hosts = [arg for n in NODES for arg in ("--add-host", f"{n}:{self.ips[n]}")]
        for node in NODES:
            self.fence_dirs[node].mkdir(parents=True, exist_ok=True)
            podman(
                "run", "--detach", "--replace", "--name", self.container[node],
                "--hostname", node, "--label", "owner=hyops-ha", "--runtime=runc",
                "--network", self.network, "--ip", self.ips[node], *hosts,
                "--systemd=always", "--cap-add=SYS_ADMIN", "--cap-add=IPC_LOCK",
                "--ulimit", "nofile=8192:8192", "--ulimit", "nproc=8192:8192",
                "--volume", f"{self.volume}:{chain_stubs.SHARED}",
                "--volume", f"{self.fence_dirs[node]}:{fencing.FENCE_DIR}",
                self.image, "/sbin/init",
            )  # fmt: skip
        for node in NODES:
            self.wait_booted(node)
            self.write(node, fencing.AGENT_PATH, fencing.AGENT, "0755")
            for path, text in chain_stubs.FILES.items():
                self.write(node, path, text)
            self.write(node, "/etc/corosync/corosync.conf", corosync_conf(self.ips))
            got = self.sh(node, "systemctl daemon-reload && systemctl enable -q corosync pacemaker")
            assert got.returncode == 0, got.stderr

    def destroy(self) -> None:
        for node in NODES:
            podman("rm", "--force", "--ignore", "--time", "0", self.container[node], check=False)
        podman("volume", "rm", "--force", self.volume, check=False)
        podman("network", "rm", "--force", self.network, check=False)

    def wait_booted(self, node: str) -> None:
        state = ""
        for _ in range(60):
            state = self.on(node, "systemctl", "is-system-running", "--wait").stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.5)
        raise AssertionError(f"{node} did not boot: {state}")

    def start_cluster(self) -> None:
        for node in NODES:
            got = self.on(node, "systemctl", "start", "corosync", "pacemaker")
            assert got.returncode == 0, got.stderr
        self.wait(lambda s: set(s["online"]) == set(NODES), 120, "both nodes online")

    def configure(self) -> None:
        self.write("node1", "/root/cib.crm", cib())
        got = self.on("node1", "crm", "configure", "load", "update", "/root/cib.crm")
        assert got.returncode == 0, got.stdout + got.stderr

    def restart(self, node: str) -> None:
        """Boot a killed node again (a fenced host's reboot); it rejoins by itself."""
        container = self.container[node]
        if self.state(container) == "paused":
            podman("kill", container)
        nets = podman("inspect", "--format", "{{json .NetworkSettings.Networks}}", container)
        if self.network not in (json.loads(nets.stdout or "null") or {}):  # null: cut off
            podman("network", "connect", "--ip", self.ips[node], self.network, container)
        podman("start", container)
        self.wait_booted(node)
        self.wait(lambda s: set(s["online"]) == set(NODES), 120, f"{node} back online")

    # -- what the cluster says ----------------------------------------------------------
    def status(self, via: str | None = None) -> dict[str, object]:
        """crm_mon of one running node: online nodes, where each primitive is active."""
        for node in [via] if via else list(NODES):
            if self.state(self.container[node]) != "running":
                continue
            got = self.on(node, "crm_mon", "-1", "--output-as=xml", timeout=30)
            if got.returncode != 0:
                continue
            root = ET.fromstring(got.stdout)
            online = [
                n.get("name") for n in root.iter("node")
                if n.get("online") == "true" and n.get("standby") != "true" and n.get("name")
            ]  # fmt: skip
            active: dict[str, list[str]] = {}
            for res in root.iter("resource"):
                if res.get("active") == "true" and res.get("failed") != "true":
                    active[res.get("id", "")] = [x.get("name", "") for x in res.iter("node")]
            return {"online": online, "active": active, "via": node}
        return {"online": [], "active": {}, "via": None}

    def wait(self, ok, seconds: float, what: str, via: str | None = None) -> dict[str, object]:
        deadline = time.monotonic() + seconds
        status: dict[str, object] = {}
        while time.monotonic() < deadline:
            status = self.status(via)
            if ok(status):
                return status
            time.sleep(0.5)
        raise AssertionError(f"waited {seconds} s for {what}: {status}")

    def chain_on(self) -> str | None:
        """The one node the whole group runs on, or None."""
        status = self.status()
        active = status["active"]
        places = {tuple(active.get(PRIMITIVES[u], [])) for u in RESOURCES}
        if len(places) == 1:
            (place,) = places
            if len(place) == 1:
                return place[0]
        return None

    def unit_state(self, node: str, unit: str) -> tuple[str, str]:
        enabled = self.on(node, "systemctl", "is-enabled", unit).stdout.strip()
        active = self.on(node, "systemctl", "is-active", unit).stdout.strip()
        return enabled, active
