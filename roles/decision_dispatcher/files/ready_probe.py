"""Readiness probe the role runs on the host (passed with `python3 -c`, nothing installed).

Ready means: the unit is active (for Type=notify: the daemon sent READY=1) and state.json
carries a timestamp_utc younger than the freshness window and status `running` (the daemon
says `degraded` while it cannot use the records folder, e.g. cannot read it). Prints one
JSON object with what it saw, so a failure message can show it; exit 0 = ready, 1 = not.
Runs on the host's Python (3.9+), standard library only.
"""

import json
import subprocess
import sys
import time
from datetime import datetime

STATE_KEYS = (
    "timestamp_utc",
    "status",
    "execution_mode",
    "last_dispatch_id",
    "last_decision_id",
    "processed_count",
)


def probe(unit: str, state_file: str, window_s: float) -> dict:
    seen: dict = {"unit": unit, "window_s": window_s}
    active = subprocess.run(
        ["systemctl", "is-active", unit], capture_output=True, text=True, check=False
    )
    seen["active_state"] = active.stdout.strip()
    try:
        with open(state_file, encoding="utf-8") as handle:
            state = json.load(handle)
        stamp = datetime.fromisoformat(str(state["timestamp_utc"]).replace("Z", "+00:00"))
        if stamp.tzinfo is None:
            raise ValueError("timestamp_utc has no UTC offset")
        seen["age_s"] = round(time.time() - stamp.timestamp(), 3)
        seen["state"] = {key: state.get(key) for key in STATE_KEYS}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        seen["error"] = f"{state_file}: {exc}"
    seen["ready"] = (
        seen["active_state"] == "active"
        and "age_s" in seen
        and seen["age_s"] <= window_s
        and seen["state"].get("status") == "running"
    )
    return seen


if __name__ == "__main__":
    result = probe(sys.argv[1], sys.argv[2], float(sys.argv[3]))
    print(json.dumps(result, sort_keys=True))
    sys.exit(0 if result["ready"] else 1)
