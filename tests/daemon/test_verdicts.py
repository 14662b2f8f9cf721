"""Table tests of the file verdicts in the pure core: judge_file, judge_unreadable,
judge_prior, judge_collision, judge_replay and the one health rule. No I/O: a FileSig is
built by hand, the clock is a number. decide() has its own table in test_decide.py."""

from __future__ import annotations

import json
import os
import stat
from typing import Any

import pytest
from hyops_dispatcher.config import parse_config
from hyops_dispatcher.decide import decide
from hyops_dispatcher.ids import iso_ts
from hyops_dispatcher.record import RecordRejected
from hyops_dispatcher.report import judge_health
from hyops_dispatcher.verdicts import (
    ADOPTED_REASON,
    COUNTED_REASON,
    IN_THIS_BATCH,
    FileSig,
    KnownFile,
    PriorDecision,
    judge_collision,
    judge_file,
    judge_prior,
    judge_replay,
    judge_unreadable,
)

from .conftest import BASE_CONFIG

NOW = 1_790_000_000.0
CFG = parse_config(
    json.dumps({**BASE_CONFIG, "settle_seconds": 2, "max_record_bytes": 4096}).encode(),
    "/srv/dd/config/config.json",
)
REG = stat.S_IFREG | 0o644
SIG = FileSig(100, int((NOW - 10) * 1e9), int((NOW - 10) * 1e9), 42, REG)
OTHER = SIG._replace(mtime_ns=SIG.mtime_ns + 1)


def known(outcome: str, sig: Any = SIG, **kw: Any) -> Any:
    return KnownFile(sig._replace(mode=0), outcome, **kw)


@pytest.mark.parametrize(
    ("name", "sig", "known_file", "look_again", "action", "outcome", "reason"),
    [
        ("a.json", SIG, None, False, "read", None, None),
        ("a.json", SIG, known("emitted"), False, "skip", None, None),
        ("a.json", SIG, known("rejected"), False, "skip", None, None),
        ("a.json", SIG, known("duplicate"), False, "skip", None, None),
        ("a.json", OTHER, known("emitted"), False, "read", None, None),  # in-place edit
        ("a.json", SIG._replace(inode=7), known("emitted"), False, "read", None, None),
        ("a.json", SIG._replace(ctime_ns=1), known("rejected"), False, "read", None, None),
        ("a.json", SIG, known("emitted", gone=True), False, "read", None, None),  # re-dropped
        ("a.json", SIG, known("emitted"), True, "read", None, None),  # explain looks again
        ("a.json", SIG, known("pending", retry_at=NOW + 1), False, "skip", None, None),
        ("a.json", SIG, known("pending", retry_at=NOW), False, "read", None, None),
        # A deadline an hour away (the wall clock stepped back): read now, not in an hour.
        ("a.json", SIG, known("pending", retry_at=NOW + 3600), False, "read", None, None),
        (
            os.fsdecode(b"\xff.json"),
            SIG,
            None,
            False,
            "decided",
            "rejected",
            "file name is not valid UTF-8",
        ),
        (
            "l.json",
            SIG._replace(mode=stat.S_IFLNK | 0o777),
            None,
            False,
            "decided",
            "rejected",
            "symlink (never followed)",
        ),
        (
            "f.json",
            SIG._replace(mode=stat.S_IFIFO | 0o644),
            None,
            False,
            "decided",
            "rejected",
            "not a regular file",
        ),
        (
            "d.json",
            SIG._replace(mode=stat.S_IFDIR | 0o755),
            None,
            False,
            "decided",
            "rejected",
            "not a regular file",
        ),
        ("big.json", SIG._replace(size=4096), None, False, "read", None, None),
        (
            "big.json",
            SIG._replace(size=4097),
            None,
            False,
            "decided",
            "rejected",
            "file is 4097 bytes, over max_record_bytes 4096",
        ),
        # A changed symlink is rejected again, not skipped.
        (
            "l.json",
            OTHER._replace(mode=stat.S_IFLNK | 0o777),
            known("rejected"),
            False,
            "decided",
            "rejected",
            "symlink (never followed)",
        ),
    ],
)
def test_judge_file(
    name: str,
    sig: Any,
    known_file: Any,
    look_again: bool,
    action: str,
    outcome: str | None,
    reason: str | None,
) -> None:
    verdict = judge_file(sig, name, CFG, known_file, NOW, look_again)
    assert verdict.action == action
    if outcome is None:
        assert verdict.outcome is None
    else:
        assert (verdict.outcome.outcome, verdict.outcome.reason) == (outcome, reason)


FRESH = SIG._replace(mtime_ns=int((NOW - 0.5) * 1e9))  # changed half a second ago
FUTURE = SIG._replace(mtime_ns=int((NOW + 10 * 365 * 86400) * 1e9))


@pytest.mark.parametrize(
    ("sig", "problem", "known_file", "outcome", "log", "retry_at"),
    [
        # Still being written: pending until settle_seconds after the last change.
        (FRESH, RecordRejected("empty file", True), None, "pending", True, NOW - 0.5 + 2.05),
        # Seen pending before, unchanged: the first deadline holds, nothing new to log.
        (
            FRESH,
            RecordRejected("empty file", True),
            known("pending", FRESH, retry_at=NOW + 1.0),
            "pending",
            False,
            NOW + 1.0,
        ),
        # Seen pending before, its deadline an hour away (the wall clock stepped back):
        # bounded to a settle wait from now.
        (
            FRESH,
            RecordRejected("empty file", True),
            known("pending", FRESH, retry_at=NOW + 3600),
            "pending",
            False,
            NOW + 2.05,
        ),
        # Settled (changed 10 s ago): rejected.
        (SIG, RecordRejected("invalid JSON: x", True), None, "rejected", True, 0.0),
        # Not retryable (JSON but not an object): rejected at once.
        (FRESH, RecordRejected("JSON is an array, not an object"), None, "rejected", True, 0.0),
        # Stamped in the future (clock skew): the deadline counts from now, not from then.
        (FUTURE, RecordRejected("empty file", True), None, "pending", True, NOW + 2.05),
    ],
)
def test_judge_unreadable(
    sig: Any, problem: Any, known_file: Any, outcome: str, log: bool, retry_at: float
) -> None:
    got = judge_unreadable(problem, sig, known_file, CFG, NOW)
    assert (got.outcome, got.log) == (outcome, log)
    assert got.retry_at == pytest.approx(retry_at, abs=1e-6)
    assert problem.reason in got.reason


def prior(
    outcome: str,
    file: str | None = "a.json",
    dispatch_id: str | None = "dispatch-x",
    reason: str = "",
) -> Any:
    return PriorDecision("dec-1", outcome, dispatch_id, "cutover", NOW, file, reason, NOW)


@pytest.mark.parametrize(
    ("name", "the_prior", "known_file", "outcome", "log", "reason"),
    [
        ("a.json", None, None, None, None, None),
        ("a.json", prior("stale"), None, None, None, None),  # not dispatched: decide() again
        ("a.json", prior("unrouted"), None, None, None, None),
        # The same file touched: keeps its outcome quietly.
        (
            "a.json",
            prior("emitted"),
            known("emitted", decision_id="dec-1"),
            "emitted",
            False,
            "already handled: emitted as dispatch-x",
        ),
        # A request adopted after a crash, its file seen for the first time.
        (
            "a.json",
            prior("emitted", reason=ADOPTED_REASON),
            None,
            "emitted",
            True,
            "request found in the requests folder (recovered after a restart)",
        ),
        # The file rewritten in place (it was pending in between): counted once, when it
        # was decided, not per rewrite (issue 9).
        (
            "a.json",
            prior("emitted"),
            known("pending"),
            "emitted",
            False,
            "already handled: emitted as dispatch-x",
        ),
        # An adopted request already counted for this file once.
        (
            "a.json",
            prior("emitted", reason=COUNTED_REASON),
            known("pending"),
            "emitted",
            False,
            "already handled",
        ),
        (
            "a.json",
            prior("emitted", file=None, reason=ADOPTED_REASON),
            None,
            "emitted",
            True,
            "request found in the requests folder (recovered after a restart)",
        ),
        (
            "a.json",
            prior("coalesced"),
            known("coalesced", decision_id="dec-1"),
            "coalesced",
            False,
            "already handled",
        ),
        # Another file with a dispatched decision_id: duplicate, never a second request.
        ("b.json", prior("emitted"), None, "duplicate", True, "from a.json; no new request"),
        ("b.json", prior("coalesced"), None, "duplicate", True, "already coalesced"),
    ],
)
def test_judge_prior(
    name: str, the_prior: Any, known_file: Any, outcome: str | None, log: bool, reason: str
) -> None:
    got = judge_prior(name, "dec-1", the_prior, known_file)
    if outcome is None:
        assert got is None
        return
    assert (got.outcome, got.log, got.source) == (outcome, log, "prior")
    assert reason in got.reason
    assert got.decision is None and not got.write  # nothing written for these


def emitted_decision() -> Any:
    doc = {
        "decision_id": "dec-1",
        "decision_type": "cutover",
        "timestamp_utc": "2026-09-21T14:13:00Z",
    }
    decision = decide(doc, record_path="/srv/records/a.json", mtime=0, config=CFG, now=NOW)
    assert decision.outcome == "emitted"
    return decision


@pytest.mark.parametrize(
    ("existing", "outcome", "write", "reason"),
    [
        (None, "emitted", True, ""),
        ({"source_decision_id": "dec-1"}, "emitted", False, "already in the requests folder"),
        ({"source_decision_id": "dec-2"}, "rejected", False, "already used by decision 'dec-2'"),
        (IN_THIS_BATCH, "rejected", False, "(a decision in the same batch)"),
        ({}, "rejected", False, "already used by decision None"),
    ],
)
def test_judge_collision(existing: Any, outcome: str, write: bool, reason: str) -> None:
    decision = emitted_decision()
    got = judge_collision(decision, existing)
    assert (got.outcome, got.write) == (outcome, write)
    assert reason in got.reason
    # A decision row is kept only when the request is (or already was) this decision's.
    assert (got.decision is not None) == (outcome == "emitted")


@pytest.mark.parametrize(
    ("the_prior", "held", "existing", "refusal"),
    [
        (None, None, None, "not in the ledger"),
        (prior("emitted"), None, None, "already dispatched as dispatch-x"),
        (prior("stale"), None, None, None),
        (prior("coalesced"), "dec-1", None, None),  # coalesced may get its own request
        (prior("stale"), "dec-2", None, "now holds decision dec-2, not dec-1"),
        (prior("stale"), "dec-1", {"source_decision_id": "dec-1", "dispatch_id": "D"}, "(D)"),
        (prior("stale"), "dec-1", {"source_decision_id": "dec-9"}, "used by decision 'dec-9'"),
        (prior("unrouted"), "dec-1", None, None),
    ],
)
def test_judge_replay(the_prior: Any, held: Any, existing: Any, refusal: str | None) -> None:
    got = judge_replay("dec-1", the_prior, held, existing)
    if refusal is None:
        assert got is None
    else:
        assert got is not None and refusal in got


def state_at(age: float, status: str = "running") -> dict[str, Any]:
    return {"timestamp_utc": iso_ts(NOW - age), "status": status}


@pytest.mark.parametrize(
    ("doc", "running", "healthy"),
    [
        (state_at(0), True, True),
        (state_at(2 * 60 + 5), True, True),  # the bound itself (heartbeat 60)
        (state_at(2 * 60 + 5.01), True, False),
        (state_at(0), False, False),  # nobody holds the lock
        (state_at(0, "degraded"), True, False),
        (state_at(0, "stopped"), True, False),
        ({}, True, False),  # no state.json yet
        ({"timestamp_utc": "yesterday", "status": "running"}, True, False),
    ],
)
def test_judge_health_is_the_one_freshness_rule(doc: dict, running: bool, healthy: bool) -> None:
    got = judge_health(doc, running, 60, NOW)
    assert got["healthy"] is healthy and got["running"] is running
