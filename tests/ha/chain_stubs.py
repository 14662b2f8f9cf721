"""The two ends of the chain around the real dispatcher, as the cluster runs them.

Each is a tiny python3 program and a static unit (no [Install]: only the cluster starts
it), installed by the test into both control-host containers. Their state lives on the
shared volume (the stand-in for DRBD), so it moves with the group.

- decision service: reads burst orders `<SHARED>/decision-service/bursts/<round>.json`
  (`{"round", "count", "per_second"}`) and writes one record per event,
  `<round>-<k>.json`, with a decision id minted on this host (uuid4), temp + fsync +
  rename + folder fsync. The record file name is the event: a survivor resumes the burst
  where the record files end. A finished order is renamed to `.finished`.
- consumer: acts on every `queued` request whose `<dispatch_id>.done` marker is not on
  the shared volume yet. It creates the marker with O_EXCL, fsyncs it and the folder, then
  "acts" (appends a line to `executions.log`). An EEXIST means another consumer marked it
  between our listing and our open: a double execution, appended to `doubles.log`.
"""

from __future__ import annotations

SHARED = "/srv/hyops"
RECORDS = f"{SHARED}/decision-service/records"
BURSTS = f"{SHARED}/decision-service/bursts"
REQUESTS = f"{SHARED}/decision-dispatcher/state/requests"
CONSUMER = f"{SHARED}/consumer"
DECISION_UNIT = "hyops-stub-decision-service"
CONSUMER_UNIT = "hyops-stub-consumer"

DECISION_SERVICE = f'''#!/usr/bin/python3
"""Stub decision service (tests/ha): records with per-host uuid4 decision ids, on demand."""
import datetime, json, os, socket, time, uuid

RECORDS, BURSTS = "{RECORDS}", "{BURSTS}"
HOST = socket.gethostname()


def put(folder, name, doc):
    tmp = os.path.join(folder, "." + name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, os.path.join(folder, name))
    fd = os.open(folder, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


os.makedirs(RECORDS, exist_ok=True)
os.makedirs(BURSTS, exist_ok=True)
while True:
    for order in sorted(n for n in os.listdir(BURSTS) if n.endswith(".json")):
        burst = json.load(open(os.path.join(BURSTS, order)))
        for k in range(burst["count"]):
            event = "%s-%04d" % (burst["round"], k)
            if os.path.exists(os.path.join(RECORDS, event + ".json")):
                continue
            now = datetime.datetime.now(datetime.timezone.utc)
            put(RECORDS, event + ".json", {{
                "decision_id": "decision-%s-cutover-%s"
                % (now.strftime("%Y%m%dT%H%M%SZ"), uuid.uuid4().hex),
                "decision_type": "cutover",
                "timestamp_utc": now.isoformat(),
                "status": "emitted",
                "rationale": "burst " + event,
                "checks": [{{"event": event, "host": HOST}}],
            }})
            time.sleep(1.0 / burst["per_second"])
        os.rename(os.path.join(BURSTS, order), os.path.join(BURSTS, order + ".finished"))
    time.sleep(0.2)
'''

CONSUMER_SERVICE = f'''#!/usr/bin/python3
"""Stub decision consumer (tests/ha): O_EXCL done marker before acting; EEXIST = double."""
import errno, json, os, socket, time

REQUESTS, STATE = "{REQUESTS}", "{CONSUMER}"
DONE = os.path.join(STATE, "done")
HOST = socket.gethostname()


def fsync_dir(folder):
    fd = os.open(folder, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def append(name, line):
    fd = os.open(os.path.join(STATE, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, (line + "\\n").encode())
    os.fsync(fd)
    os.close(fd)


os.makedirs(DONE, exist_ok=True)
while True:
    done = set(n[:-5] for n in os.listdir(DONE) if n.endswith(".done"))
    try:
        names = sorted(os.listdir(REQUESTS))
    except FileNotFoundError:
        names = []
    for name in names:
        dispatch_id = name[:-5]
        if name.startswith(".") or not name.endswith(".json") or dispatch_id in done:
            continue
        try:
            request = json.load(open(os.path.join(REQUESTS, name)))
        except (OSError, ValueError):
            continue
        if request.get("status") != "queued":
            continue
        event = request["checks"][0]["event"]
        try:
            marker = os.path.join(DONE, dispatch_id + ".done")
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
            append("doubles.log", "%s %s %s" % (dispatch_id, event, HOST))
            continue
        note = {{"dispatch_id": dispatch_id, "event": event, "host": HOST}}
        os.write(fd, json.dumps(note).encode())
        os.fsync(fd)
        os.close(fd)
        fsync_dir(DONE)
        append("executions.log", "%s %s %s" % (dispatch_id, event, HOST))
    time.sleep(0.1)
'''


def unit(description: str, program: str) -> str:
    return f"""[Unit]
Description={description} (tests/ha stub)
AssertPathIsMountPoint={SHARED}

[Service]
Type=simple
ExecStart=/usr/bin/python3 {program}
Restart=on-failure
RestartSec=1
"""


FILES = {
    "/usr/local/lib/hyops-stub/decision_service.py": DECISION_SERVICE,
    "/usr/local/lib/hyops-stub/consumer.py": CONSUMER_SERVICE,
    f"/etc/systemd/system/{DECISION_UNIT}.service": unit(
        "Stub decision service", "/usr/local/lib/hyops-stub/decision_service.py"
    ),
    f"/etc/systemd/system/{CONSUMER_UNIT}.service": unit(
        "Stub decision consumer", "/usr/local/lib/hyops-stub/consumer.py"
    ),
}
