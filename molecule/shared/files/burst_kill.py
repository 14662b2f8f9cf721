"""Test-host helper: a burst of decision records with a SIGKILL of the daemon in the middle.

Writes COUNT records the way the decision service does (temp file + rename, no fsync).
Once half are written and the daemon has emitted at least one request of the burst (so it
is busy with the burst), it runs `systemctl kill -s KILL UNIT`, writes the rest, waits
for systemd to restart the unit (Restart=on-failure) and reports what it saw as JSON.
The verify step then counts requests: every record exactly once. Python 3.9+, stdlib only.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime


def main_pid(unit: str) -> int:
    out = subprocess.run(
        ["systemctl", "show", "--property", "MainPID", "--value", unit],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip() or 0)


def burst_requests(requests_dir: str, prefix: str) -> int:
    count = 0
    for name in os.listdir(requests_dir):
        if name.endswith(".json"):
            try:
                with open(os.path.join(requests_dir, name), encoding="utf-8") as handle:
                    if str(json.load(handle).get("source_decision_id", "")).startswith(prefix):
                        count += 1
            except (OSError, ValueError):
                pass
    return count


def write_record(records_dir: str, decision_id: str, decision_type: str) -> None:
    record = {
        "decision_id": decision_id,
        "decision_type": decision_type,
        "timestamp_utc": datetime.now(UTC).isoformat(),
        "status": "emitted",
        "rationale": "molecule burst with SIGKILL",
    }
    tmp = os.path.join(records_dir, f".{decision_id}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(record, handle)
    os.rename(tmp, os.path.join(records_dir, f"{decision_id}.json"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("records_dir")
    parser.add_argument("requests_dir")
    parser.add_argument("unit")
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--prefix", default="burst-")
    args = parser.parse_args()

    pid_before = main_pid(args.unit)
    seen: dict = {"count": args.count, "prefix": args.prefix, "pid_before": pid_before}
    for i in range(args.count):
        write_record(args.records_dir, f"{args.prefix}{i:05d}", ("cutover", "failback")[i % 2])
        if i == args.count // 2:
            deadline = time.monotonic() + 10
            while burst_requests(args.requests_dir, args.prefix) == 0:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.005)
            seen["requests_at_kill"] = burst_requests(args.requests_dir, args.prefix)
            subprocess.run(["systemctl", "kill", "--signal", "KILL", args.unit], check=True)
            seen["written_at_kill"] = i + 1
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        active = subprocess.run(["systemctl", "is-active", "--quiet", args.unit], check=False)
        pid = main_pid(args.unit)
        if active.returncode == 0 and pid not in (0, pid_before):
            break
        time.sleep(0.2)
    seen["pid_after"] = main_pid(args.unit)
    print(json.dumps(seen, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
