"""The decision rule, table-driven: outcome, reason and request for a record (injected clock)."""

from __future__ import annotations

from typing import Any

import pytest
from hyops_dispatcher.decide import LastEmit, decide
from hyops_dispatcher.jsontext import DEPTH_CUT, dump_json, json_depth
from hyops_dispatcher.record import REQUEST_DEPTH_MAX

from .conftest import assert_valid
from .pure import NOW, NOW_ISO, config, rec, route_over

LAST = {"failback": LastEmit(NOW - 100, "dispatch-20260921T141140Z-failback-aaaaaaaa")}

CUTOVER_LAST = LastEmit(NOW - 200, "dispatch-20260921T141140Z-cutover-cccccccc")
# The last cutover request, then a failback request after it: the episode is over.
EPISODE_ENDED = {"cutover": CUTOVER_LAST, "failback": LAST["failback"]}
# A failback before the last cutover: that cutover's episode is still open.
EPISODE_OPEN = {"cutover": CUTOVER_LAST, "failback": LastEmit(NOW - 300, LAST["failback"][1])}

DECIDE_CASES = [
    # id, record, config overrides, last_emit, force, outcome, reason part, status
    ("routed", rec(), {}, {}, False, "emitted", "", "awaiting-approval"),
    ("global-no-approval", rec(), {"require_approval": False}, {}, False, "emitted", "", "queued"),
    ("route-no-approval", rec(decision_type="failback"), {}, {}, False, "emitted", "", "queued"),
    (
        "route-overrides-global",
        rec(decision_type="cutover"),
        {"require_approval": False, "routes": route_over("cutover", requires_approval=True)},
        {},
        False,
        "emitted",
        "",
        "awaiting-approval",
    ),
    ("unrouted", rec(decision_type="reboot"), {}, {}, False, "unrouted", "no route", None),
    (
        "case-near-miss",
        rec(decision_type="CutOver"),
        {},
        {},
        False,
        "unrouted",
        "differs only by case",
        None,
    ),
    (
        "stale",
        rec(timestamp_utc="2026-09-19T14:10:00+00:00"),
        {},
        {},
        False,
        "stale",
        "over max_record_age_seconds",
        None,
    ),
    (
        "stale-replayed",
        rec(timestamp_utc="2026-09-19T14:10:00+00:00"),
        {},
        {},
        True,
        "emitted",
        "replayed",
        "awaiting-approval",
    ),
    (
        "queued-local-exec",
        rec(status="queued-local-exec"),
        {},
        {},
        False,
        "skipped",
        "queued-local-exec",
        None,
    ),
    (
        "proposed-is-dispatched",
        rec(status="proposed"),
        {},
        {},
        False,
        "emitted",
        "",
        "awaiting-approval",
    ),
    (
        "coalesced",
        rec(decision_type="failback"),
        {"routes": route_over("failback", coalesce_seconds=600)},
        LAST,
        False,
        "coalesced",
        "dispatch-20260921T141140Z-failback-aaaaaaaa",
        None,
    ),
    (
        "outside-window",
        rec(decision_type="failback"),
        {"routes": route_over("failback", coalesce_seconds=60)},
        LAST,
        False,
        "emitted",
        "",
        "queued",
    ),
    ("coalesce-off", rec(decision_type="failback"), {}, LAST, False, "emitted", "", "queued"),
    (
        # A synthetic check waits for approval even on a no-approval route (issue 9).
        "handoff-never-coalesced",
        rec(decision_id="handoff-check-x", decision_type="failback"),
        {"routes": route_over("failback", coalesce_seconds=600)},
        LAST,
        False,
        "emitted",
        "",
        "awaiting-approval",
    ),
    (
        # A failback after the last cutover ended that outage: a new cutover request.
        "episode-ended-by-other-route",
        rec(),
        {"routes": route_over("cutover", coalesce_seconds=600)},
        EPISODE_ENDED,
        False,
        "emitted",
        "",
        "awaiting-approval",
    ),
    (
        "same-episode-coalesced",
        rec(),
        {"routes": route_over("cutover", coalesce_seconds=600)},
        EPISODE_OPEN,
        False,
        "coalesced",
        "dispatch-20260921T141140Z-cutover-cccccccc",
        None,
    ),
    (
        "future-refused",
        rec(timestamp_utc="2100-01-01T00:00:00Z"),
        {},
        {},
        False,
        "rejected",
        "in the future",
        None,
    ),
    (
        # Ahead of the clock but within max_record_age_seconds: held, decided later.
        "future-held",
        rec(timestamp_utc="2026-09-21T14:40:00+00:00"),
        {},
        {},
        False,
        "pending",
        "held until it is not",
        None,
    ),
    (
        "future-within-skew",
        rec(timestamp_utc="2026-09-21T14:17:00+00:00"),
        {},
        {},
        False,
        "emitted",
        "",
        "awaiting-approval",
    ),
    (
        "future-id-time-refused",
        rec(decision_id="decision-21000101T000000Z-cutover-x", timestamp_utc=None),
        {},
        {},
        False,
        "rejected",
        "from decision_id",
        None,
    ),
    (
        # Years before 1000 keep a four-digit year in the id (glibc's %Y would not).
        "year-5-replayed",
        rec(timestamp_utc="0005-01-01T00:00:00Z"),
        {},
        {},
        True,
        "emitted",
        "replayed",
        "awaiting-approval",
    ),
    (
        "out-of-range-timestamp-uses-id-time",
        rec(timestamp_utc="9999-12-31T23:59:59-23:59"),
        {},
        {},
        False,
        "emitted",
        "",
        "awaiting-approval",
    ),
]


@pytest.mark.parametrize(
    ("record", "over", "last", "force", "outcome", "reason", "status"),
    [c[1:] for c in DECIDE_CASES],
    ids=[c[0] for c in DECIDE_CASES],
)
def test_decide(
    record: dict[str, Any],
    over: dict[str, Any],
    last: dict[str, Any],
    force: bool,
    outcome: str,
    reason: str,
    status: str | None,
) -> None:
    cfg = config(**over)
    decision = decide(
        record,
        record_path="/srv/records/r.json",
        mtime=NOW,
        config=cfg,
        now=NOW,
        last_emit=last,
        force=force,
    )
    assert decision.outcome == outcome
    assert reason in decision.reason
    if status is None:
        assert decision.request is None
    else:
        assert decision.request is not None
        assert decision.request["status"] == status
        assert decision.request["requires_approval"] is (status == "awaiting-approval")
        assert decision.request["dispatch_id"] == decision.dispatch_id
        assert_valid("dispatch-request", decision.request)


@pytest.mark.parametrize("awaiting", [True, False])
def test_a_request_names_the_other_routes_request_still_awaiting_approval(awaiting: bool) -> None:
    asked: list[str] = []

    def awaits(dispatch_id: str) -> bool:
        asked.append(dispatch_id)
        return awaiting

    decision = decide(
        rec(decision_type="failback"),
        record_path="/srv/records/r.json",
        mtime=NOW,
        config=config(),
        now=NOW,
        last_emit={"cutover": CUTOVER_LAST},
        still_waiting=awaits,
    )
    assert asked == [CUTOVER_LAST.dispatch_id]
    assert decision.request is not None
    assert decision.request.get("supersedes") == (CUTOVER_LAST.dispatch_id if awaiting else None)
    assert_valid("dispatch-request", decision.request)


def test_a_synthetic_request_always_awaits_approval_and_says_so() -> None:
    decision = decide(
        rec(decision_id="handoff-check-1", decision_type="failback"),
        record_path="/srv/records/r.json",
        mtime=NOW,
        config=config(require_approval=False),
        now=NOW,
        last_emit={"cutover": CUTOVER_LAST},
        still_waiting=lambda _id: True,  # a synthetic check supersedes nothing
    )
    req = decision.request
    assert req is not None and "supersedes" not in req
    assert (req["status"], req["requires_approval"], req["approval_source"], req["synthetic"]) == (
        "awaiting-approval",
        True,
        "synthetic",
        True,
    )
    assert_valid("dispatch-request", req)


def test_carried_checks_are_cut_at_the_request_depth() -> None:
    deep: Any = []
    for _ in range(200):
        deep = [deep]
    decision = decide(
        rec(checks=deep),
        record_path="/srv/records/r.json",
        mtime=NOW,
        config=config(),
        now=NOW,
        last_emit={},
    )
    assert decision.request is not None
    assert json_depth(dump_json(decision.request).decode()) == REQUEST_DEPTH_MAX
    assert DEPTH_CUT in dump_json(decision.request).decode()


def test_request_carries_record_fields_and_expiry() -> None:
    cfg = config()
    decision = decide(
        rec(decision_type="failback", rationale=["not", "a", "string"], checks="nope"),
        record_path="/srv/records/r.json",
        mtime=NOW,
        config=cfg,
        now=NOW,
        last_emit={},
    )
    req = decision.request
    assert req["rationale"] is None and req["checks"] == []
    assert req["approval_source"] == "route" and req["route"] == "failback"
    assert req["expires_at"] == "2026-09-21T15:13:20+00:00"
    assert req["timestamp_utc"] == NOW_ISO
    assert_valid("dispatch-request", req)
