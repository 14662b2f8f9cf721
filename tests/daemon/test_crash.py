"""SIGKILL the real daemon at random points during bursts; restart; nothing lost, nothing
doubled. Seeded, so a failure can be replayed; 20 trials per interpreter."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
from collections import Counter

import pytest

from .conftest import Root, assert_valid, record, wait_for

pytestmark = pytest.mark.slow

TRIALS = 20
SEED = 20261127


def test_sigkill_during_bursts_loses_and_duplicates_nothing(python: str, root: Root, spawn) -> None:
    rng = random.Random(SEED)
    expected: list[str] = []
    duplicates = 0
    kills_in_startup = 0
    # Requests are never rewritten (the consumer may be reading one): inode per file.
    inodes: dict[str, int] = {}

    def snapshot() -> None:
        for entry in os.scandir(root.requests):
            if entry.name.endswith(".json"):
                assert inodes.setdefault(entry.name, entry.inode()) == entry.inode(), entry.name

    for trial in range(TRIALS):
        daemon = spawn(python, root)
        if trial % 5 == 4:
            # Kill while it starts: reconciling, scanning, maybe writing.
            time.sleep(rng.uniform(0.0, 0.25))
            daemon.kill()
            kills_in_startup += 1
            snapshot()
            continue
        daemon.wait_ready()
        count = rng.randint(30, 150)
        kill_at = rng.randint(0, count)
        ids = [f"crash-{trial:02d}-{i:03d}" for i in range(count)]
        killed = False
        for i, decision_id in enumerate(ids):
            kind = "failback" if i % 3 == 0 else "cutover"
            root.drop(f"{decision_id}.json", record(decision_id, kind))
            if i % 17 == 5 and expected:
                # The same decision under another file name: never a second request.
                again = rng.choice(expected)
                root.drop(f"again-{trial:02d}-{i:03d}.json", record(again))
                duplicates += 1
            if i == kill_at:
                time.sleep(rng.uniform(0.0, 0.03))
                daemon.kill()
                killed = True
                break
        expected.extend(ids[: kill_at + 1] if killed else ids)
        if killed:
            # The writer does not stop because the dispatcher died.
            for decision_id in ids[kill_at + 1 :]:
                root.drop(f"{decision_id}.json", record(decision_id))
            expected.extend(ids[kill_at + 1 :])
        else:
            time.sleep(rng.uniform(0.0, 0.05))
            daemon.kill()
        snapshot()

    final = spawn(python, root).wait_ready()
    wait_for(lambda: len(os.listdir(root.requests)) >= len(expected), 60, "every request")
    time.sleep(0.5)
    assert final.stop() == 0
    snapshot()

    docs = root.request_docs()
    sources = Counter(doc["source_decision_id"] for doc in docs)
    doubled = {k: v for k, v in sources.items() if v > 1}
    lost = set(expected) - set(sources)
    assert not doubled, f"duplicate requests: {doubled}"
    assert not lost, f"lost decisions: {sorted(lost)[:10]}"
    assert set(sources) == set(expected)
    assert not [n for n in os.listdir(root.requests) if not n.endswith(".json")]
    for doc in docs:
        assert_valid("dispatch-request", doc)
        assert doc["dispatch_id"] + ".json" in os.listdir(root.requests)
    # The ledger agrees with the folder: every record file has a final outcome.
    outcomes = root.outcomes()
    records = [n for n in os.listdir(root.records) if n.endswith(".json")]
    assert set(outcomes) == set(records)
    assert Counter(o for o, _ in outcomes.values()) == {
        "emitted": len(expected),
        "duplicate": duplicates,
    }
    db = sqlite3.connect(f"file:{root.ledger}?mode=ro", uri=True)
    emitted = db.execute("SELECT count(*) FROM decisions WHERE outcome = 'emitted'").fetchone()[0]
    db.close()
    assert emitted == len(expected)
    assert kills_in_startup == TRIALS // 5
    state = json.loads(root.state_file.read_text())
    assert_valid("dispatcher-state", state)
