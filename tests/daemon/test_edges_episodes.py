"""DR episodes (issues 9 and 15): relations between routes are declared in the route
config (`supersedes: [cutover]` on failback); a request on a declaring route ends the
episode (a second outage is never folded into the first one's request) and names the
request it supersedes; a route that declares nothing does neither; the coalescing window
slides on the episode's last decision; a decision folded after its request was approved
is said (outcome reason, log line, counter, metric); the approval TTL stays visible."""

from __future__ import annotations

import json
from typing import Any

import pytest
from promtool_helpers import parse_metrics

from .conftest import ROUTES, Root, assert_valid, cli, now_iso, record, wait_for
from .edges import LIBFAKETIME, PY
from .request_seed import approve

pytestmark = pytest.mark.slow


def _routes(**cutover: Any) -> dict[str, Any]:
    """The test routes, failback declaring that it supersedes cutover."""
    routes = json.loads(json.dumps(ROUTES))
    routes["cutover"].update(cutover)
    routes["failback"]["supersedes"] = ["cutover"]
    return routes


# A no-approval route that declares nothing (examples/inputs.typical.yml has one).
EDGE_DRAIN = {
    "target_kind": "module",
    "target_ref": "platform/network/edge-drain@v1",
    "target_env": "prod",
    "execution_plane": "bastion-explicit",
    "requires_approval": False,
}


def _outcome(root: Root, name: str) -> str:
    return root.outcomes().get(name, ("",))[0]


def _drop_and_wait(root: Root, name: str, doc: dict[str, Any]) -> str:
    root.drop(name, doc)
    return wait_for(
        lambda: _outcome(root, name) not in ("", "pending") and _outcome(root, name),
        10,
        f"an outcome for {name}",
    )


def test_second_outage_after_a_failback_gets_its_own_cutover_request(root: Root, spawn) -> None:
    root.write_config(settle_seconds=0, routes=_routes(coalesce_seconds=600))
    daemon = spawn(PY, root).wait_ready()
    assert (
        _drop_and_wait(root, "c1.json", record("ep-c1", timestamp_utc=now_iso(-120))) == "emitted"
    )
    assert (
        _drop_and_wait(root, "f1.json", record("ep-f1", "failback", timestamp_utc=now_iso(-60)))
        == "emitted"
    )
    # A second outage 110 s after the first, within coalesce_seconds 600: the failback
    # ended the first episode, so this is a new request, not folded into ep-c1's.
    second = _drop_and_wait(root, "c2.json", record("ep-c2", timestamp_utc=now_iso(-10)))
    cutovers = sorted(
        d["source_decision_id"] for d in root.request_docs() if d["route"] == "cutover"
    )
    assert (second, cutovers) == ("emitted", ["ep-c1", "ep-c2"])
    # Re-emissions of ONE outage are still folded (coalescing keeps its purpose).
    assert (
        _drop_and_wait(root, "c3.json", record("ep-c3", timestamp_utc=now_iso(-5))) == "coalesced"
    )
    assert daemon.stop() == 0


def test_failback_supersedes_the_cutover_still_awaiting_approval(root: Root, spawn) -> None:
    root.write_config(settle_seconds=0, routes=_routes())
    daemon = spawn(PY, root).wait_ready()
    assert (
        _drop_and_wait(root, "c1.json", record("sup-c1", timestamp_utc=now_iso(-60))) == "emitted"
    )
    assert _drop_and_wait(root, "f1.json", record("sup-f1", "failback")) == "emitted"
    by_source = {d["source_decision_id"]: d for d in root.request_docs()}
    cutover, failback = by_source["sup-c1"], by_source["sup-f1"]
    assert cutover["status"] == "awaiting-approval"
    assert_valid("dispatch-request", failback)
    assert failback.get("supersedes") == cutover["dispatch_id"]
    # The operator sees the older request as superseded before approving it by mistake.
    listing = json.loads(cli(PY, root, "list", "--json").stdout)
    rows = {row["dispatch_id"]: row for row in listing["requests"]}
    assert "superseded" in json.dumps(rows[cutover["dispatch_id"]])
    assert "superseded" not in json.dumps(rows[failback["dispatch_id"]])
    human = cli(PY, root, "list").stdout
    line = next(ln for ln in human.splitlines() if cutover["dispatch_id"] in ln)
    assert "superseded" in line

    # status reads state.json, rewritten at most every 0.5 s after a change.
    def status_shows_superseded() -> bool:
        status = json.loads(cli(PY, root, "status", "--json").stdout)
        rows = {row["dispatch_id"]: row for row in status.get("requests_open", [])}
        return rows.get(cutover["dispatch_id"], {}).get("approval") == "superseded"

    wait_for(status_shows_superseded, 5, "status shows the cutover superseded")
    assert daemon.stop() == 0


@pytest.mark.skipif(not LIBFAKETIME, reason="needs faketime (make venv)")
def test_list_shows_expires_at_and_expired_requests(root: Root) -> None:
    root.write_config(settle_seconds=0, routes=_routes(approval_ttl_seconds=60))
    root.drop("c1.json", record("ttl-c1"))
    assert cli(PY, root, "once").returncode == 0
    (request,) = root.request_docs()
    assert request["status"] == "awaiting-approval" and "expires_at" in request
    fresh = json.loads(cli(PY, root, "list", "--json").stdout)["requests"][0]
    assert fresh.get("expires_at") == request["expires_at"]
    assert "expired" not in json.dumps(fresh)
    # Two minutes later (the operator's wall clock; nothing else changed) it has expired.
    later = {"LD_PRELOAD": LIBFAKETIME, "FAKETIME": "+120s", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    row = json.loads(cli(PY, root, "list", "--json", env=later).stdout)["requests"][0]
    assert "expired" in json.dumps(row)
    human = cli(PY, root, "list", env=later).stdout
    line = next(ln for ln in human.splitlines() if request["dispatch_id"] in ln)
    assert "expired" in line


def test_failback_request_names_the_cutover_request_it_supersedes(root: Root, spawn) -> None:
    """The request side of supersedes (the list/status view is the test above): only a
    request still awaiting approval is named; the episode state survives a restart."""
    approvals = root.path / "approvals"
    approvals.mkdir()
    root.write_config(
        settle_seconds=0, approvals_dir=str(approvals), routes=_routes(coalesce_seconds=600)
    )
    daemon = spawn(PY, root).wait_ready()
    assert _drop_and_wait(root, "c1.json", record("s-c1", timestamp_utc=now_iso(-120))) == "emitted"
    assert (
        _drop_and_wait(root, "f1.json", record("s-f1", "failback", timestamp_utc=now_iso(-90)))
        == "emitted"
    )
    assert daemon.stop() == 0
    # Restarted: the failback still ends the first outage (kept in the ledger).
    daemon = spawn(PY, root).wait_ready()
    assert _drop_and_wait(root, "c2.json", record("s-c2", timestamp_utc=now_iso(-60))) == "emitted"
    by_source = {d["source_decision_id"]: d for d in root.request_docs()}
    assert by_source["s-f1"].get("supersedes") == by_source["s-c1"]["dispatch_id"]
    assert "supersedes" not in by_source["s-c1"] and "supersedes" not in by_source["s-c2"]
    # The second cutover was approved: the next failback supersedes nothing.
    (approvals / f"{by_source['s-c2']['dispatch_id']}.approved.json").write_text("{}")
    assert (
        _drop_and_wait(root, "f2.json", record("s-f2", "failback", timestamp_utc=now_iso(-30)))
        == "emitted"
    )
    by_source = {d["source_decision_id"]: d for d in root.request_docs()}
    assert "supersedes" not in by_source["s-f2"]
    for doc in by_source.values():
        assert_valid("dispatch-request", doc)
    assert daemon.stop() == 0


def _metric(root: Root, name: str, **labels: str) -> float:
    text = (root.path / "state" / "metrics.prom").read_text()
    return parse_metrics(text).value("hyops_decision_dispatcher_" + name, **labels)


def _awaiting(root: Root, route: str, after: str) -> Any:
    """(status's awaiting count, the metrics file's awaiting gauge of `route`), once
    state.json has caught up with decision `after` and the two agree."""

    def agreed() -> Any:
        status = json.loads(cli(PY, root, "status", "--json").stdout)
        if status.get("last_decision_id") != after:
            return None
        try:
            gauge = _metric(root, "requests_awaiting_approval", route=route)
        except (OSError, KeyError):
            return None
        count = status.get("approvals", {}).get("awaiting")
        return (count, gauge) if count == gauge else None

    return wait_for(agreed, 10, f"status and metrics agree after {after}")


def test_an_undeclared_route_never_silences_a_pending_cutover(root: Root, spawn) -> None:
    """Issue 15: routine traffic on a route that declares nothing (edge-drain, no approval)
    neither supersedes the cutover awaiting approval nor ends its episode."""
    routes = json.loads(json.dumps(ROUTES))
    routes["cutover"]["coalesce_seconds"] = 3600
    routes["edge-drain"] = EDGE_DRAIN
    root.write_config(settle_seconds=0, routes=routes)
    daemon = spawn(PY, root).wait_ready()
    assert _drop_and_wait(root, "c1.json", record("u-c1", timestamp_utc=now_iso(-60))) == "emitted"
    drain = record("u-d1", "edge-drain", timestamp_utc=now_iso(-30))
    assert _drop_and_wait(root, "d1.json", drain) == "emitted"
    by_source = {d["source_decision_id"]: d for d in root.request_docs()}
    assert "supersedes" not in by_source["u-d1"]
    assert _awaiting(root, "cutover", "u-d1") == (1, 1)
    # The same outage's next cutover is still folded: edge-drain did not end the episode.
    assert _drop_and_wait(root, "c2.json", record("u-c2", timestamp_utc=now_iso(-5))) == (
        "coalesced"
    )
    assert sorted(d["source_decision_id"] for d in root.request_docs()) == ["u-c1", "u-d1"]
    assert daemon.stop() == 0


def test_a_late_failback_stamped_before_the_cutover_supersedes_nothing(root: Root, spawn) -> None:
    """A failback whose decision time is before the cutover's (delivered late) belongs to
    an earlier episode: the cutover still awaits approval and pages."""
    root.write_config(settle_seconds=0, routes=_routes())
    daemon = spawn(PY, root).wait_ready()
    assert _drop_and_wait(root, "c1.json", record("l-c1", timestamp_utc=now_iso(-10))) == "emitted"
    late = record("l-f0", "failback", timestamp_utc=now_iso(-1210))
    assert _drop_and_wait(root, "f0.json", late) == "emitted"
    by_source = {d["source_decision_id"]: d for d in root.request_docs()}
    assert "supersedes" not in by_source["l-f0"]
    assert _awaiting(root, "cutover", "l-f0") == (1, 1)
    assert daemon.stop() == 0


def test_a_failback_in_the_same_batch_supersedes_its_staged_cutover(root: Root) -> None:
    """Deterministic whatever the timing: both records in one pass (one batch), the
    cutover's request still staged when the failback is decided."""
    root.write_config(settle_seconds=0, routes=_routes())
    root.drop("a-c1.json", record("b-c1", timestamp_utc=now_iso(-60)))
    root.drop("b-f1.json", record("b-f1", "failback", timestamp_utc=now_iso(-30)))
    assert cli(PY, root, "once").returncode == 0
    by_source = {d["source_decision_id"]: d for d in root.request_docs()}
    assert by_source["b-f1"].get("supersedes") == by_source["b-c1"]["dispatch_id"]


def test_one_request_for_a_two_hour_outage_re_emitted_every_600_s(root: Root, spawn) -> None:
    """The typical example's story: coalesce_seconds 3600, the decision service re-emits
    every 600 s for 2 h (13 decisions), an edge-drain in the middle and the request
    approved after the third decision: one cutover request; the decisions folded after
    the approval are said, each one (log line, counter, metric)."""
    approvals = root.path / "approvals"
    approvals.mkdir()
    routes = _routes(coalesce_seconds=3600)
    routes["edge-drain"] = EDGE_DRAIN
    root.write_config(settle_seconds=0, approvals_dir=str(approvals), routes=routes)
    daemon = spawn(PY, root).wait_ready()
    outcomes = []
    for i in range(13):
        offset = -7200 + 600 * i
        outcomes.append(
            _drop_and_wait(
                root, f"c{i:02}.json", record(f"lo-c{i:02}", timestamp_utc=now_iso(offset))
            )
        )
        if i == 2:
            (first,) = root.request_docs()
            approve(approvals, first["dispatch_id"])
        if i == 5:
            drain = record("lo-d1", "edge-drain", timestamp_utc=now_iso(offset + 60))
            assert _drop_and_wait(root, "d1.json", drain) == "emitted"
    assert outcomes == ["emitted"] + ["coalesced"] * 12
    cutovers = [d for d in root.request_docs() if d["route"] == "cutover"]
    assert [d["source_decision_id"] for d in cutovers] == ["lo-c00"]
    said = [e for e in root.log_lines() if e.get("event") == "coalesced-after-approval"]
    assert sorted(e["decision_id"] for e in said) == [f"lo-c{i:02}" for i in range(3, 13)]
    assert all(e["dispatch_id"] == cutovers[0]["dispatch_id"] for e in said)
    assert all(e["level"] == "WARNING" for e in said)
    wait_for(
        lambda: root.state()["counters"].get("coalesced_after_approval") == 10, 5, "the counter"
    )
    assert_valid("dispatcher-state", root.state())
    wait_for(lambda: _metric(root, "coalesced_after_approval_total") == 10, 5, "the metric")
    assert daemon.stop() == 0


def test_a_failed_first_failover_is_never_silent_and_can_be_dispatched_again(
    root: Root, spawn
) -> None:
    """The cutover request was approved and its run failed; the decision service asks
    again 20 minutes later. That decision is folded, and says so where an operator looks
    (list, log, status counter, metric); `replay` makes the new request, and the next
    re-emission folds into that one (awaiting approval, so quietly)."""
    approvals = root.path / "approvals"
    approvals.mkdir()
    root.write_config(
        settle_seconds=0, approvals_dir=str(approvals), routes=_routes(coalesce_seconds=3600)
    )
    daemon = spawn(PY, root).wait_ready()
    assert _drop_and_wait(root, "c1.json", record("ff-c1", timestamp_utc=now_iso(-1800))) == (
        "emitted"
    )
    (first,) = root.request_docs()
    approve(approvals, first["dispatch_id"])
    assert _drop_and_wait(root, "c2.json", record("ff-c2", timestamp_utc=now_iso(-600))) == (
        "coalesced"
    )
    reason = root.outcomes()["c2.json"][1]
    assert "approved" in reason and first["dispatch_id"] in reason and "replay ff-c2" in reason
    (line,) = [e for e in root.log_lines() if e.get("event") == "coalesced-after-approval"]
    assert (line["decision_id"], line["dispatch_id"], line["level"]) == (
        "ff-c2",
        first["dispatch_id"],
        "WARNING",
    )
    listing = cli(PY, root, "list").stdout
    assert "ff-c2" in listing and "approved" in listing
    wait_for(
        lambda: root.state()["counters"].get("coalesced_after_approval") == 1, 5, "the counter"
    )
    wait_for(lambda: _metric(root, "coalesced_after_approval_total") == 1, 5, "the metric")
    # The operator dispatches it again: a new request, awaiting approval (it pages).
    replayed = cli(PY, root, "replay", "ff-c2", "--timeout", "10")
    assert replayed.returncode == 0, replayed.stderr
    by_source = {d["source_decision_id"]: d for d in root.request_docs()}
    assert by_source["ff-c2"]["status"] == "awaiting-approval"
    assert _awaiting(root, "cutover", "ff-c2") == (1, 1)
    # The next re-emission joins the new request (awaiting: no second page, no warning).
    assert _drop_and_wait(root, "c3.json", record("ff-c3", timestamp_utc=now_iso(-10))) == (
        "coalesced"
    )
    assert root.outcomes()["c3.json"][1].count(by_source["ff-c2"]["dispatch_id"]) == 1
    said = [e for e in root.log_lines() if e.get("event") == "coalesced-after-approval"]
    assert [e["decision_id"] for e in said] == ["ff-c2"]
    assert daemon.stop() == 0
