"""Two control hosts, the chain as one Pacemaker group, failover with fencing (issue 19).

One cluster for the whole module (tests/ha/cluster.py): two containers of the HA image on
an internal podman network, a podman volume at /srv/hyops on both for DRBD, a test-only
fence agent whose requests a test thread carries out with `podman kill`
(tests/ha/fencing.py), the chain as three `systemd:` primitives in one group: a stub
decision service, the real dispatcher converged by the role in cluster mode, a stub
consumer (tests/ha/chain_stubs.py). The tests run in file order and share the cluster;
a node killed by a scenario is booted again (a fenced host's reboot) and rejoins.

Failover times are printed and, with HYOPS_HA_BENCH_OUT=<file>, appended there as JSON
lines (bench/README.md quotes the median of the 3 rounds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import chain_stubs
from .chain_outcome import Outcome
from .cluster import DISPATCHER, GROUP, NODES, RESOURCES, Cluster, podman
from .common import PREFIX, REPO, cutover_route
from .fencing import Fencer

pytestmark = pytest.mark.e2e

SCRIPT = "/usr/local/lib/hyops-decision-dispatcher/dispatcher.py"
CONFIG = f"/etc/{DISPATCHER}/config.json"
# queued: the consumer acts without an operator
ROUTES = {"cutover": cutover_route(requires_approval=False)}
FAILOVER_LIMIT_S = 15  # issue 19: the dispatcher active on the survivor within 15 s
BURST = 150  # events per round, 50 per second: the kill lands about 1 s into it


class Ha:
    def __init__(self, cluster: Cluster, fencer: Fencer, outcome: Outcome) -> None:
        self.cluster = cluster
        self.fencer = fencer
        self.outcome = outcome

    def active(self) -> str:
        node = self.cluster.chain_on()
        assert node is not None, self.cluster.status()
        return node

    def other(self, node: str) -> str:
        return next(n for n in NODES if n != node)

    def wait_unit_active(self, node: str, seconds: float) -> float:
        """Seconds until the dispatcher unit is active on node (AssertionError past limit)."""
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            got = self.cluster.on(node, "systemctl", "is-active", DISPATCHER)
            if got.stdout.strip() == "active":
                return time.monotonic() - start
            time.sleep(0.2)
        raise AssertionError(
            f"{DISPATCHER} not active on {node} within {seconds} s: "
            f"{self.cluster.status()} fencing: {self.fencer.events}"
        )

    def wait_chain_on(self, node: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while self.cluster.chain_on() != node:
            assert time.monotonic() < deadline, self.cluster.status()
            time.sleep(0.5)

    def assert_passive(self, node: str) -> None:
        for unit in RESOURCES:
            assert self.cluster.unit_state(node, unit) == ("static", "inactive"), (node, unit)

    def bench(self, **row: object) -> None:
        print(json.dumps(row))
        out = os.environ.get("HYOPS_HA_BENCH_OUT")
        if out:
            with open(out, "a") as f:
                f.write(json.dumps(row) + "\n")


def converge(cluster: Cluster, workdir: Path) -> subprocess.CompletedProcess[str]:
    inventory = workdir / "inventory.json"
    hosts = {n: {"ansible_host": cluster.container[n]} for n in NODES}
    inventory.write_text(
        json.dumps(
            {
                "ha_nodes": {
                    "hosts": hosts,
                    "vars": {
                        "ansible_connection": "containers.podman.podman",
                        "decision_dispatcher_service_managed_by": "cluster",
                        "decision_dispatcher_shared_mount": chain_stubs.SHARED,
                        "decision_dispatcher_root": f"{chain_stubs.SHARED}/decision-dispatcher",
                        "decision_dispatcher_records_dir": chain_stubs.RECORDS,
                        "decision_dispatcher_approvals_dir": f"{chain_stubs.CONSUMER}/approvals",
                        "decision_dispatcher_routes": ROUTES,
                    },
                }
            }
        )
    )
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(REPO / "roles"), ANSIBLE_NOCOLOR="1")
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(REPO / ".venv" / "collections"))
    env["ANSIBLE_PIPELINING"] = "True"  # no podman cp per task: the converge takes half as long
    playbook = str(Path(sys.executable).parent / "ansible-playbook")  # the venv's, unactivated
    return subprocess.run(
        [playbook, "-i", str(inventory), str(Path(__file__).parent / "converge.yml")],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ha]:
    built = subprocess.run(
        ["bash", str(REPO / "testhost" / "build-ha-image.sh")],
        capture_output=True, text=True, check=True, timeout=900,
    )  # fmt: skip
    image = built.stdout.strip().splitlines()[-1]
    workdir = tmp_path_factory.mktemp("ha-cluster")
    cluster = Cluster(PREFIX, image, workdir)
    fencer = Fencer(cluster.fence_dirs, cluster.container, cluster.state, cluster.kill)
    began = time.monotonic()
    try:
        cluster.create()
        shared = json.loads(podman("volume", "inspect", cluster.volume).stdout)[0]["Mountpoint"]
        created = time.monotonic()
        converged = converge(cluster, workdir)
        took = time.monotonic() - created
        print(f"ha: containers {created - began:.0f} s, converge {took:.0f} s")
        assert converged.returncode == 0, converged.stdout[-4000:] + converged.stderr[-2000:]
        fencer.start()
        cluster.start_cluster()
        cluster.configure()
        ha = Ha(cluster, fencer, Outcome(Path(shared)))
        cluster.wait(lambda _: cluster.chain_on() is not None, 120, "the group started")
        print(f"ha: cluster up after {time.monotonic() - began:.0f} s")
        yield ha
    finally:
        try:
            fencer.stop()
        finally:
            cluster.destroy()


@pytest.mark.parametrize("round_no", [1, 2, 3])
def test_a_kill_the_active_host_mid_burst(ha: Ha, round_no: int) -> None:
    active = ha.active()
    survivor = ha.other(active)
    name = f"kill{round_no}"
    ha.outcome.order(name, BURST, 50)
    ha.outcome.wait_records(name, 40)  # mid-burst
    killed_at = time.monotonic()
    podman("kill", ha.cluster.container[active])
    failover = ha.wait_unit_active(survivor, FAILOVER_LIMIT_S)
    seen = time.monotonic() - killed_at
    ha.wait_chain_on(survivor)
    ha.outcome.wait_done(name, BURST)
    counts = ha.outcome.count(name, BURST)
    ha.bench(scenario="kill-active", round=round_no, killed=active, failover_s=round(seen, 2),
             **counts)  # fmt: skip
    assert failover < FAILOVER_LIMIT_S
    assert counts["lost"] == 0 and counts["duplicate_requests"] == 0, counts
    assert counts["double_executions"] == 0, counts
    assert counts["requests"] == BURST, counts
    # the cluster fenced the dead host through the agent before it started the chain
    assert any(e["fate"] in ("killed", "already-off") for e in ha.fencer.requests_for(active))
    ha.cluster.restart(active)
    ha.assert_passive(active)


def test_b_graceful_move_is_a_clean_stop_and_start(ha: Ha) -> None:
    active = ha.active()
    other = ha.other(active)
    before = len(ha.outcome.log_events())
    got = ha.cluster.on(active, "crm", "resource", "move", GROUP, other)
    assert got.returncode == 0, got.stdout + got.stderr
    try:
        ha.wait_chain_on(other)
    finally:
        ha.cluster.on(active, "crm", "resource", "clear", GROUP)
    events = ha.outcome.log_events()[before:]
    kinds = [(e.get("event"), e.get("host")) for e in events]
    assert ("stopped", active) in kinds and ("started", other) in kinds, kinds
    assert kinds.index(("stopped", active)) < kinds.index(("started", other)), kinds
    adopted = [
        e for e in events if e.get("event") == "recovered" and "adopt" in str(e.get("reason"))
    ]
    assert adopted == [], adopted
    state = json.loads((ha.outcome.shared / "decision-dispatcher/state/state.json").read_text())
    assert state["host"] == other and state["status"] == "running", state
    ha.assert_passive(active)


def test_c_hung_host_is_fenced_and_until_then_the_survivor_is_refused(ha: Ha) -> None:
    active = ha.active()
    survivor = ha.other(active)
    ha.fencer.hold = True  # the fence device does not answer: no fencing yet
    try:
        podman("pause", ha.cluster.container[active])
        deadline = time.monotonic() + 60
        while not any(e["fate"] == "held" for e in ha.fencer.requests_for(active)):
            assert time.monotonic() < deadline, "the survivor never asked to fence the hung host"
            time.sleep(0.2)
        # unfenced, the cluster does not start the chain on the survivor ...
        assert ha.cluster.unit_state(survivor, DISPATCHER)[1] == "inactive"
        # ... and the dispatcher started there by hand refuses: the frozen host holds the lock
        refused = ha.cluster.on(
            survivor, "timeout", "30", "runuser", "-u", "hyops-dispatcher", "--",
            "/usr/bin/python3", SCRIPT, "--config", CONFIG, "run",
        )  # fmt: skip
        assert refused.returncode == 4, refused.stdout + refused.stderr
        assert "lock" in refused.stderr, refused.stderr
    finally:
        ha.fencer.hold = False
    released = time.monotonic()
    ha.wait_unit_active(survivor, 60)
    after_fence = round(time.monotonic() - released, 2)
    ha.bench(scenario="hung-host", fenced=active, failover_after_fence_s=after_fence)
    ha.wait_chain_on(survivor)
    assert ha.cluster.state(ha.cluster.container[active]) == "exited"
    assert any(e["fate"] == "killed" for e in ha.fencer.requests_for(active))
    ha.cluster.restart(active)


def test_d_link_cut_leaves_exactly_one_host_running_the_chain(ha: Ha) -> None:
    active = ha.active()
    kills = len([e for e in ha.fencer.events if e["fate"] == "killed"])
    podman("network", "disconnect", ha.cluster.network, ha.cluster.container[active])
    deadline = time.monotonic() + 90
    while True:
        running = [n for n in NODES if ha.cluster.state(ha.cluster.container[n]) == "running"]
        if len(running) == 1 and ha.cluster.chain_on() == running[0]:
            break
        assert time.monotonic() < deadline, (running, ha.cluster.status(), ha.fencer.events)
        time.sleep(0.5)
    (survivor,) = running
    (fenced,) = [n for n in NODES if n != survivor]
    new_kills = [e for e in ha.fencer.events if e["fate"] == "killed"][kills:]
    assert [(e["requester"], e["target"]) for e in new_kills] == [(survivor, fenced)]
    ha.bench(scenario="link-cut", cut=active, survivor=survivor)
    ha.cluster.restart(fenced)
    ha.rejoined = fenced  # type: ignore[attr-defined]


def test_e_a_rejoined_host_is_passive(ha: Ha) -> None:
    rejoined = getattr(ha, "rejoined", None) or ha.other(ha.active())
    assert ha.active() == ha.other(rejoined)  # stickiness: the group stays where it runs
    ha.assert_passive(rejoined)
    name = "rejoin"
    ha.outcome.order(name, 20, 50)
    ha.outcome.wait_done(name, 20)
    counts = ha.outcome.count(name, 20)
    assert counts["lost"] == 0 and counts["duplicate_requests"] == 0, counts
    assert counts["double_executions"] == 0, counts


def test_f_kill_9_of_the_dispatcher_alone_is_recovered_by_the_cluster(ha: Ha) -> None:
    """Pacemaker's drop-in for a systemd: resource sets Restart=no: not systemd but the
    cluster's monitor (every 5 s) finds the unit failed and restarts it in place, counting
    a failure (the group moves after migration-threshold=3 of them)."""
    active = ha.active()

    def show(prop: str, unit: str = DISPATCHER) -> str:
        got = ha.cluster.on(active, "systemctl", "show", "--value", "-p", prop, unit)
        return got.stdout.strip()

    def failcount() -> int:
        got = ha.cluster.on(
            active, "crm_failcount", "--query", "--resource", DISPATCHER, "--node", active
        )
        value = got.stdout.split("value=")[-1].strip()
        return int(value) if value.isdigit() else 0

    assert show("Restart") == "no"  # the unit says on-failure; the cluster's drop-in wins
    pid, restarts, fails = show("MainPID"), int(show("NRestarts")), failcount()
    consumer = show("MainPID", chain_stubs.CONSUMER_UNIT)
    killed_at = time.monotonic()
    assert ha.cluster.on(active, "kill", "-9", pid).returncode == 0
    deadline = time.monotonic() + 60
    while not (show("MainPID") not in ("0", pid) and show("ActiveState") == "active"):
        assert time.monotonic() < deadline, show("ActiveState")
        time.sleep(0.2)
    ha.bench(scenario="kill-9-dispatcher", recovered_s=round(time.monotonic() - killed_at, 2))
    assert int(show("NRestarts")) == restarts  # systemd restarted nothing
    assert failcount() == fails + 1  # the cluster's monitor saw the failure and recovered
    ha.wait_chain_on(active)  # in place: one failure is below migration-threshold
    # the group's members after it were restarted with it
    assert show("MainPID", chain_stubs.CONSUMER_UNIT) not in ("0", consumer)
    ha.cluster.on(active, "crm", "resource", "cleanup", GROUP)
