"""Issue 18, the write protocol observed from outside: the real daemon (files/dispatcher.py)
runs under `strace -f`, and its system calls must show DAEMON.md's promise for every
request, state.json and the metrics file: temp file created -> written -> fsync'ed (a
batch of 8+ requests: one syncfs) -> renamed -> folder fsync'ed; and for a batch, the
ledger rows committed (journal synced, ledger written and synced, journal deleted) only
after the requests folder is synced. Power loss is not SIGKILL: without these calls every
crash test still passes, so this is the test that fails when one goes missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from syscall_trace import (
    Call,
    DurableWrite,
    durable_writes,
    first_call,
    first_write_to,
    needs_strace,
    parse_trace,
    strace_argv,
)

from .conftest import Root, record, wait_for

pytestmark = [pytest.mark.slow, needs_strace]

BURST = 9  # over fsio.SYNCFS_MIN_BATCH (8): the first pass takes the syncfs path
LATER = 2  # a small batch: each request fsync'ed itself


def _traced_run(python: str, root: Root, spawn, trace: Path) -> list[Call]:
    """A burst present at start, two records while it runs, a clean stop; the trace."""
    for i in range(BURST):
        root.drop(f"burst-{i}.json", record(f"wp-burst-{i}"))
    daemon = spawn(python, root, wrapper=strace_argv(str(trace))).wait_ready(60)
    for i in range(LATER):
        root.drop(f"later-{i}.json", record(f"wp-later-{i}"))
    total = BURST + LATER
    wait_for(lambda: len(list(root.requests.glob("*.json"))) == total, 20, f"{total} requests")
    wait_for(lambda: root.state()["counters"]["emitted"] == total, 20, "state.json counters")
    assert daemon.stop(60) == 0, daemon.stderr()[-2000:]
    outcomes = root.outcomes()
    assert sorted(o for o, _r in outcomes.values()) == ["emitted"] * total, outcomes
    return parse_trace(trace.read_text(errors="replace"))


def _batches(writes: list[DurableWrite]) -> dict[int, list[DurableWrite]]:
    """Requests grouped by the folder fsync that made them durable (one per batch)."""
    groups: dict[int, list[DurableWrite]] = {}
    for w in writes:
        groups.setdefault(w.folder_synced, []).append(w)
    return groups


def _ledger_commit_after(calls: list[Call], ledger: str, start: int) -> tuple[int, int, int, int]:
    """(journal synced, first ledger write, ledger synced, journal deleted) of the first
    commit that writes the ledger at or after `start`."""
    journal = ledger + "-journal"
    write = first_write_to(calls, ledger, start)
    assert write is not None, f"no write to {ledger} after call #{start}"
    deleted = first_call(calls, write.index, "unlink", journal)
    assert deleted is not None, f"the journal {journal} was never deleted after the commit"
    synced_ledger = [
        c.index
        for c in calls[write.index : deleted.index]
        if c.name in ("fsync", "fdatasync") and c.fd_path == ledger
    ]
    synced_journal = [
        c.index
        for c in calls[start : write.index]
        if c.name in ("fsync", "fdatasync") and c.fd_path == journal
    ]
    assert synced_journal, f"the journal was not synced before {ledger} was written"
    assert synced_ledger, f"{ledger} was not synced before its journal was deleted"
    return synced_journal[-1], write.index, synced_ledger[-1], deleted.index


def test_every_request_state_and_metrics_write_is_durable_in_order(
    python: str, root: Root, spawn, tmp_path: Path
) -> None:
    calls = _traced_run(python, root, spawn, tmp_path / "daemon.strace")
    requests = sorted(str(p) for p in root.requests.glob("*.json"))
    writes = []
    for target in requests:
        found = durable_writes(calls, target)
        assert len(found) == 1, f"{target} renamed into place {len(found)} times"
        (w,) = found
        assert w.size == os.path.getsize(target)
        writes.append(w)
    for target in (root.state_file, root.path / "state" / "metrics.prom"):
        found = durable_writes(calls, str(target))
        assert len(found) >= 2  # at start, after the requests, at the clean stop
        assert found[-1].size == target.stat().st_size


def test_a_batch_is_committed_to_the_ledger_only_after_its_requests_folder_is_synced(
    python: str, root: Root, spawn, tmp_path: Path
) -> None:
    calls = _traced_run(python, root, spawn, tmp_path / "daemon.strace")
    writes = [
        w for p in sorted(root.requests.glob("*.json")) for w in durable_writes(calls, str(p))
    ]
    batches = _batches(writes)
    sizes = sorted(len(b) for b in batches.values())
    assert sizes[-1] == BURST and sum(sizes) == BURST + LATER, sizes
    ledger = str(root.ledger)
    for folder_synced, batch in batches.items():
        staged = min(w.created for w in batch)
        journal_synced, ledger_written, ledger_synced, deleted = _ledger_commit_after(
            calls, ledger, staged
        )
        names = ", ".join(sorted(os.path.basename(w.target) for w in batch))
        assert folder_synced < ledger_written, (
            f"the ledger was written (call #{ledger_written}) before the requests folder "
            f"was synced (call #{folder_synced}) for {names}"
        )
        assert max(w.renamed for w in batch) < journal_synced < ledger_written
        assert ledger_written < ledger_synced < deleted
