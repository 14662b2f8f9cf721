"""Counters, health and state.json: the one health rule (`judge_health`) and the report
the loop keeps.

Invariant: state.json stays small whatever the history and is rewritten only when
something changed or at a heartbeat.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from typing import Any, Callable, Dict, Optional

from .config import Config, is_int
from .decide import Decision
from .fsio import check_own_path, write_file_durably
from .ids import iso_ts, parse_iso_utc
from .index import FileIndex
from .jsonlog import JsonLog
from .jsontext import dump_json
from .ledger import Ledger
from .record import is_handoff
from .release import running
from .states import EXECUTION_MODE, OUTCOMES, SCHEMA_VERSION, VERSION
from .verdicts import Outcome

# state.json is rewritten at most this often while records keep arriving.
STATE_MIN_INTERVAL = 0.5


def judge_health(doc: dict, running: bool, heartbeat_seconds: float, now: float) -> dict:
    """THE freshness rule (`status --json` -> `healthy`; the role asks for it): a process
    holds the lock, state.json says `running`, and it was written within 2 x heartbeat
    + 5 s (the daemon rewrites it at least every heartbeat)."""
    ts = parse_iso_utc(doc.get("timestamp_utc"))
    age = None if ts is None else round(now - ts, 3)
    fresh = age is not None and age <= 2 * heartbeat_seconds + 5
    return {
        "running": running,
        "state_age_s": age,
        "healthy": bool(running and fresh and doc.get("status") == "running"),
    }


class StateReport:
    """Counters, last ids and status: one log line per outcome, and state.json (small and
    bounded, rewritten when something changed, at most every STATE_MIN_INTERVAL, and at
    every heartbeat)."""

    def __init__(
        self, log: JsonLog, started_at: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.log = log
        self.monotonic = monotonic  # intervals; wall time only for timestamps
        self.counters: Dict[str, int] = {k: 0 for k in OUTCOMES}
        self.counters["errors"] = 0
        self.last_dispatch_id = ""
        self.last_decision_id = ""
        self.last_error = ""
        self.records_dir_ok = True
        self.write_problem = ""  # why requests or the ledger cannot be written now
        self.status = "starting"
        self.started_at = started_at
        self.last_write = 0.0  # monotonic: when state.json is next due
        self.last_write_wall = 0.0  # its timestamp_utc
        self.dirty = True
        # Requests written per route, all time (metrics requests_total; ledger meta).
        self.requests_by_route: Dict[str, int] = {}
        # Fields other parts add to state.json (ApprovalBook.state_fields).
        self.extra: Dict[str, Any] = {}

    def restore(self, ledger: Ledger, rebuilt: bool) -> None:
        raw = ledger.meta_get("counters")
        if raw and not rebuilt:
            with contextlib.suppress(ValueError, TypeError):
                saved = json.loads(raw)
                for key in self.counters:
                    if is_int(saved.get(key)):
                        self.counters[key] = saved[key]
        self.last_dispatch_id = ledger.meta_get("last_dispatch_id") or ""
        self.last_decision_id = ledger.meta_get("last_decision_id") or ""
        raw = ledger.meta_get("requests_total")
        if raw and not rebuilt:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                saved = json.loads(raw)
                self.requests_by_route = {k: v for k, v in saved.items() if is_int(v)}

    def rewind(self, ledger: Ledger) -> None:
        """A batch was rolled back: counters and last ids go back to the ledger's last
        commit (what really happened); the errors seen since are kept."""
        errors = self.counters["errors"]
        self.counters = {k: 0 for k in OUTCOMES}
        self.counters["errors"] = 0
        self.restore(ledger, rebuilt=False)
        self.counters["errors"] = max(errors, self.counters["errors"])
        self.dirty = True

    def meta(self) -> Dict[str, str]:
        """What the ledger keeps across restarts (committed with every batch)."""
        return {
            "counters": json.dumps(self.counters, sort_keys=True),
            "last_dispatch_id": self.last_dispatch_id,
            "last_decision_id": self.last_decision_id,
            "requests_total": json.dumps(self.requests_by_route, sort_keys=True),
        }

    def outcome(self, name: str, outcome: Outcome, event: Optional[str] = None) -> None:
        self.dirty = True
        if not outcome.log:
            return
        self.counters[outcome.outcome] = self.counters.get(outcome.outcome, 0) + 1
        level = "WARNING" if outcome.outcome in ("rejected", "unrouted", "stale") else "INFO"
        request = outcome.decision.request if outcome.decision is not None else None
        self.log.event(
            event or outcome.outcome,
            level=level,
            file=name,
            decision_id=outcome.decision_id,
            dispatch_id=outcome.dispatch_id,
            reason=outcome.reason or None,
            route=outcome.route,
            status=request["status"] if request is not None else None,
        )

    def emitted(self, decision: Decision) -> None:
        # Synthetic handoff checks never become last_dispatch_id (a published output).
        if not is_handoff(decision.decision_id):
            self.last_dispatch_id = decision.dispatch_id or ""
            self.last_decision_id = decision.decision_id
            if decision.route:
                count = self.requests_by_route.get(decision.route, 0)
                self.requests_by_route[decision.route] = count + 1

    def error(self, reason: str, level: str = "ERROR", **fields: Any) -> None:
        """A failure not caused by a record (disk, folder, refused reload)."""
        self.counters["errors"] += 1
        self.last_error = reason
        self.dirty = True
        self.log.event("error", level=level, reason=reason, **fields)

    def internal_error(self, what: str) -> None:
        """A bug met while handling something (counted, shown in status; not logged here:
        the outcome's line says it)."""
        self.counters["errors"] += 1
        self.last_error = what
        self.dirty = True

    def degraded(self, problem: str, detail: str) -> None:
        """Requests or the ledger cannot be written: `problem` says why (logged once per
        problem, with `detail`), until recovered()."""
        if problem != self.write_problem:
            self.error(detail)
        self.write_problem = problem
        self.dirty = True

    def recovered(self) -> str:
        """Writes work again: the problem is over. Returns what it was."""
        was, self.write_problem = self.write_problem, ""
        self.dirty = True
        return was

    def set_status(self, status: str) -> None:
        """starting, running, stopping, stopped (degraded is derived when written)."""
        self.status = status
        self.dirty = True

    def add_fields(self, fields: Dict[str, Any]) -> None:
        """Fields another part adds to state.json (ApprovalBook.state_fields)."""
        self.extra = fields
        self.dirty = True

    def touch(self) -> None:
        """Something state.json shows changed (a reload): write it at the next chance."""
        self.dirty = True

    def folder_problem(self, reason: str, folder: str) -> None:
        if self.records_dir_ok:  # said once, not on every pass while it lasts
            self.records_dir_ok = False
            self.error(reason, file=folder)

    def folder_usable(self, folder: str) -> None:
        self.records_dir_ok = True
        self.dirty = True
        self.log.event("recovered", reason=f"records folder {folder} is usable again")

    def doc(self, now: float, config: Config, index: FileIndex, watcher: str) -> dict:
        counters = dict(self.counters)
        return {
            "schema_version": SCHEMA_VERSION,
            "timestamp_utc": iso_ts(now),
            "status": self.status,
            "execution_mode": EXECUTION_MODE,
            "last_dispatch_id": self.last_dispatch_id,
            "last_decision_id": self.last_decision_id,
            "processed_count": sum(
                v for k, v in counters.items() if k in OUTCOMES and k != "pending"
            ),
            "counters": counters,
            "pending_count": index.pending_count(),
            "tracked_files": index.tracked,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": iso_ts(self.started_at),
            "config_digest": config.digest,
            "watcher": watcher,
            "version": VERSION,
            "code": {k: v for k, v in running().items() if k != "path"},
            "records_dir_ok": self.records_dir_ok,
            "last_error": self.last_error[:300],
            **self.extra,
        }

    def next_write(self, heartbeat_seconds: float) -> float:
        due = self.last_write + heartbeat_seconds
        return min(due, self.last_write + STATE_MIN_INTERVAL) if self.dirty else due

    def write(
        self, now: float, config: Config, index: FileIndex, watcher: str, force: bool = False
    ) -> None:
        mono_now = self.monotonic()
        if not force and mono_now < self.next_write(config.heartbeat_seconds):
            return
        if self.status not in ("stopping", "stopped"):
            usable = self.records_dir_ok and not self.write_problem
            self.status = "running" if usable else "degraded"
        check_own_path(config.state_file)  # replaced by rename: refuse a FIFO left there
        write_file_durably(config.state_file, dump_json(self.doc(now, config, index, watcher)))
        self.last_write = mono_now
        self.last_write_wall = now  # the doc's timestamp_utc (health is judged on it)
        self.dirty = False
