"""Replay that cannot surprise (issue 16): `replay` of a decision older than the latest
request of another route, or while a request of an opposite route (`supersedes`, either
way) awaits approval, says so in one line and writes nothing without `--yes`; the request
and `list` show the decision's age, not only the file's. Real daemon and CLI processes.

Both failed on the code before: the replay wrote its request at once (exit 0), and
`list` showed only the file's age (`0s` for a replayed 2-day-old cutover)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hyops_dispatcher.ids import parse_iso_utc

from .conftest import ROUTES, Root, cli, now_iso, record, wait_for

pytestmark = pytest.mark.slow

TWO_DAYS = 2 * 86400


def _routes() -> dict[str, Any]:
    """cutover and failback, failback declaring it supersedes cutover, both approved."""
    routes = json.loads(json.dumps(ROUTES))
    routes["failback"].update(requires_approval=True, supersedes=["cutover"])
    return routes


def _setup(root: Root, tmp_path) -> None:
    (tmp_path / "approvals").mkdir()
    root.write_config(routes=_routes(), approvals_dir=str(tmp_path / "approvals"))


def _sources(root: Root) -> list[str]:
    return sorted(doc["source_decision_id"] for doc in root.request_docs())


def test_replay_older_than_another_routes_request_needs_yes(python: str, root: Root, tmp_path):
    _setup(root, tmp_path)
    root.drop("old.json", record("cut-old", timestamp_utc=now_iso(-TWO_DAYS)))
    root.drop("fb.json", record("fb-new", "failback", timestamp_utc=now_iso(-3600)))
    assert cli(python, root, "once").returncode == 0
    assert _sources(root) == ["fb-new"]  # the cutover is stale

    refused = cli(python, root, "replay", "cut-old")
    assert refused.returncode != 0, refused.stdout
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert "--yes" in lines[0] and "failback" in lines[0] and "older" in lines[0], lines[0]
    assert "awaits approval" in lines[0], lines[0]  # and the failback is awaiting too
    assert _sources(root) == ["fb-new"]  # nothing written

    done = cli(python, root, "replay", "cut-old", "--yes")
    assert done.returncode == 0, done.stderr
    assert _sources(root) == ["cut-old", "fb-new"]


def test_replay_while_an_opposite_request_awaits_asks_the_running_daemon(
    python: str, root: Root, tmp_path, spawn
) -> None:
    _setup(root, tmp_path)
    root.drop("fb.json", record("fb-wait", "failback", timestamp_utc=now_iso(-3600)))
    daemon = spawn(python, root).wait_ready()
    wait_for(lambda: _sources(root) == ["fb-wait"], 10, "the failback request")
    # A newer cutover the rules held back (the decision service said it ran it).
    root.drop("cut.json", record("cut-skip", status="queued-local-exec"))
    wait_for(lambda: root.outcomes().get("cut.json", ("",))[0] == "skipped", 10, "skipped")

    refused = cli(python, root, "replay", "cut-skip", "--timeout", "20")
    assert refused.returncode != 0, refused.stdout
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert "awaits approval" in lines[0] and "--yes" in lines[0], lines[0]
    assert "older" not in lines[0], lines[0]  # this decision is the newer one
    assert _sources(root) == ["fb-wait"]

    done = cli(python, root, "replay", "cut-skip", "--yes", "--timeout", "20")
    assert done.returncode == 0, done.stderr
    assert _sources(root) == ["cut-skip", "fb-wait"]
    assert daemon.stop() == 0


def test_replay_with_no_conflict_needs_no_yes(python: str, root: Root, tmp_path) -> None:
    _setup(root, tmp_path)
    root.drop("old.json", record("cut-alone", timestamp_utc=now_iso(-TWO_DAYS)))
    assert cli(python, root, "once").returncode == 0
    done = cli(python, root, "replay", "cut-alone")
    assert done.returncode == 0, done.stderr
    assert _sources(root) == ["cut-alone"]


def test_list_shows_the_decisions_age_of_a_replayed_cutover(
    python: str, root: Root, tmp_path, spawn
) -> None:
    _setup(root, tmp_path)
    decided = now_iso(-TWO_DAYS - 600)
    root.drop("old.json", record("cut-2d", timestamp_utc=decided))
    assert cli(python, root, "once").returncode == 0
    assert cli(python, root, "replay", "cut-2d").returncode == 0

    text = cli(python, root, "list", env={"NO_COLOR": "1"}).stdout
    header = next(ln for ln in text.splitlines() if ln.lstrip().startswith("DISPATCH ID"))
    assert "DECIDED" in header, text
    row = next(ln for ln in text.splitlines() if "cut-2d" in ln)
    names, values = re.split(r"\s{2,}", header.strip()), re.split(r"\s{2,}", row.strip())
    cells = dict(zip(names, values, strict=True))
    assert cells["DECIDED"] == "2d", text  # the decision's age
    assert re.fullmatch(r"\d+s", cells["AGE"]), text  # the file's, just written

    doc = json.loads(cli(python, root, "list", "--json").stdout)
    (req,) = doc["requests"]
    assert abs(parse_iso_utc(req["decided_at"]) - parse_iso_utc(decided)) < 1, req
    assert req["decided_age_s"] > TWO_DAYS, req

    # status's table of open requests says it too
    daemon = spawn(python, root).wait_ready()
    wait_for(lambda: root.state().get("approvals", {}).get("awaiting") == 1, 10, "1 awaiting")
    text = cli(python, root, "status", env={"NO_COLOR": "1"}).stdout
    header = next(ln for ln in text.splitlines() if ln.lstrip().startswith("DISPATCH ID"))
    row = next(ln for ln in text.splitlines() if ln.lstrip().startswith(req["dispatch_id"]))
    names, values = re.split(r"\s{2,}", header.strip()), re.split(r"\s{2,}", row.strip())
    assert dict(zip(names, values, strict=True))["DECIDED"] == "2d", text
    assert daemon.stop() == 0
