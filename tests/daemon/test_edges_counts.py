"""Issue 9, honest counts: outcomes are counted per decision (and per unchanged file),
not per event: a record rewritten in place many times is one request, one `emitted`
event and +1 in counters.emitted; a rejected file is not counted again after the records
folder blinks away and back."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from .conftest import Root, record, wait_for
from .edges import PY

pytestmark = pytest.mark.slow


def _events(root: Root, event: str, file: str) -> int:
    return sum(1 for ln in root.log_lines() if ln["event"] == event and ln.get("file") == file)


def test_record_rewritten_in_place_40_times_counts_once(root: Root, spawn) -> None:
    daemon = spawn(PY, root).wait_ready()  # settle_seconds 1: half-written files wait
    data = json.dumps(record("rewrite-1")).encode()
    path = root.records / "rw.json"
    for _ in range(40):
        # The decision service rewrites the same record in place (truncate, write).
        with open(path, "wb") as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
            time.sleep(0.05)  # the daemon may see the half-written file
            fh.write(data[len(data) // 2 :])
        time.sleep(0.02)
    wait_for(lambda: root.outcomes().get("rw.json", ("",))[0] == "emitted", 10, "emitted")
    time.sleep(0.6)  # state.json is rewritten at most every 0.5 s
    assert [d["source_decision_id"] for d in root.request_docs()] == ["rewrite-1"]
    assert (root.state()["counters"]["emitted"], _events(root, "emitted", "rw.json")) == (1, 1)
    assert daemon.stop() == 0


def test_rejected_file_is_not_counted_again_after_a_records_folder_blip(root: Root, spawn) -> None:
    daemon = spawn(PY, root).wait_ready()
    (root.records / "bad.json").write_text("[]")
    wait_for(lambda: root.outcomes().get("bad.json", ("",))[0] == "rejected", 5, "rejected")
    away = root.records.with_name("records.away")
    # The folder blinks: moved away, an empty one in its place for a pass, moved back.
    os.rename(root.records, away)
    root.records.mkdir()
    daemon.signal(signal.SIGUSR1)
    wait_for(lambda: "bad.json" not in root.outcomes(), 5, "the empty folder seen")
    root.records.rmdir()
    os.rename(away, root.records)
    daemon.signal(signal.SIGUSR1)
    wait_for(lambda: root.outcomes().get("bad.json", ("",))[0] == "rejected", 5, "back")
    time.sleep(0.6)  # state.json is rewritten at most every 0.5 s
    assert (root.state()["counters"]["rejected"], _events(root, "rejected", "bad.json")) == (1, 1)
    assert daemon.stop() == 0
