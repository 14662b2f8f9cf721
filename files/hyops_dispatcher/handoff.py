"""`validate-handoff`: the runbook's synthetic check, automated (write a synthetic
record, wait for its request, check it, remove both).

Invariant: leaves nothing behind (no record, no request) whatever the result, also when
stopped by SIGTERM, SIGHUP or SIGINT.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import time
from typing import Any, Callable, Dict, List, Optional

from .approvals import approval_marker
from .config import Config
from .console import table
from .ctl import open_ledger_ro
from .decide import decide
from .fsio import fsync_dir, read_json_quiet, write_file_durably
from .host import lock_holder_running
from .ids import compact_ts, iso_ts
from .jsontext import dump_json
from .record import read_valid_record
from .states import EXECUTION_MODE, EXIT_HANDOFF, EXIT_OK, HANDOFF_PREFIX


def print_checks(result: Dict[str, Any]) -> None:
    """The verdict as a CHECK/STATUS/DETAIL table, then one line saying what it means."""
    rows = []
    for c in result["checks"]:
        extra = {k: v for k, v in c.items() if k not in ("name", "ok", "detail")}
        detail = c.get("detail") or ", ".join(f"{k}={v}" for k, v in sorted(extra.items()))
        rows.append((c["name"], "ok" if c["ok"] else "FAILED", detail))
    for line in table(("CHECK", "STATUS", "DETAIL"), rows, indent=""):
        print(line)
    verdict = "handoff OK" if result["ok"] else "handoff FAILED"
    print(f"{verdict}: {result.get('dispatch_id') or '-'} in {result.get('elapsed_s')} s")


def cmd_validate_handoff(
    config: Config, decision_type: Optional[str], timeout: float, as_json: bool = True
) -> int:
    started = time.monotonic()
    checks: List[dict] = []
    result: Dict[str, Any] = {"ok": False, "dispatch_id": None, "checks": checks}

    def check(name: str, ok: bool, **detail: Any) -> bool:
        checks.append({"name": name, "ok": bool(ok), **detail})
        return ok

    def finish() -> int:
        result["ok"] = bool(checks) and all(c["ok"] for c in checks)
        result["elapsed_s"] = round(time.monotonic() - started, 3)
        if as_json:
            print(json.dumps(result, sort_keys=True))
        else:
            print_checks(result)
        return EXIT_OK if result["ok"] else EXIT_HANDOFF

    if decision_type is None:
        decision_type = "cutover" if "cutover" in config.routes else min(config.routes, default="")
    route = config.routes.get(decision_type)
    ok_route = check(
        "route",
        route is not None,
        decision_type=decision_type,
        detail="" if route else "no route for this decision type in the config",
    )
    ok_run = check(
        "daemon-running", lock_holder_running(config.lock_file), lock_file=config.lock_file
    )
    if not (ok_route and ok_run):
        return finish()
    assert route is not None
    now = time.time()
    decision_id = f"{HANDOFF_PREFIX}{compact_ts(now)}-{os.urandom(4).hex()}"
    record = {
        "decision_id": decision_id,
        "decision_type": decision_type,
        "timestamp_utc": iso_ts(now),
        "status": "emitted",
        "rationale": "synthetic dispatcher handoff validation",
        "checks": [{"name": "handoff_check", "status": "synthetic"}],
    }
    record_path = os.path.join(config.records_dir, decision_id + ".json")
    # What the daemon must write, by the daemon's own decide().
    expected = decide(
        read_valid_record(dump_json(record)),
        record_path=record_path,
        mtime=now,
        config=config,
        now=now,
    )
    assert expected.request is not None and expected.dispatch_id is not None
    dispatch_id = expected.dispatch_id
    result["dispatch_id"] = dispatch_id
    request_path = os.path.join(config.requests_dir, dispatch_id + ".json")
    # SIGTERM, SIGHUP or SIGINT from the moment the record exists must not skip the cleanup
    # below: they are blocked while the record is written and the handlers installed, then
    # each ends the wait as an Interrupted (a pending one at once), the cleanup runs, and
    # the verdict says so.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        try:
            write_file_durably(record_path, dump_json(record), mode=0o644)
        except OSError as exc:
            check("record-written", False, file=record_path, detail=str(exc))
            return finish()
        check("record-written", True, file=record_path)
        for sig in STOP_SIGNALS:
            signal.signal(sig, _interrupt)
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            _wait_and_check(config, check, expected, decision_id, request_path, timeout)
        except Interrupted as stop:
            check("interrupted", False, detail=f"stopped by signal {stop.signum}")
        finally:
            _ignore_stop_signals()  # a second signal must not cut the cleanup short
            _cleanup(config, check, dispatch_id, record_path, request_path)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    return finish()


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _ignore_stop_signals() -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _interrupt(signum: int, _frame: Any) -> None:
    _ignore_stop_signals()  # one interruption: a second signal lands nowhere
    raise Interrupted(signum)


def _wait_and_check(
    config: Config,
    check: Callable[..., bool],
    expected: Any,
    decision_id: str,
    request_path: str,
    timeout: float,
) -> None:
    """Wait for the daemon's request and check it against `expected` (decide's own)."""
    dispatch_id = expected.dispatch_id
    request = None
    outcome_seen = None
    deadline = time.monotonic() + timeout
    t0 = time.monotonic()
    next_ledger_look = t0 + 0.5
    while time.monotonic() < deadline:
        request = read_json_quiet(request_path)
        if request is not None:
            break
        if time.monotonic() >= next_ledger_look:
            next_ledger_look = time.monotonic() + 0.5
            ledger = open_ledger_ro(config)
            if ledger is not None:
                with contextlib.suppress(sqlite3.Error):
                    row = ledger.get_file(decision_id + ".json")
                    if row and row["outcome"] not in ("emitted", "pending"):
                        outcome_seen = row
                ledger.close()
            if outcome_seen:
                break
        time.sleep(0.01)
    latency_ms = round((time.monotonic() - t0) * 1000, 1)
    if request is None:
        detail = (
            f"record was {outcome_seen['outcome']}: {outcome_seen['reason']}"
            if outcome_seen
            else f"no request within {timeout:g} s"
        )
        check("request-written", False, file=request_path, detail=detail)
    else:
        check("request-written", True, file=request_path, latency_ms=latency_ms)
        want_request = expected.request
        check(
            "status",
            request.get("status") == want_request["status"],
            expected=want_request["status"],
            actual=request.get("status"),
        )
        check(
            "requires_approval",
            request.get("requires_approval") is want_request["requires_approval"],
            expected=want_request["requires_approval"],
            actual=request.get("requires_approval"),
        )
        target_keys = ("target_kind", "target_ref", "target_env", "execution_plane")
        want = {k: want_request[k] for k in target_keys}
        got = {k: request.get(k) for k in target_keys}
        check("target", got == want, expected=want, actual=got)
        check(
            "source",
            request.get("source_decision_id") == decision_id
            and request.get("dispatch_id") == dispatch_id
            and request.get("execution_mode") == EXECUTION_MODE,
            source_decision_id=request.get("source_decision_id"),
        )
        check("synthetic", request.get("synthetic") is True, actual=request.get("synthetic"))


def _cleanup(
    config: Config,
    check: Callable[..., bool],
    dispatch_id: str,
    record_path: str,
    request_path: str,
) -> None:
    """Remove the synthetic record and its request (unless approved)."""
    removed = []
    problems = []
    # The synthetic request always awaits approval (build_request), so a consumer holding
    # it can do nothing with it until someone approves it. Removed unless approved: an
    # approved one is left for the operator (and the check fails), never pulled away
    # from a consumer that may be acting on the approval.
    marker = approval_marker(config, dispatch_id)
    if os.path.lexists(marker):
        problems.append(f"{request_path}: approved ({marker}); left in place, remove by hand")
    for path in (record_path,) if problems else (record_path, request_path):
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror}")
    for folder in (config.records_dir, config.requests_dir):
        with contextlib.suppress(OSError):
            fsync_dir(folder)
    check("cleanup", not problems, removed=removed, detail="; ".join(problems))
