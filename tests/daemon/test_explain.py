"""`explain` runs the daemon's own pipeline (judge_record_file): for every kind of file it
names the outcome and reason the daemon gave it."""

from __future__ import annotations

import json
import os

import pytest

from .conftest import Root, cli, now_iso, record

pytestmark = pytest.mark.slow


def test_explain_agrees_with_the_daemon(python: str, root: Root) -> None:
    root.write_config(settle_seconds=0)
    root.drop("ok.json", record("ex-ok"))
    root.drop("old.json", record("ex-old", timestamp_utc=now_iso(-3 * 86400)))
    root.drop("unrouted.json", record("ex-u", "reboot"))
    root.drop("local.json", record("ex-l", status="queued-local-exec"))
    root.drop("array.json", b"[]")
    root.drop("big.json", b" " * 5000)  # over max_record_bytes 4096
    os.symlink(root.records / "ok.json", root.records / "link.json")
    result = cli(python, root, "once")
    assert result.returncode == 0, result.stderr
    outcomes = root.outcomes()
    assert len(outcomes) == 7
    for name, (outcome, reason) in outcomes.items():
        explained = json.loads(cli(python, root, "explain", name).stdout)
        if outcome == "emitted":
            # Already handled: explain says so instead of offering a second request.
            assert explained["would"].startswith("nothing"), (name, explained)
            continue
        assert (explained["would"], explained["reason"].split(" s old")[0]) == (
            outcome,
            reason.split(" s old")[0],
        ), name
