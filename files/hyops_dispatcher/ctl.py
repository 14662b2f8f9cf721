"""Operator commands that read the daemon's state: check-config, status, list, explain,
replay.

Invariant: never changes a request or the ledger behind the daemon's back (replay asks the
running daemon, or takes the lock).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import time
from typing import Any, Dict, List, Optional, Tuple

from .approvals import approval_state, request_facts
from .approve import withdrawn_requests
from .config import Config
from .console import age, err, paint, printable, table
from .daemon import start_daemon
from .episodes import LedgerEpisodes
from .fsio import read_json_doc, read_json_quiet
from .host import Locked, lock_holder, lock_holder_running
from .ids import dispatch_id_epoch, iso_ts, parse_iso_utc
from .inbox import ReplayInbox
from .jsonlog import open_log
from .ledger import Ledger
from .pipeline import judge_record_file
from .record import DECISION_ID_RE, is_record_name
from .report import judge_health
from .states import (
    APPROVAL_STATES,
    EXIT_DEGRADED,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_RUNTIME,
    EXIT_USAGE,
)
from .verdicts import FileSig


def cmd_check_config(config: Config) -> int:
    routes = ", ".join(sorted(config.routes)) or "none (every record would be unrouted)"
    print(
        f"config OK: {config.path} (digest {config.digest}); root {config.root}; "
        f"records {config.records_dir}; routes: {routes}"
    )
    return EXIT_OK


def read_status(config: Config) -> Tuple[dict, bool]:
    """state.json plus liveness and the health verdict; (doc, state_readable). `status`
    is the judged state (report.judge_liveness), state.json's own word is
    `reported_status`."""
    doc = read_json_quiet(config.state_file)
    readable = doc is not None or not os.path.lexists(config.state_file)
    doc = dict(doc or {})
    running = lock_holder_running(config.lock_file)
    now = time.time()
    doc.update(judge_health(doc, running, config.heartbeat_seconds, now))
    if not readable:
        doc["status"] = "unknown"
        doc["status_reason"] = f"cannot read {config.state_file}"
    doc["state_file"] = config.state_file
    doc["withdrawn_count"] = len(withdrawn_requests(config))
    add_approval_ages(doc, now)
    return doc, readable


def status_exit(doc: dict, readable: bool) -> int:
    """0 only when healthy, as `systemctl is-active`; 6 no daemon runs (crashed or
    stopped), 7 one runs but is not healthy, 1 state.json cannot be read."""
    if not readable:
        return EXIT_RUNTIME
    if doc.get("healthy"):
        return EXIT_OK
    if doc.get("status") in ("crashed", "stopped"):
        return EXIT_NOT_RUNNING
    return EXIT_DEGRADED


def add_approval_ages(doc: dict, now: float) -> None:
    """state.json keeps timestamps (it must not change with time alone); status adds the
    ages: `oldest_awaiting_age_s`, and `age_s` (its file) and `decided_at`/`decided_age_s`
    (its decision) of each listed open request."""
    if "approvals" not in doc:
        return
    oldest = parse_iso_utc(doc.get("oldest_awaiting_timestamp_utc"))
    doc["oldest_awaiting_age_s"] = None if oldest is None else round(now - oldest, 1)
    for row in doc.get("requests_open") or []:
        if not isinstance(row, dict):
            continue
        issued = parse_iso_utc(row.get("timestamp_utc"))
        if issued is not None:
            row["age_s"] = round(now - issued, 1)
        decided = dispatch_id_epoch(row.get("dispatch_id"))  # the decision time it names
        row["decided_at"] = None if decided is None else iso_ts(decided)
        row["decided_age_s"] = None if decided is None else round(now - decided, 1)


def cmd_status(config: Config, as_json: bool, disk_problem: Optional[str] = None) -> int:
    doc, readable = read_status(config)
    doc["config_on_disk"] = (
        {"valid": False, "error": disk_problem}
        if disk_problem
        else {"valid": True, "digest": config.digest}
    )
    started = parse_iso_utc(doc.get("started_at"))
    doc["uptime_s"] = (
        round(time.time() - started, 1) if doc["running"] and started is not None else None
    )
    if as_json:
        print(json.dumps(doc, sort_keys=True))
    else:
        if not readable:
            print(f"state.json unreadable ({config.state_file})")
        print(f"healthy:          {paint('yes' if doc['healthy'] else 'NO')}")
        print(f"running:          {'yes' if doc['running'] else 'no'}")
        reason = f" ({doc['status_reason']})" if doc.get("status_reason") else ""
        state = paint(str(doc["status"]), printable(doc["status"]))
        print(f"{'status:':<18}{state}{printable(reason)}")
        first = doc.get("first_pass")
        if isinstance(first, dict) and doc["running"]:
            seen, total = printable(first.get("seen")), printable(first.get("total"))
            print(f"{'first pass:':<18}{seen} of {total} records (READY follows it)")
        print_identity(doc)
        for key in (
            "host",
            "timestamp_utc",
            "state_age_s",
            "watcher",
            "last_dispatch_id",
            "last_decision_id",
            "processed_count",
            "pending_count",
        ):
            if key in doc:
                print(f"{key + ':':<18}{printable(doc[key])}")
        print_last_error(doc)
        counters = sorted(
            (printable(k), printable(v)) for k, v in (doc.get("counters") or {}).items()
        )
        width = max([16] + [len(k) + 2 for k, _ in counters])
        for key, value in counters:
            print(f"  {key + ':':<{width}}{value}")
        print_approvals(doc)
    return status_exit(doc, readable)


def _ago(iso: Any) -> str:
    at = parse_iso_utc(iso)
    return "" if at is None else f"{age(time.time() - at)} ago, {iso}"


def print_last_error(doc: dict) -> None:
    """The error that is still open (with its time), else the last one that cleared."""
    if doc.get("last_error"):
        when = _ago(doc.get("last_error_at"))
        print(printable(f"{'last error:':<18}{doc['last_error']}" + (f" ({when})" if when else "")))
    if doc.get("last_recovered_at"):
        print(
            printable(
                f"{'recovered:':<18}{_ago(doc['last_recovered_at'])} "
                f"from: {doc.get('last_recovered_from') or '?'}"
            )
        )


def print_identity(doc: dict) -> None:
    """Which config and code the daemon runs, its PID and uptime."""
    digest = doc.get("config_digest") or "?"
    print(printable(f"{'config:':<18}{doc.get('config_file') or '?'} (digest {digest})"))
    disk = doc.get("config_on_disk") or {}
    if not disk.get("valid", True):
        print(printable(f"{'config on disk:':<18}INVALID ({disk.get('error')})"))
    elif disk.get("digest") and doc.get("config_digest") and disk["digest"] != digest:
        print(f"{'config on disk:':<18}digest {disk['digest']}, not loaded (reload to apply)")
    code = doc.get("code") or {}
    if code:
        release, python = printable(code.get("release")), printable(code.get("python"))
        print(f"{'code:':<18}{release} (python {python})")
    if doc.get("pid") is not None:
        up = f", up {age(doc['uptime_s'])}" if doc.get("uptime_s") is not None else ""
        print(printable(f"{'pid:':<18}{doc['pid']}{up} (since {doc.get('started_at')})"))


def print_approvals(doc: dict) -> None:
    if "approvals" not in doc:
        return
    words = {
        "readable": "yes",
        "missing": "no consumer yet (folder missing; requests count as awaiting)",
        "unreadable": "NO, unreadable (requests count as awaiting)",
    }
    state = doc.get("approvals_dir_state") or (
        "readable" if doc.get("approvals_dir_readable") else "unreadable"
    )
    print(f"{'approvals dir:':<18}{words.get(state, state)}")
    if doc.get("withdrawn_count"):
        print(f"{'withdrawn:':<18}{doc['withdrawn_count']} (in state/withdrawn/)")
    counts = doc.get("approvals") or {}
    print("requests: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in APPROVAL_STATES))
    if doc.get("oldest_awaiting_age_s") is not None:
        print(f"{'oldest awaiting:':<18}{age(doc['oldest_awaiting_age_s'])}")
    rows = [r for r in doc.get("requests_open") or [] if isinstance(r, dict)]
    now = time.time()
    if rows:
        cells = [
            (
                r.get("dispatch_id"),
                r.get("approval"),
                r.get("route"),
                age(r.get("age_s")),
                age(r.get("decided_age_s")),
                _expires_in(r, now),
            )
            for r in rows
        ]
        headers = ("DISPATCH ID", "APPROVAL", "ROUTE", "AGE", "DECIDED", "EXPIRES IN")
        for line in table(headers, cells, painted=(1,)):
            print(line)
    total = sum(counts.get(s, 0) for s in ("awaiting", "expired", "superseded"))
    if total > len(rows):
        print(f"  and {total - len(rows)} more (dispatcher.py pending, list)")


def open_ledger_ro(config: Config) -> Optional[Ledger]:
    if not os.path.exists(config.ledger_file):
        return None
    try:
        return Ledger(config.ledger_file, readonly=True)
    except (sqlite3.Error, OSError) as exc:
        err(f"cannot read ledger {config.ledger_file}: {exc}")
        return None


REQUEST_KEYS = (
    "dispatch_id",
    "route",
    "target_ref",
    "status",
    "decision_type",
    "source_decision_id",
    "timestamp_utc",
    "expires_at",
    "supersedes",
)


def decided_at(doc: dict) -> Optional[float]:
    """When the decision was made, not when its request was written: the record's
    timestamp_utc the request carries, else the time its dispatch id names (the
    decision time the daemon used)."""
    at = parse_iso_utc(doc.get("decision_timestamp_utc"))
    return dispatch_id_epoch(doc.get("dispatch_id")) if at is None else at


def _add_decided(row: dict, doc: dict, now: float) -> None:
    at = decided_at(doc)
    row["decided_at"] = None if at is None else iso_ts(at)
    row["decided_age_s"] = None if at is None else round(now - at, 1)


def list_requests(config: Config) -> List[dict]:
    result = []
    try:
        names = sorted(n for n in os.listdir(config.requests_dir) if is_record_name(n))
    except OSError:
        return result
    docs = []
    for name in names:
        path = os.path.join(config.requests_dir, name)
        doc, problem = read_json_doc(path)
        if doc is not None and request_facts(doc) is None:
            doc, problem = None, "no valid dispatch_id (pattern and date)"
        if doc is None:
            err(f"request file {path} skipped: {problem}")  # one line, never fatal
            continue
        docs.append(doc)
    superseded = {d.get("supersedes") for d in docs if isinstance(d.get("supersedes"), str)}
    folder = config.approvals_dir
    readable = os.path.isdir(folder) and os.access(folder, os.R_OK | os.X_OK)
    now = time.time()
    for doc in docs:
        row = {k: doc.get(k) for k in REQUEST_KEYS}
        facts = request_facts(doc)
        if facts is not None:
            marker = os.path.join(folder, f"{facts.dispatch_id}.approved.json")
            approved = readable and os.path.lexists(marker)
            row["approval"] = approval_state(facts, approved, facts.dispatch_id in superseded, now)
            row["age_s"] = round(now - facts.issued_at, 1)
        _add_decided(row, doc, now)
        result.append(row)
    for doc, note in withdrawn_requests(config):
        row = {k: doc.get(k) for k in REQUEST_KEYS}
        row.update(approval="withdrawn", withdrawn=note)
        facts = request_facts(doc)
        if facts is not None:
            row["age_s"] = round(now - facts.issued_at, 1)
        _add_decided(row, doc, now)
        result.append(row)
    return result


def cmd_pending(config: Config, as_json: bool) -> int:
    """What waits for a person, oldest first."""
    rows = [r for r in list_requests(config) if r.get("approval") == "awaiting"]
    rows.sort(key=lambda r: (r.get("timestamp_utc") or "", r.get("dispatch_id") or ""))
    if as_json:
        print(json.dumps({"requests": rows}, sort_keys=True))
        return EXIT_OK
    print(f"requests awaiting approval: {len(rows)}")
    for r in rows:
        print(
            printable(
                f"  {r['dispatch_id']}  waiting {age(r.get('age_s'))}  decided "
                f"{age(r.get('decided_age_s'))} ago  {r.get('decision_type')}"
                f"  <- {r.get('source_decision_id')}"
            )
        )
    return EXIT_OK


def _expires_in(row: dict, now: float) -> str:
    at = parse_iso_utc(row.get("expires_at"))
    return "-" if at is None else ("expired" if at <= now else age(at - now))


def sort_waiting(rows: List[dict]) -> List[dict]:
    """Oldest first (the one waiting longest on top), then by id."""
    return sorted(rows, key=lambda r: (-(r.get("age_s") or 0), r.get("dispatch_id") or ""))


def cmd_list(
    config: Config, as_json: bool, state: Optional[str] = None, route: Optional[str] = None
) -> int:
    requests = sort_waiting(list_requests(config))
    if state:
        requests = [r for r in requests if r.get("approval") == state]
    if route:
        requests = [r for r in requests if route in (r.get("route"), r.get("decision_type"))]
    problems: List[dict] = []
    ledger = open_ledger_ro(config)
    if ledger is not None:
        try:
            problems = ledger.listing(
                ("rejected", "pending", "unrouted", "stale", "skipped", "duplicate", "coalesced")
            )
        except sqlite3.Error as exc:
            err(f"cannot read ledger: {exc}")
        ledger.close()
    now = time.time()
    for row in problems:
        handled = row.get("handled_at")
        row["handled_at"] = iso_ts(handled) if isinstance(handled, (int, float)) else None
        row["age_s"] = None if handled is None else round(now - handled, 1)
    if as_json:
        print(json.dumps({"requests": requests, "records": problems}, sort_keys=True))
        return EXIT_OK
    print(f"requests in {config.requests_dir}: {len(requests)} (oldest waiting first)")
    if requests:
        rows = [
            (
                r["dispatch_id"],
                r.get("approval", "?"),
                age(r.get("age_s")),
                age(r.get("decided_age_s")),
                _expires_in(r, now),
                r.get("target_ref"),
                r.get("source_decision_id"),
            )
            for r in requests
        ]
        headers = ("DISPATCH ID", "APPROVAL", "AGE", "DECIDED", "EXPIRES IN", "TARGET", "DECISION")
        for line in table(headers, rows, painted=(1,)):
            print(line)
    print(f"records not dispatched (from the ledger): {len(problems)}")
    if problems:
        rows = [
            (p["outcome"], p["file"], age(p.get("age_s")), p.get("reason") or "") for p in problems
        ]
        for line in table(("OUTCOME", "FILE", "HANDLED", "REASON"), rows, painted=(0,)):
            print(line)
    return EXIT_OK


def _find_record(config: Config, ref: str) -> Optional[str]:
    candidates = [
        ref,
        os.path.join(config.records_dir, ref),
        os.path.join(config.records_dir, ref + ".json"),
    ]
    for path in candidates:
        if os.path.lexists(path):
            return path
    ledger = open_ledger_ro(config)
    if ledger is not None:
        try:
            row = ledger.get_decision(ref)
        finally:
            ledger.close()
        if row and row.get("file"):
            return os.path.join(config.records_dir, row["file"])
    return None


def cmd_explain(config: Config, ref: str) -> int:
    """What the daemon would do with one record, by the daemon's own judge_record_file."""
    path = _find_record(config, ref)
    if path is None:
        err(f"no record file or known decision_id {ref!r} (looked in {config.records_dir})")
        return EXIT_RUNTIME
    # A file outside the records folder is judged as if it were in it.
    folder, name = os.path.split(os.path.abspath(path))
    config = config._replace(records_dir=folder)
    result: Dict[str, Any] = {"file": path}
    ledger = open_ledger_ro(config)
    try:
        known = ledger.known_file(name) if ledger is not None else None
        if ledger is not None:
            result["ledger_file_row"] = ledger.get_file(name)
        try:
            sig = FileSig.of(os.lstat(path))
        except OSError as exc:
            result.update({"would": "rejected", "reason": f"cannot stat: {exc.strerror}"})
        else:
            now = time.time()
            judged = judge_record_file(
                config,
                name,
                sig,
                known,
                now,
                prior_of=ledger.prior if ledger is not None else lambda _id: None,
                existing=lambda dispatch_id: read_json_quiet(
                    os.path.join(config.requests_dir, dispatch_id + ".json")
                ),
                episodes=None
                if ledger is None
                else LedgerEpisodes(config, ledger, lambda _path: False, now),
                look_again=True,
            )
            assert judged is not None  # look_again: never "unchanged"
            outcome = judged.outcome
            decision = outcome.decision
            result.update(
                {
                    "decision_id": outcome.decision_id,
                    "route": outcome.route,
                    "would": outcome.outcome,
                    "reason": outcome.reason,
                    "dispatch_id": outcome.dispatch_id,
                    "request": decision.request if decision is not None and outcome.write else None,
                }
            )
            if outcome.source == "prior" and outcome.outcome != "duplicate":
                result["would"] = "nothing (already handled)"
                result["reason"] = (
                    f"decision already {outcome.outcome} as {outcome.dispatch_id}; "
                    "no second request"
                )
    finally:
        if ledger is not None:
            ledger.close()
    # JSON with ASCII escapes: no control character of a name reaches the terminal raw.
    print(json.dumps(result, indent=2, sort_keys=True, default=str, ensure_ascii=True))
    return EXIT_OK


def _owner_of(folder: str) -> Optional[Tuple[int, int]]:
    """When run as root, files we create belong to the folder's owner (the service user)."""
    if os.geteuid() != 0:
        return None
    st = os.stat(folder)
    return st.st_uid, st.st_gid


def _ask_running_daemon(
    config: Config, decision_id: str, timeout: float, yes: bool
) -> Optional[dict]:
    """Hand the replay to the running daemon; None when it did not answer in time."""
    inbox = ReplayInbox(config)
    inbox.ask(decision_id, _owner_of(os.path.dirname(config.state_file)), yes)
    deadline = time.monotonic() + timeout
    next_signal = 0.0
    try:
        while time.monotonic() < deadline:
            answer = inbox.take_answer(decision_id)
            if answer is not None:
                return answer
            if time.monotonic() >= next_signal:
                pid, command = lock_holder(config.lock_file)
                if pid is not None and command == "run":  # only the daemon has the handler
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGUSR1)  # "look now", as for a folder check
                next_signal = time.monotonic() + 1.0
            time.sleep(0.02)
    finally:
        inbox.withdraw(decision_id)
    return None


def cmd_replay(config: Config, decision_id: str, timeout: float, yes: bool = False) -> int:
    """Ask the running daemon to replay; when none runs, take the lock and do it with
    the daemon's own code (Daemon.replay), so there is one write path either way. A
    replay that would surprise (replayguard) is refused in one line unless `yes`."""
    if not DECISION_ID_RE.match(decision_id):
        err(f"decision_id {decision_id!r}: not a decision id (letters, digits, ._-)")
        return EXIT_USAGE
    if not os.path.exists(config.ledger_file):
        err(f"no ledger at {config.ledger_file}: nothing has been handled yet")
        return EXIT_RUNTIME
    for doc, note in withdrawn_requests(config):
        if doc.get("source_decision_id") == decision_id:
            err(
                f"{decision_id} was dispatched as {doc.get('dispatch_id')}, withdrawn at "
                f"{note.get('withdrawn_at')} by {note.get('withdrawn_by')} "
                f"({note.get('reason')}); not replayed (a withdrawn decision stays withdrawn)"
            )
            return EXIT_RUNTIME
    answer: Optional[dict] = None
    if lock_holder_running(config.lock_file):
        pid, command = lock_holder(config.lock_file)
        if command != "run":
            err(
                f"the lock {config.lock_file} is held by '{command}' (pid {pid}), not by the "
                "daemon; nothing asked: run the replay again once it is done"
            )
            return EXIT_RUNTIME
        answer = _ask_running_daemon(config, decision_id, timeout, yes)
        if answer is None:
            err(f"the running daemon did not answer the replay within {timeout:g} s")
            return EXIT_RUNTIME
    else:
        log = open_log(config, to_stderr=False, rotate=False)
        try:
            daemon = start_daemon(
                config,
                log,
                use_inotify=False,
                owner=_owner_of(config.requests_dir),
                command="replay",
            )
        except Locked:
            log.close()
            return cmd_replay(config, decision_id, timeout, yes)  # it just started: ask it
        except BaseException:
            log.close()
            raise
        try:
            answer = daemon.replay(decision_id, confirmed=yes)
        finally:
            daemon.stop()
            log.close()
    if not answer.get("ok"):
        err(str(answer.get("error") or "replay refused"))
        return EXIT_RUNTIME
    print(json.dumps(answer, sort_keys=True))
    return EXIT_OK
