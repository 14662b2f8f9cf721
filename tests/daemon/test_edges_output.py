"""Issue 9, safe output: names from the records folder reach the operator's terminal
escaped: a file name with a newline cannot forge a row in `list`, and an ESC sequence in
it never reaches the terminal raw (`list`, `status` last_error, `explain`)."""

from __future__ import annotations

import json
import shutil

import pytest

from .conftest import Root, cli, record, wait_for
from .edges import PY

pytestmark = pytest.mark.slow

# A record file name that, printed raw, ends the row and starts a forged one, then clears
# the screen.
EVIL = "x\n  rejected  FORGED-ROW\x1b[2J.json"


def _raw_control(text: str) -> list[str]:
    """Control characters other than the newlines between lines of output."""
    return [c for c in text if (ord(c) < 32 and c != "\n") or ord(c) == 127]


def test_list_escapes_record_names(root: Root) -> None:
    (root.records / EVIL).write_text("[]")
    assert cli(PY, root, "once").returncode == 0
    assert root.outcomes()[EVIL][0] == "rejected"
    out = cli(PY, root, "list").stdout
    assert _raw_control(out) == []
    assert not [ln for ln in out.splitlines() if ln.startswith("  rejected  FORGED-ROW")]
    rows = [ln for ln in out.splitlines() if ln.startswith("  rejected")]
    assert len(rows) == 1, out


def test_status_escapes_last_error(root: Root, spawn) -> None:
    root.write_config(settle_seconds=0)
    daemon = spawn(PY, root).wait_ready()
    # The requests folder is replaced by a file: writing the request fails, and the
    # error names the record file.
    shutil.rmtree(root.requests)
    root.requests.write_text("not a folder\n")
    root.drop(EVIL, record("evil-1"))
    wait_for(lambda: "FORGED-ROW" in (root.state().get("last_error") or ""), 5, "last_error")
    out = cli(PY, root, "status").stdout
    assert _raw_control(out) == []
    assert not [ln for ln in out.splitlines() if ln.startswith("  rejected  FORGED-ROW")]
    daemon.kill()


def test_explain_escapes_record_names(root: Root) -> None:
    # Already safe today (explain prints JSON with ASCII escapes): kept as a guard.
    (root.records / EVIL).write_text(json.dumps(record("evil-2")))
    for ref in (EVIL, str(root.records / EVIL), "no-such\x1b[2J"):
        result = cli(PY, root, "explain", ref)
        assert _raw_control(result.stdout + result.stderr) == [], ref
