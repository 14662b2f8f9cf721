"""The ledger file's schema is versioned (PRAGMA user_version): a new or older ledger is
stamped with this code's version, a ledger from newer code is refused and left as it is."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hyops_dispatcher.ledger import LEDGER_SCHEMA_VERSION, Ledger, LedgerUnusable


def user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()


def test_a_new_ledger_carries_the_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    Ledger(str(path)).db.close()
    assert user_version(path) == LEDGER_SCHEMA_VERSION >= 1
    tables = sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")
    assert {"approvals"} <= {name for (name,) in tables}


def test_a_ledger_from_before_the_version_is_stamped(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    Ledger(str(path)).db.close()
    sqlite3.connect(path).execute("PRAGMA user_version=0").connection.close()
    Ledger(str(path)).db.close()
    assert user_version(path) == LEDGER_SCHEMA_VERSION


def test_a_ledger_from_newer_code_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    Ledger(str(path)).db.close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={LEDGER_SCHEMA_VERSION + 1}")
    db.close()
    before = path.read_bytes()
    with pytest.raises(LedgerUnusable, match="newer than this code"):
        Ledger(str(path))
    assert path.read_bytes() == before


def test_the_approval_counts_never_read_the_whole_table(tmp_path: Path) -> None:
    # status and the metrics recount approvals after every full scan: with 10^5 rows in
    # history a table scan blocked the loop ~60 ms; the closed rows are counted from an
    # index alone.
    from hyops_dispatcher.approvals import _OPEN_STATE_SQL

    ledger = Ledger(str(tmp_path / "ledger.sqlite3"))
    statements: list[str] = []
    ledger.db.set_trace_callback(statements.append)
    ledger.approvals_counts(_OPEN_STATE_SQL, 0.0)
    ledger.db.set_trace_callback(None)
    closed = next(s for s in statements if "state != 'open'" in s)
    plan = [row[-1] for row in ledger.db.execute("EXPLAIN QUERY PLAN " + closed)]
    assert plan and all("COVERING INDEX approvals_counted" in step for step in plan), plan
    ledger.db.close()


def test_the_next_expiry_is_one_index_step(tmp_path: Path) -> None:
    ledger = Ledger(str(tmp_path / "ledger.sqlite3"))
    statements: list[str] = []
    ledger.db.set_trace_callback(statements.append)
    ledger.approvals_next_expiry(0.0)
    ledger.db.set_trace_callback(None)
    plan = [row[-1] for row in ledger.db.execute("EXPLAIN QUERY PLAN " + statements[-1])]
    assert plan and all("INDEX approvals_open_expiry (expires_at>?)" in p for p in plan), plan
    ledger.db.close()
