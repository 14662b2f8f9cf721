"""A test-only fence device: the agent asks the test to `podman kill` a node.

`fence_hyops_podman` (installed in /usr/sbin of every node, where Pacemaker's fencer looks
for RHCS-style agents) turns a reboot/off into a request file in its node's fence folder,
a host directory bind-mounted at FENCE_DIR, and waits for the answer file. `Fencer` is the
power switch: a thread of the test that watches every node's folder, kills the target
container and answers `ok`. Like a real out-of-band device it needs no cluster network
(a link cut does not stop it), and it obeys only a requester that is still running (the
loser of a fencing race is dead before its delayed request is carried out).
`hold = True` makes the device not answer (a fence device that is gone): the request
stays open and the cluster waits.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

FENCE_DIR = "/var/lib/hyops-fence"
AGENT_PATH = "/usr/sbin/fence_hyops_podman"

AGENT = f'''#!/usr/bin/python3
"""Test-only fence agent (tests/ha/fencing.py): asks the test to podman-kill the target."""
import os, sys, time, uuid

METADATA = """<?xml version="1.0" ?>
<resource-agent name="fence_hyops_podman" shortdesc="test-only: the test podman-kills the node">
<longdesc>Writes a request file the test carries out; never use outside tests/ha.</longdesc>
<parameters>
 <parameter name="port" unique="0" required="0"><getopt mixed="-n, --plug=[id]"/>
  <content type="string"/><shortdesc lang="en">node to fence</shortdesc></parameter>
 <parameter name="action" unique="0" required="0"><getopt mixed="-o, --action=[action]"/>
  <content type="string" default="reboot"/><shortdesc lang="en">action</shortdesc></parameter>
</parameters>
<actions><action name="on"/><action name="off"/><action name="reboot"/>
<action name="status"/><action name="list"/><action name="monitor"/>
<action name="metadata"/><action name="validate-all"/></actions>
</resource-agent>
"""

opts = {{}}
if not sys.stdin.isatty():
    for line in sys.stdin.read().splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            opts[key.strip()] = value.strip()
args = sys.argv[1:]
for i, arg in enumerate(args):
    if arg in ("-o", "--action") and i + 1 < len(args):
        opts["action"] = args[i + 1]
    elif arg.startswith("--action="):
        opts["action"] = arg.split("=", 1)[1]
action = opts.get("action", "reboot")
target = opts.get("port") or opts.get("plug") or opts.get("nodename", "")
if action == "metadata":
    print(METADATA)
    sys.exit(0)
if action in ("monitor", "status", "list", "validate-all", "on"):
    sys.exit(0)
if action not in ("off", "reboot"):
    sys.exit(1)
name = "%d-%s-%s" % (time.time_ns(), target, uuid.uuid4().hex[:8])
tmp = os.path.join("{FENCE_DIR}", "." + name)
with open(tmp, "w") as f:
    f.write(target + " " + action + "\\n")
os.rename(tmp, os.path.join("{FENCE_DIR}", name + ".req"))
answer = os.path.join("{FENCE_DIR}", name + ".answer")
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    if os.path.exists(answer):
        sys.exit(0 if open(answer).read().strip() == "ok" else 1)
    time.sleep(0.1)
sys.exit(1)
'''


class Fencer(threading.Thread):
    """Carries out the fence requests of every node: kill the target, answer ok."""

    def __init__(
        self,
        folders: dict[str, Path],
        container: dict[str, str],
        state: Callable[[str], str],
        kill: Callable[[str], None],
    ) -> None:
        super().__init__(daemon=True, name="hyops-fencer")
        self.folders = folders  # node name -> host folder of its agent's requests
        self.container = container  # node name -> container name
        self.state = state  # container name -> podman's State.Status
        self.kill = kill
        self.hold = False
        self.events: list[dict[str, object]] = []  # every request seen, with its fate
        self._halt = threading.Event()
        self._seen: set[Path] = set()

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout=10)

    def requests_for(self, target: str) -> list[dict[str, object]]:
        return [e for e in list(self.events) if e["target"] == target]

    def run(self) -> None:
        while not self._halt.is_set():
            for requester, folder in self.folders.items():
                for req in sorted(folder.glob("*.req")):
                    if req not in self._seen:
                        try:
                            self._carry_out(requester, req)
                        except Exception as exc:  # kept in events for the test to see
                            self.events.append({"requester": requester, "target": "?",
                                                "fate": f"error: {exc!r}"})  # fmt: skip
                            self._seen.add(req)
            time.sleep(0.1)

    def _carry_out(self, requester: str, req: Path) -> None:
        target = req.read_text().split()[0]
        event: dict[str, object] = {"requester": requester, "target": target, "at": time.time()}
        if self.hold:
            if not any(e["target"] == target and e["fate"] == "held" for e in self.events):
                self.events.append({**event, "fate": "held"})
            return  # not seen: carried out when hold is lifted, if still asked
        self._seen.add(req)
        answer = req.with_suffix(".answer")
        if self.state(self.container[requester]) != "running":
            event["fate"] = "requester-dead"
            answer.write_text("refused\n")
        elif target not in self.container or target == requester:
            event["fate"] = "refused"
            answer.write_text("refused\n")
        elif self.state(self.container[target]) not in ("running", "paused"):
            event["fate"] = "already-off"  # a power switch turns an off node off: done
            answer.write_text("ok\n")
        else:
            try:
                self.kill(self.container[target])
                event["fate"] = "killed"
            except subprocess.CalledProcessError as exc:
                event["fate"] = f"kill failed: {exc.stderr}"
            event["done"] = time.time()
            answer.write_text("ok\n" if event["fate"] == "killed" else "failed\n")
        self.events.append(event)
