"""Issue 9, DR episodes: a request on another route ends the episode (a second outage is
never folded into the first one's request), a failback names the cutover request it
supersedes, and the approval TTL stays visible (expired requests are listed as expired)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conftest import ROUTES, Root, assert_valid, cli, now_iso, record, wait_for
from .edges import LIBFAKETIME, PY

pytestmark = pytest.mark.slow


def _routes(**cutover: Any) -> dict[str, Any]:
    routes = json.loads(json.dumps(ROUTES))
    routes["cutover"].update(cutover)
    return routes


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
    root.write_config(settle_seconds=0)
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
