"""Approval awareness in `list --json` and `status --json` (issue 10): each request shows
its approval state and age, read from the requests folder and the consumer's markers.

Expected shape (docs/INTERFACES.md "Metrics", approval state):
- `list --json`: every entry of `requests` gains `approval` (`awaiting`, `approved`,
  `expired`, `superseded`, `not-required`) and `age_s` (now - the request's timestamp_utc).
- `status --json`: `approvals` = {"awaiting": n, "approved": n, "expired": n,
  "superseded": n, "not-required": n}, `oldest_awaiting_age_s` (null when none) and
  `approvals_dir_readable` (bool).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from .conftest import Root, assert_valid, cli
from .request_seed import approve, request_doc, seed_request

pytestmark = pytest.mark.slow


def seed_four(root: Root, approvals: Path) -> dict[str, str]:
    """One request in each state that needs no `supersedes`; name -> dispatch_id."""
    now = time.time()
    docs = {
        "awaiting": request_doc("dec-awaiting", "cutover", now - 120),
        "approved": request_doc("dec-approved", "cutover", now - 300),
        # issued two hours ago with a one-hour TTL: expired an hour ago, never approved
        "expired": request_doc("dec-expired", "cutover", now - 7200, ttl=3600),
        "not-required": request_doc(
            "dec-queued", "failback", now - 60, ttl=3600, requires_approval=False
        ),
    }
    ids = {}
    for name, doc in docs.items():
        assert_valid("dispatch-request", doc)
        ids[name] = seed_request(root, doc)
    approve(approvals, ids["approved"])
    return ids


def test_list_json_shows_each_request_with_its_approval_state_and_age(
    python: str, root: Root, tmp_path: Path
) -> None:
    approvals = tmp_path / "approvals"
    root.write_config(approvals_dir=str(approvals))
    ids = seed_four(root, approvals)
    result = cli(python, root, "list", "--json")
    assert result.returncode == 0, result.stderr
    requests = {r["dispatch_id"]: r for r in json.loads(result.stdout)["requests"]}
    assert {name: requests[i]["approval"] for name, i in ids.items()} == {
        "awaiting": "awaiting",
        "approved": "approved",
        "expired": "expired",
        "not-required": "not-required",
    }
    assert requests[ids["awaiting"]]["age_s"] == pytest.approx(120, abs=30)
    assert requests[ids["expired"]]["age_s"] == pytest.approx(7200, abs=30)


def test_status_json_counts_requests_by_approval_state(
    python: str, root: Root, tmp_path: Path
) -> None:
    approvals = tmp_path / "approvals"
    root.write_config(approvals_dir=str(approvals))
    seed_four(root, approvals)
    assert cli(python, root, "once").returncode == 0
    status = json.loads(cli(python, root, "status", "--json").stdout)
    assert status["approvals"] == {
        "awaiting": 1,
        "approved": 1,
        "expired": 1,
        "superseded": 0,
        "not-required": 1,
    }
    assert status["oldest_awaiting_age_s"] == pytest.approx(120, abs=30)
    assert status["approvals_dir_readable"] is True


def test_a_missing_approvals_folder_is_reported_and_requests_stay_awaiting(
    python: str, root: Root, tmp_path: Path
) -> None:
    root.write_config(approvals_dir=str(tmp_path / "no-such-approvals"))
    seed_request(root, request_doc("dec-awaiting", "cutover", time.time() - 60))
    assert cli(python, root, "once").returncode == 0
    status = json.loads(cli(python, root, "status", "--json").stdout)
    assert status["approvals_dir_readable"] is False
    assert status["approvals"]["awaiting"] == 1
    listing = cli(python, root, "list", "--json")
    assert listing.returncode == 0
    assert [r["approval"] for r in json.loads(listing.stdout)["requests"]] == ["awaiting"]


def test_a_cutover_named_by_a_later_failback_is_superseded(
    python: str, root: Root, tmp_path: Path
) -> None:
    root.write_config(approvals_dir=str(tmp_path / "approvals"))
    now = time.time()
    cutover = seed_request(root, request_doc("dec-cutover", "cutover", now - 600))
    failback = request_doc("dec-failback", "failback", now - 60, requires_approval=False)
    failback["supersedes"] = cutover
    seed_request(root, failback)
    requests = json.loads(cli(python, root, "list", "--json").stdout)["requests"]
    assert {r["dispatch_id"]: r["approval"] for r in requests}[cutover] == "superseded"
