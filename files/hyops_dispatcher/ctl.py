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

from .approvals import approval_state, awaits_approval, request_facts
from .config import Config
from .console import err, printable
from .daemon import start_daemon
from .fsio import open_own_file, read_json_quiet
from .host import Locked, lock_holder_running
from .ids import parse_iso_utc
from .inbox import ReplayInbox
from .jsonlog import open_log
from .ledger import Ledger
from .pipeline import judge_record_file
from .record import DECISION_ID_RE, is_record_name
from .report import judge_health
from .states import APPROVAL_STATES, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE
from .verdicts import FileSig


def cmd_check_config(config: Config) -> int:
    routes = ", ".join(sorted(config.routes)) or "none (every record would be unrouted)"
    print(
        f"config OK: {config.path} (digest {config.digest}); root {config.root}; "
        f"records {config.records_dir}; routes: {routes}"
    )
    return EXIT_OK


def read_status(config: Config) -> Tuple[dict, bool]:
    """state.json plus liveness and the health verdict; (doc, state_readable)."""
    doc = read_json_quiet(config.state_file)
    readable = doc is not None
    doc = dict(doc or {})
    running = lock_holder_running(config.lock_file)
    now = time.time()
    doc.update(judge_health(doc, running, config.heartbeat_seconds, now))
    doc["state_file"] = config.state_file
    add_approval_ages(doc, now)
    return doc, readable


def add_approval_ages(doc: dict, now: float) -> None:
    """state.json keeps timestamps (it must not change with time alone); status adds the
    ages: `oldest_awaiting_age_s` and `age_s` of each listed open request."""
    if "approvals" not in doc:
        return
    oldest = parse_iso_utc(doc.get("oldest_awaiting_timestamp_utc"))
    doc["oldest_awaiting_age_s"] = None if oldest is None else round(now - oldest, 1)
    for row in doc.get("requests_open") or []:
        issued = parse_iso_utc(row.get("timestamp_utc")) if isinstance(row, dict) else None
        if issued is not None:
            row["age_s"] = round(now - issued, 1)


def cmd_status(config: Config, as_json: bool) -> int:
    doc, readable = read_status(config)
    if as_json:
        print(json.dumps(doc, sort_keys=True))
    else:
        if not readable:
            print(f"no state yet ({config.state_file} missing or unreadable)")
        print(f"healthy:          {'yes' if doc['healthy'] else 'NO'}")
        print(f"running:          {'yes' if doc['running'] else 'no'}")
        for key in (
            "status",
            "host",
            "timestamp_utc",
            "state_age_s",
            "watcher",
            "last_dispatch_id",
            "last_decision_id",
            "processed_count",
            "pending_count",
            "last_error",
        ):
            if key in doc:
                print(f"{key + ':':<18}{printable(doc[key])}")
        code = doc.get("code") or {}
        if code:
            release, python = printable(code.get("release")), printable(code.get("python"))
            print(f"{'code:':<18}{release} (python {python})")
        for key, value in sorted((doc.get("counters") or {}).items()):
            print(f"  {printable(key) + ':':<16}{printable(value)}")
        print_approvals(doc)
    return EXIT_OK if readable else EXIT_RUNTIME


def print_approvals(doc: dict) -> None:
    if "approvals" not in doc:
        return
    readable = "yes" if doc.get("approvals_dir_readable") else "NO (requests count as awaiting)"
    print(f"{'approvals dir:':<18}{readable}")
    counts = doc.get("approvals") or {}
    print("requests: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in APPROVAL_STATES))
    if doc.get("oldest_awaiting_age_s") is not None:
        print(f"{'oldest awaiting:':<18}{doc['oldest_awaiting_age_s']} s")
    for row in doc.get("requests_open") or []:
        print(
            f"  {row.get('dispatch_id')}  {row.get('approval')}  {row.get('route')}  "
            f"age {row.get('age_s')} s"
        )


def open_ledger_ro(config: Config) -> Optional[Ledger]:
    if not os.path.exists(config.ledger_file):
        return None
    try:
        return Ledger(config.ledger_file, readonly=True)
    except (sqlite3.Error, OSError) as exc:
        err(f"cannot read ledger {config.ledger_file}: {exc}")
        return None


def list_requests(config: Config) -> List[dict]:
    result = []
    try:
        names = sorted(n for n in os.listdir(config.requests_dir) if is_record_name(n))
    except OSError:
        return result
    docs = [read_json_quiet(os.path.join(config.requests_dir, name)) or {} for name in names]
    superseded = {d.get("supersedes") for d in docs if isinstance(d.get("supersedes"), str)}
    folder = config.approvals_dir
    readable = os.path.isdir(folder) and os.access(folder, os.R_OK | os.X_OK)
    now = time.time()
    for doc in docs:
        row = {
            k: doc.get(k)
            for k in (
                "dispatch_id",
                "status",
                "decision_type",
                "source_decision_id",
                "timestamp_utc",
                "expires_at",
                "supersedes",
            )
        }
        facts = request_facts(doc)
        if facts is not None:
            marker = os.path.join(folder, f"{facts.dispatch_id}.approved.json")
            approved = readable and os.path.lexists(marker)
            row["approval"] = approval_state(facts, approved, facts.dispatch_id in superseded, now)
            row["age_s"] = round(now - facts.issued_at, 1)
        result.append(row)
    return result


def cmd_list(config: Config, as_json: bool) -> int:
    requests = list_requests(config)
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
    if as_json:
        print(json.dumps({"requests": requests, "records": problems}, sort_keys=True))
        return EXIT_OK
    print(f"requests in {config.requests_dir}: {len(requests)}")
    for req in requests:
        print(
            printable(
                f"  {req['dispatch_id']}  {req['status']}  {req.get('approval', '?')}  "
                f"age {req.get('age_s')} s  {req['decision_type']}  <- {req['source_decision_id']}"
            )
        )
    print(f"records not dispatched (from the ledger): {len(problems)}")
    for row in problems:
        print(printable(f"  {row['outcome']:<9} {row['file']}  {row['reason'] or ''}"))
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
                last_emit=ledger.last_emits() if ledger is not None else {},
                still_waiting=lambda dispatch_id: awaits_approval(config, dispatch_id, now),
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


def _daemon_pid(lock_file: str) -> Optional[int]:
    try:
        with os.fdopen(open_own_file(lock_file, os.O_RDONLY, owned=False), "rb") as fh:
            return int(fh.read(32).split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _ask_running_daemon(config: Config, decision_id: str, timeout: float) -> Optional[dict]:
    """Hand the replay to the running daemon; None when it did not answer in time."""
    inbox = ReplayInbox(config)
    inbox.ask(decision_id, _owner_of(os.path.dirname(config.state_file)))
    deadline = time.monotonic() + timeout
    next_signal = 0.0
    try:
        while time.monotonic() < deadline:
            answer = inbox.take_answer(decision_id)
            if answer is not None:
                return answer
            if time.monotonic() >= next_signal:
                pid = _daemon_pid(config.lock_file)
                if pid is not None:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGUSR1)  # "look now", as for a folder check
                next_signal = time.monotonic() + 1.0
            time.sleep(0.02)
    finally:
        inbox.withdraw(decision_id)
    return None


def cmd_replay(config: Config, decision_id: str, timeout: float) -> int:
    """Ask the running daemon to replay; when none runs, take the lock and do it with
    the daemon's own code (Daemon.replay), so there is one write path either way."""
    if not DECISION_ID_RE.match(decision_id):
        err(f"decision_id {decision_id!r}: not a decision id (letters, digits, ._-)")
        return EXIT_USAGE
    if not os.path.exists(config.ledger_file):
        err(f"no ledger at {config.ledger_file}: nothing has been handled yet")
        return EXIT_RUNTIME
    answer: Optional[dict] = None
    if lock_holder_running(config.lock_file):
        answer = _ask_running_daemon(config, decision_id, timeout)
        if answer is None:
            err(f"the running daemon did not answer the replay within {timeout:g} s")
            return EXIT_RUNTIME
    else:
        log = open_log(config, to_stderr=False, rotate=False)
        try:
            daemon = start_daemon(
                config, log, use_inotify=False, owner=_owner_of(config.requests_dir)
            )
        except Locked:
            log.close()
            return cmd_replay(config, decision_id, timeout)  # it just started: ask it
        except BaseException:
            log.close()
            raise
        try:
            answer = daemon.replay(decision_id)
        finally:
            daemon.stop()
            log.close()
    if not answer.get("ok"):
        err(str(answer.get("error") or "replay refused"))
        return EXIT_RUNTIME
    print(json.dumps(answer, sort_keys=True))
    return EXIT_OK
