"""Test-host helper: list the dispatch requests whose source_decision_id starts with a prefix.

Reads the requests folder directly (the file contract the consumer relies on), not the
daemon's CLI. With --expect N it waits up to --wait seconds for N distinct decisions.
Prints one JSON object: files, distinct decisions, duplicates, malformed files, requests.
Runs on the test host's Python (3.9+), standard library only.
"""

import argparse
import json
import os
import sys
import time


def scan(requests_dir: str, prefix: str) -> dict:
    found: list = []
    malformed: list = []
    for name in sorted(os.listdir(requests_dir)):
        if not name.endswith(".json"):
            continue
        path = os.path.join(requests_dir, name)
        try:
            with open(path, encoding="utf-8") as handle:
                request = json.load(handle)
        except (OSError, ValueError) as exc:
            malformed.append(f"{name}: {exc}")
            continue
        if not isinstance(request, dict) or request.get("dispatch_id") != name[: -len(".json")]:
            malformed.append(f"{name}: dispatch_id does not match the file name")
            continue
        if str(request.get("source_decision_id", "")).startswith(prefix):
            found.append(request)
    ids = [request["source_decision_id"] for request in found]
    return {
        "files": len(found),
        "distinct": len(set(ids)),
        "duplicates": sorted({i for i in ids if ids.count(i) > 1}),
        "malformed": malformed,
        "requests": found,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("requests_dir")
    parser.add_argument("prefix")
    parser.add_argument("--expect", type=int, default=-1)
    parser.add_argument("--wait", type=float, default=0.0)
    parser.add_argument("--brief", action="store_true", help="leave the request bodies out")
    args = parser.parse_args()
    deadline = time.monotonic() + args.wait
    while True:
        result = scan(args.requests_dir, args.prefix)
        if result["distinct"] >= args.expect or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    if args.brief:
        result["requests"] = [r["dispatch_id"] for r in result["requests"]]
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
