"""Bursts and their outcome, read from the shared volume on the host side.

For a round of N events: lost = events without a consumer's done marker, duplicates =
events or decisions with more than one request, doubles = the consumer's EEXIST lines
(another consumer marked the same request first).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path


class Outcome:
    def __init__(self, shared: Path) -> None:
        self.shared = shared  # the volume's folder on the host
        self.records = shared / "decision-service" / "records"
        self.bursts = shared / "decision-service" / "bursts"
        self.requests = shared / "decision-dispatcher" / "state" / "requests"
        self.consumer = shared / "consumer"
        self.log = shared / "decision-dispatcher" / "logs" / "dispatcher.log"

    def order(self, name: str, count: int, per_second: int) -> None:
        self.bursts.mkdir(parents=True, exist_ok=True)
        tmp = self.bursts / f".{name}.tmp"
        tmp.write_text(json.dumps({"round": name, "count": count, "per_second": per_second}))
        tmp.rename(self.bursts / f"{name}.json")

    def records_of(self, name: str) -> int:
        return len(list(self.records.glob(f"{name}-*.json")))

    def wait_records(self, name: str, at_least: int, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while self.records_of(name) < at_least:
            assert time.monotonic() < deadline, f"{name}: {self.records_of(name)} records"
            time.sleep(0.05)

    def _done_events(self, name: str) -> Counter[str]:
        events: Counter[str] = Counter()
        for marker in (self.consumer / "done").glob("*.done"):
            try:
                event = json.loads(marker.read_text())["event"]
            except (OSError, ValueError, KeyError):
                continue  # a marker cut by a kill between create and write: still done
            if event.startswith(name + "-"):
                events[event] += 1
        return events

    def wait_done(self, name: str, count: int, seconds: float = 90) -> None:
        deadline = time.monotonic() + seconds
        while len(self._done_events(name)) < count:
            if time.monotonic() > deadline:
                return  # count() reports what is missing
            time.sleep(0.2)

    def count(self, name: str, count: int) -> dict[str, int]:
        by_event: Counter[str] = Counter()
        by_decision: Counter[str] = Counter()
        for path in self.requests.glob("*.json"):
            request = json.loads(path.read_text())
            event = request["checks"][0]["event"]
            if event.startswith(name + "-"):
                by_event[event] += 1
                by_decision[request["source_decision_id"]] += 1
        done = self._done_events(name)
        doubles_log = self.consumer / "doubles.log"
        doubles = doubles_log.read_text().splitlines() if doubles_log.exists() else []
        executions = Counter(
            line.split()[1]
            for line in (self.consumer / "executions.log").read_text().splitlines()
            if line.split()[1].startswith(name + "-")
        )
        expected = {f"{name}-{k:04d}" for k in range(count)}
        return {
            "records": self.records_of(name),
            "requests": sum(by_event.values()),
            "lost": len(expected - set(done)),
            "duplicate_requests": sum(n - 1 for n in by_event.values() if n > 1)
            + sum(n - 1 for n in by_decision.values() if n > 1),
            "double_executions": len([d for d in doubles if f" {name}-" in d])
            + sum(n - 1 for n in executions.values() if n > 1),
        }

    def log_events(self) -> list[dict[str, object]]:
        lines = []
        for path in sorted(self.log.parent.glob("dispatcher.log*"), reverse=True):
            for line in path.read_text().splitlines():
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    continue
        return lines
