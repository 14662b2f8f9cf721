"""Issue 15, synthetic requests never linger: a validate-handoff request whose record is
gone is removed by the daemon at its next pass (also when the record went while it was
stopped), one a killed check left behind ages out, and neither a real request whose record
went nor an approved synthetic one is ever touched (the approved one is reported). Real
processes, files, signals and a stepped wall clock (libfaketime)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import DISPATCHER, Root, cli_env, now_iso, record, wait_for
from .edges import LIBFAKETIME, PY, faketime_env
from .request_seed import approve

pytestmark = pytest.mark.slow


def _synthetic_record(root: Root, tag: str) -> str:
    """A record as validate-handoff writes it (its decision id prefix makes it synthetic)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    decision_id = f"handoff-check-{stamp}-{tag}"
    doc = record(decision_id, checks=[{"name": "handoff_check", "status": "synthetic"}])
    root.drop(f"{decision_id}.json", doc)
    return decision_id


def _requests_by_source(root: Root) -> dict[str, Path]:
    found = {}
    for path in root.requests.glob("*.json"):
        doc = json.loads(path.read_text())
        found[doc["source_decision_id"]] = path
    return found


def _removals(root: Root) -> list[dict]:
    return [ln for ln in root.log_lines() if ln["event"] == "synthetic-removed"]


@pytest.mark.parametrize("while_stopped", [False, True], ids=["running", "stopped"])
def test_a_synthetic_request_whose_record_is_gone_is_removed(
    root: Root, spawn, tmp_path: Path, while_stopped: bool
) -> None:
    approvals = tmp_path / "approvals"
    approvals.mkdir()
    root.write_config(settle_seconds=0, approvals_dir=str(approvals))
    daemon = spawn(PY, root).wait_ready()
    real = root.drop("real-1.json", record("real-1"))
    lone = _synthetic_record(root, "0000000a")
    kept = _synthetic_record(root, "0000000b")
    want = {"real-1", lone, kept}
    wait_for(lambda: set(_requests_by_source(root)) == want, 10, "three requests")
    requests = _requests_by_source(root)
    approve(approvals, requests[kept].name[: -len(".json")])
    if while_stopped:
        assert daemon.stop() == 0
    for name in ("real-1", lone, kept):
        (root.records / f"{name}.json").unlink()
    assert not real.exists()
    if while_stopped:
        daemon = spawn(PY, root).wait_ready()
    else:
        daemon.signal(signal.SIGUSR1)  # the next poll pass
    # The line follows the unlink: wait for both.
    wait_for(
        lambda: not requests[lone].exists() and _removals(root), 15, "the synthetic request removed"
    )
    # The real request and the approved synthetic one stay, whatever their records did.
    assert requests["real-1"].exists() and requests[kept].exists()
    removed = _removals(root)
    assert [ln["dispatch_id"] for ln in removed] == [requests[lone].name[:-5]], removed
    assert "record" in removed[0]["reason"], removed[0]
    left = [ln for ln in root.log_lines() if ln["event"] == "synthetic-approved"]
    assert [ln["dispatch_id"] for ln in left] == [requests[kept].name[:-5]], left
    assert left[0]["level"] == "WARNING"
    daemon.signal(signal.SIGUSR1)  # another pass removes nothing and reports nothing again
    time.sleep(1)
    assert requests["real-1"].exists() and requests[kept].exists()
    assert len(_removals(root)) == 1
    assert len([ln for ln in root.log_lines() if ln["event"] == "synthetic-approved"]) == 1
    assert daemon.stop() == 0


@pytest.mark.skipif(not LIBFAKETIME, reason="needs faketime (make venv)")
def test_a_synthetic_request_left_by_a_killed_check_ages_out(root: Root, spawn) -> None:
    root.write_config(settle_seconds=0)
    control = root.path.parent / "faketime"
    daemon = spawn(PY, root, env=faketime_env(control)).wait_ready()
    real = root.drop("real-1.json", record("real-1"))
    wait_for(lambda: _requests_by_source(root), 10, "the real request")
    # The daemon is held still until the check is killed, so the check dies before its
    # request exists (no cleanup runs); then the daemon writes it, for nobody.
    daemon.signal(signal.SIGSTOP)
    check = subprocess.Popen(
        [PY, str(DISPATCHER), "--config", str(root.config), "validate-handoff", "--json"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=cli_env(),
    )
    try:
        wait_for(lambda: list(root.records.glob("handoff-check-*.json")), 15, "the record")
    finally:
        check.send_signal(signal.SIGKILL)
        check.wait(10)
        daemon.signal(signal.SIGCONT)
    found = wait_for(
        lambda: [s for s in _requests_by_source(root) if s.startswith("handoff-check-")],
        15,
        "the killed check's request",
    )
    requests = _requests_by_source(root)
    synthetic = requests[found[0]]
    assert list(root.records.glob("handoff-check-*.json"))  # its record stays too
    daemon.signal(signal.SIGUSR1)
    time.sleep(1)
    assert synthetic.exists()  # young, its record still there: the check may be running
    control.write_text("+7200s\n")  # two hours later
    daemon.signal(signal.SIGUSR1)
    wait_for(
        lambda: not synthetic.exists() and _removals(root), 15, "the old synthetic request removed"
    )
    assert requests["real-1"].exists() and real.exists()
    removed = _removals(root)
    assert [ln["dispatch_id"] for ln in removed] == [synthetic.name[:-5]], removed
    assert "older than" in removed[0]["reason"], removed[0]
    assert [p.name for p in root.requests.glob("*.json")] == [requests["real-1"].name]
    assert daemon.stop() == 0


def test_a_synthetic_record_older_than_the_bound_is_never_dispatched(root: Root, spawn) -> None:
    """A killed check's record found later (a new ledger, a restored folder): its check is
    long over, so no synthetic request is written for it at all."""
    root.write_config(settle_seconds=0)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 7200))
    old = f"handoff-check-{stamp}-0000000c"
    root.drop(f"{old}.json", record(old, timestamp_utc=now_iso(-7200)))
    root.drop("real-1.json", record("real-1", timestamp_utc=now_iso(-7200)))
    daemon = spawn(PY, root).wait_ready()
    outcome, reason = root.outcomes()[f"{old}.json"]
    assert outcome == "stale" and "synthetic" in reason, (outcome, reason)
    assert list(_requests_by_source(root)) == ["real-1"]  # a real one that old is dispatched
    assert daemon.stop() == 0
