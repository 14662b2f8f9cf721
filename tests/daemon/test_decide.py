"""The decision rule, table-driven: outcome, reason and request for a record (injected clock)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import pytest
from hyops_dispatcher.decide import Episode, decide
from hyops_dispatcher.jsontext import DEPTH_CUT, dump_json, json_depth
from hyops_dispatcher.record import REQUEST_DEPTH_MAX

from .conftest import assert_valid
from .pure import NOW, NOW_ISO, config, rec, route_over


class Row(NamedTuple):
    """One request a fake EpisodeView knows: its route, id, decision times, approval."""

    route: str
    dispatch_id: str
    first: float
    last: float
    approval: str = "awaiting"


class Requests:
    """decide.EpisodeView as a table (the daemon's is episodes.LedgerEpisodes)."""

    def __init__(self, *rows: Row) -> None:
        self.rows = rows

    def around(self, route: str, epoch: float) -> tuple[Episode | None, Episode | None]:
        mine = sorted((r for r in self.rows if r.route == route), key=lambda r: r.first)
        before = [r for r in mine if r.first <= epoch]
        after = [r for r in mine if r.first > epoch]

        def ep(r: Row) -> Episode:
            return Episode(r.dispatch_id, r.first, r.last)

        return (ep(before[-1]) if before else None, ep(after[0]) if after else None)

    def request_between(self, routes: Sequence[str], lo: float, hi: float) -> bool:
        return any(r.route in routes and lo <= r.first <= hi for r in self.rows)

    def approval(self, dispatch_id: str) -> str:
        return next(r.approval for r in self.rows if r.dispatch_id == dispatch_id)


def at(offset: float) -> str:
    """A record timestamp `offset` seconds from NOW."""
    return datetime.fromtimestamp(NOW + offset, tz=UTC).isoformat()


FB_ID = "dispatch-20260921T141140Z-failback-aaaaaaaa"
CUT_ID = "dispatch-20260921T141140Z-cutover-cccccccc"
# rec() is decided at NOW - 200 (its timestamp_utc).
LAST = Requests(Row("failback", FB_ID, NOW - 100, NOW - 100, "not-required"))
CUTOVER_LAST = Row("cutover", CUT_ID, NOW - 200, NOW - 200)
# The cutover request, then a failback request after it (NOW - 100).
EPISODE_ENDED = Requests(CUTOVER_LAST, Row("failback", FB_ID, NOW - 100, NOW - 100))
# A failback before the cutover: that cutover's episode is still open.
EPISODE_OPEN = Requests(CUTOVER_LAST, Row("failback", FB_ID, NOW - 300, NOW - 300))


def declared(cutover: dict[str, Any], failback: Any = ("cutover",)) -> dict[str, Any]:
    """Routes with cutover overrides and failback declaring `supersedes` (None: nothing)."""
    routes = route_over("cutover", **cutover)
    if failback is not None:
        routes["failback"]["supersedes"] = list(failback)
    return routes


def slid(first: float, last: float, approval: str = "awaiting") -> Requests:
    return Requests(Row("cutover", CUT_ID, NOW + first, NOW + last, approval))


C600 = {"coalesce_seconds": 600}
C3600 = {"coalesce_seconds": 3600}

DECIDE_CASES = [
    # id, record, config overrides, episodes, force, outcome, reason part, status
    ("routed", rec(), {}, None, False, "emitted", "", "awaiting-approval"),
    (
        "global-no-approval",
        rec(),
        {"require_approval": False},
        None,
        False,
        "emitted",
        "",
        "queued",
    ),
    ("route-no-approval", rec(decision_type="failback"), {}, None, False, "emitted", "", "queued"),
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
        # A failback (declared: supersedes [cutover]) after the cutover ended that outage.
        "episode-ended-by-a-declared-route",
        rec(timestamp_utc=at(-50)),
        {"routes": declared(C600)},
        EPISODE_ENDED,
        False,
        "emitted",
        "",
        "awaiting-approval",
    ),
    (
        # Issue 15: a route that declares nothing ends no episode.
        "undeclared-route-ends-nothing",
        rec(timestamp_utc=at(-50)),
        {"routes": declared(C600, failback=None)},
        EPISODE_ENDED,
        False,
        "coalesced",
        CUT_ID,
        None,
    ),
    (
        # By decision time: a late cutover stamped before the failback joins its outage.
        "late-decision-before-the-failback-joins-its-outage",
        rec(timestamp_utc=at(-150)),
        {"routes": declared(C600)},
        EPISODE_ENDED,
        False,
        "coalesced",
        CUT_ID,
        None,
    ),
    (
        "same-episode-coalesced",
        rec(),
        {"routes": declared(C600)},
        EPISODE_OPEN,
        False,
        "coalesced",
        CUT_ID,
        None,
    ),
    (
        # The window slides on the episode's last decision, not its request's.
        "window-slides-on-the-last-decision",
        rec(timestamp_utc=at(-200)),
        {"routes": declared(C3600)},
        slid(-5000, -300),
        False,
        "coalesced",
        CUT_ID,
        None,
    ),
    (
        "window-past-the-last-decision",
        rec(timestamp_utc=at(-200)),
        {"routes": declared(C3600)},
        slid(-5000, -3900),
        False,
        "emitted",
        "",
        "awaiting-approval",
    ),
    (
        # An earlier re-emission delivered late still joins (the window has two sides).
        "late-decision-before-the-request-joins",
        rec(timestamp_utc=at(-700)),
        {"routes": declared(C3600)},
        slid(-200, -100),
        False,
        "coalesced",
        CUT_ID,
        None,
    ),
    (
        "expired-request-is-never-joined",
        rec(),
        {"routes": declared(C3600)},
        slid(-300, -300, "expired"),
        False,
        "emitted",
        "",
        "awaiting-approval",
    ),
    (
        "approved-request-folds-and-says-so",
        rec(),
        {"routes": declared(C3600)},
        slid(-1200, -1200, "approved"),
        False,
        "coalesced",
        "was approved before this decision arrived",
        None,
    ),
    (
        "request-taken-away-folds-and-says-so",
        rec(),
        {"routes": declared(C3600)},
        slid(-1200, -1200, "gone"),
        False,
        "coalesced",
        "taken out of the requests folder",
        None,
    ),
    (
        "replay-joins-nothing",
        rec(),
        {"routes": declared(C3600)},
        slid(-300, -300),
        True,
        "emitted",
        "replayed",
        "awaiting-approval",
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
    last: Any,
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
        episodes=last or None,
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


@pytest.mark.parametrize(
    ("approval", "outcome", "said"),
    [
        ("awaiting", "coalesced", False),
        ("approved", "coalesced", True),
        ("not-required", "coalesced", True),
        ("gone", "coalesced", True),
        ("expired", "emitted", False),
    ],
)
def test_a_decision_folded_after_approval_is_said(approval: str, outcome: str, said: bool) -> None:
    """Issue 15: folded into a request nobody will look at again -> `said` (the daemon logs
    coalesced-after-approval and counts it); the reason names the request and replay."""
    decision = decide(
        rec(),
        record_path="/srv/records/r.json",
        mtime=NOW,
        config=config(routes=declared(C3600)),
        now=NOW,
        episodes=slid(-1200, -600, approval),
    )
    assert (decision.outcome, decision.said) == (outcome, said)
    if said:
        assert CUT_ID in decision.reason and f"replay {rec()['decision_id']}" in decision.reason


def _supersedes(routes: dict[str, Any], requests: Requests, **record: Any) -> str | None:
    decision = decide(
        rec(decision_type="failback", **record),
        record_path="/srv/records/r.json",
        mtime=NOW,
        config=config(routes=routes),
        now=NOW,
        episodes=requests,
    )
    assert decision.outcome == "emitted" and decision.request is not None
    assert_valid("dispatch-request", decision.request)
    return decision.request.get("supersedes")


@pytest.mark.parametrize("approval", ["awaiting", "approved", "expired", "gone", "not-required"])
def test_a_request_names_the_declared_routes_request_still_awaiting(approval: str) -> None:
    requests = Requests(CUTOVER_LAST._replace(approval=approval))
    expected = CUT_ID if approval == "awaiting" else None
    assert _supersedes(declared({}), requests) == expected


def test_a_route_that_declares_nothing_supersedes_nothing() -> None:
    assert _supersedes(declared({}, failback=None), Requests(CUTOVER_LAST)) is None


def test_only_a_request_whose_decision_time_is_not_after_the_new_one_is_superseded() -> None:
    """A late failback stamped before the cutover supersedes nothing; a tie does."""
    requests = Requests(CUTOVER_LAST)  # decided at NOW - 200
    assert _supersedes(declared({}), requests, timestamp_utc=at(-1400)) is None
    assert _supersedes(declared({}), requests, timestamp_utc=at(-200)) == CUT_ID


def test_of_several_declared_routes_the_latest_awaiting_request_is_named() -> None:
    drain = Row("edge-drain", "dispatch-20260921T141140Z-edge-drain-dddddddd", NOW - 150, NOW - 150)
    routes = declared({}, failback=("cutover", "edge-drain"))
    routes["edge-drain"] = {**routes["cutover"], "target_ref": "platform/network/edge-drain@v1"}
    assert _supersedes(routes, Requests(CUTOVER_LAST, drain), timestamp_utc=at(-10)) == (
        drain.dispatch_id
    )
    approved = drain._replace(approval="approved")
    assert _supersedes(routes, Requests(CUTOVER_LAST, approved), timestamp_utc=at(-10)) == CUT_ID


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
    )
    req = decision.request
    assert req["rationale"] is None and req["checks"] == []
    assert req["approval_source"] == "route" and req["route"] == "failback"
    assert req["expires_at"] == "2026-09-21T15:13:20+00:00"
    assert req["timestamp_utc"] == NOW_ISO
    assert_valid("dispatch-request", req)
