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
from typing import Any, Callable, Dict, Optional, Tuple

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

# state.json `counters`: records per outcome, then decisions folded into a request nobody
# will look at again (decide.Decision.said) and failures not caused by a record.
COUNTERS = (*OUTCOMES, "coalesced_after_approval", "errors")

# state.json is rewritten at most this often while records keep arriving.
STATE_MIN_INTERVAL = 0.5


def judge_health(doc: dict, running: bool, heartbeat_seconds: float, now: float) -> dict:
    """THE freshness rule (`status --json` -> `healthy`; the role asks for it): a process
    holds the lock, state.json says `running`, and it was written within 2 x heartbeat
    + 5 s (the daemon rewrites it at least every heartbeat). Also the judged `status`
    (see judge_liveness) next to what state.json said (`reported_status`)."""
    ts = parse_iso_utc(doc.get("timestamp_utc"))
    age = None if ts is None else round(now - ts, 3)
    fresh = age is not None and age <= 2 * heartbeat_seconds + 5
    reported = doc.get("status") if isinstance(doc.get("status"), str) else None
    status, reason = judge_liveness(reported, running, fresh, age)
    return {
        "running": running,
        "state_age_s": age,
        "healthy": status == "running",
        "status": status,
        "reported_status": reported,
        "status_reason": reason,
    }


def judge_liveness(
    reported: Optional[str], running: bool, fresh: bool, age: Optional[float]
) -> Tuple[str, str]:
    """What the daemon is, from the lock and state.json: (state, why). The lock is the
    truth about a process: without it the state is `stopped` (state.json says so, or
    there is none) or `crashed` (it says anything else: the process died without its
    last word), never `running`. With it: `running` only when state.json is fresh and
    says running; a stale one is `degraded`."""
    if not running:
        if reported is None:
            return "stopped", "no state.json yet and no process holds the lock"
        if reported == "stopped":
            return "stopped", "stopped cleanly; no process holds the lock"
        return "crashed", f"state.json says {reported} but no process holds the lock"
    if reported is None:
        return "starting", "a process holds the lock; no state.json yet"
    if reported == "running" and not fresh:
        return "degraded", f"state.json not rewritten for {age} s (loop stuck?)"
    if reported in ("running", "starting", "stopping", "degraded"):
        reasons = {
            "running": "",
            "starting": "first pass not done yet",
            "stopping": "stopping",
            "degraded": "cannot use the records folder or write requests (see last_error)",
        }
        return reported, reasons[reported]
    return "degraded", f"state.json says {reported} while a process holds the lock"


class StateReport:
    """Counters, last ids and status: one log line per outcome, and state.json (small and
    bounded, rewritten when something changed, at most every STATE_MIN_INTERVAL, and at
    every heartbeat)."""

    def __init__(
        self, log: JsonLog, started_at: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.log = log
        self.monotonic = monotonic  # intervals; wall time only for timestamps
        self.counters: Dict[str, int] = {k: 0 for k in COUNTERS}
        self.last_dispatch_id = ""
        self.last_decision_id = ""
        self.last_error = ""
        self.last_error_at: Optional[float] = None  # wall time of last_error
        self.last_error_cause: Optional[str] = None  # its lasting cause, if it has one
        self.problems: Dict[str, Tuple[str, float]] = {}  # cause -> (reason, at), open
        self.last_recovered_at: Optional[float] = None
        self.last_recovered_from = ""
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
        # (files looked at, files to look at) while the first pass before READY runs.
        self.first_pass: Optional[Tuple[int, int]] = None

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
        self.counters = {k: 0 for k in COUNTERS}
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
        if outcome.decision is not None and outcome.decision.said:
            # Never silent: folded into a request approved (or released) before it came.
            self.counters["coalesced_after_approval"] += 1
            event, level = event or "coalesced-after-approval", "WARNING"
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

    def error(
        self, reason: str, level: str = "ERROR", cause: Optional[str] = None, **fields: Any
    ) -> None:
        """A failure not caused by a record (disk, folder, refused reload). `cause` names
        a lasting one (write, records-folder, reload, metrics, running-config): clear(cause)
        ends it. One without a cause stays as last_error, with its time."""
        self.counters["errors"] += 1
        self._show(reason, cause)
        self.log.event("error", level=level, reason=reason, **fields)

    def _show(self, reason: str, cause: Optional[str]) -> None:
        now = time.time()
        self.last_error, self.last_error_at, self.last_error_cause = reason, now, cause
        if cause is not None:
            self.problems[cause] = (reason, now)
        self.dirty = True

    def clear(self, cause: str) -> None:
        """The cause is gone: its error leaves last_error (kept as last_recovered_from,
        at last_recovered_at); another open problem, if any, is shown instead."""
        if self.problems.pop(cause, None) is None:
            return
        if self.last_error_cause != cause:
            return
        self.last_recovered_from, self.last_recovered_at = self.last_error, time.time()
        if self.problems:
            cause_left, (reason, at) = max(self.problems.items(), key=lambda kv: kv[1][1])
            self.last_error, self.last_error_at, self.last_error_cause = reason, at, cause_left
        else:
            self.last_error, self.last_error_at, self.last_error_cause = "", None, None
        self.dirty = True

    def internal_error(self, what: str) -> None:
        """A bug met while handling something (counted, shown in status; not logged here:
        the outcome's line says it)."""
        self.counters["errors"] += 1
        self._show(what, None)

    def degraded(self, problem: str, detail: str) -> None:
        """Requests or the ledger cannot be written: `problem` says why (logged once per
        problem, with `detail`), until recovered()."""
        if problem != self.write_problem:
            self.error(detail, cause="write")
        self.write_problem = problem
        self.dirty = True

    def recovered(self) -> str:
        """Writes work again: the problem is over. Returns what it was."""
        was, self.write_problem = self.write_problem, ""
        self.clear("write")
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

    def reload_refused(self, reason: str) -> None:
        """SIGHUP with a config that cannot be used: the running one stays."""
        self.error(reason, cause="reload")

    def reloaded(self) -> None:
        """A good reload: a refused one before it is over."""
        self.dirty = True
        self.clear("reload")

    @property
    def reload_ok(self) -> bool:
        """False from a refused reload (SIGHUP) until a reload succeeds (metrics gauge)."""
        return "reload" not in self.problems

    def touch(self) -> None:
        """Something state.json shows changed (a reload): write it at the next chance."""
        self.dirty = True

    def folder_problem(self, reason: str, folder: str) -> None:
        if self.records_dir_ok:  # said once, not on every pass while it lasts
            self.records_dir_ok = False
            self.error(reason, cause="records-folder", file=folder)

    def folder_usable(self, folder: str) -> None:
        self.records_dir_ok = True
        self.clear("records-folder")
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
            "config_file": config.path,
            "watcher": watcher,
            "version": VERSION,
            "code": {k: v for k, v in running().items() if k != "path"},
            "records_dir_ok": self.records_dir_ok,
            "last_error": self.last_error[:300],
            "config_last_reload_successful": self.reload_ok,
            "records_awaiting_operator": dict(index.awaiting_operator),
            "last_error_at": None if self.last_error_at is None else iso_ts(self.last_error_at),
            "last_recovered_at": None
            if self.last_recovered_at is None
            else iso_ts(self.last_recovered_at),
            "last_recovered_from": self.last_recovered_from[:300],
            "first_pass": None
            if self.first_pass is None
            else {"seen": self.first_pass[0], "total": self.first_pass[1]},
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
            busy = "starting" if self.first_pass is not None else "running"
            self.status = busy if usable else "degraded"
        check_own_path(config.state_file)  # replaced by rename: refuse a FIFO left there
        write_file_durably(config.state_file, dump_json(self.doc(now, config, index, watcher)))
        self.last_write = mono_now
        self.last_write_wall = now  # the doc's timestamp_utc (health is judged on it)
        self.dirty = False
