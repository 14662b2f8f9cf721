"""What is known per file of the records folder (its signature and outcome), kept in the
ledger so memory stays flat in history.

Invariant: an already handled, unchanged file is never read again; `awaiting_operator`
counts the present files whose outcome is one of OPERATOR_OUTCOMES, as the ledger does.
"""

from __future__ import annotations

from typing import Dict, Optional

from .ledger import Ledger
from .record import folder_name
from .states import OPERATOR_OUTCOMES, WATCHED_OUTCOMES
from .verdicts import FileSig, KnownFile, Outcome


class FileIndex:
    """What is known about each record file. It lives in the ledger (SQLite with a bounded
    page cache), so memory stays flat however long the history; only the few files still
    pending or rejected are kept in memory, because they are re-stat'ed on every pass."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.watched: Dict[str, KnownFile] = {}
        self.tracked = 0  # files present and known (state.json tracked_files)
        # Present files not dispatched that wait for an operator, by outcome (metrics).
        self.awaiting_operator: Dict[str, int] = {k: 0 for k in OPERATOR_OUTCOMES}

    def load(self) -> None:
        self.watched = {folder_name(n): known for n, known in self.ledger.watched_files()}
        self.tracked = self.ledger.live_count()
        counts = self.ledger.live_outcome_counts(OPERATOR_OUTCOMES)
        self.awaiting_operator = {k: counts.get(k, 0) for k in OPERATOR_OUTCOMES}

    def _count(self, outcome: str, step: int) -> None:
        if outcome in self.awaiting_operator:
            self.awaiting_operator[outcome] = max(0, self.awaiting_operator[outcome] + step)

    def lookup(self, name: str) -> Optional[KnownFile]:
        known = self.watched.get(name)
        return known if known is not None else self.ledger.known_file(name)

    def put(
        self, name: str, sig: FileSig, outcome: Outcome, known: Optional[KnownFile], now: float
    ) -> None:
        self.ledger.begin()
        self.ledger.put_file(
            name,
            sig,
            outcome.outcome,
            outcome.decision_id,
            outcome.dispatch_id,
            outcome.reason,
            now,
        )
        if known is None or known.gone:
            self.tracked += 1
        else:
            self._count(known.outcome, -1)
        self._count(outcome.outcome, +1)
        if outcome.outcome in WATCHED_OUTCOMES:
            self.watched[name] = KnownFile(
                sig, outcome.outcome, outcome.decision_id, retry_at=outcome.retry_at
            )
        else:
            self.watched.pop(name, None)

    def forget(self, name: str, now: float) -> None:
        """The file went away: its row stays (marked gone) until the retention prunes it."""
        self.watched.pop(name, None)
        known = self.ledger.known_file(name)
        if known is None or known.gone:
            return  # never handled (e.g. renamed away at once): nothing to write
        self.ledger.begin()
        if self.ledger.mark_gone(name, now):
            self.tracked -= 1
            self._count(known.outcome, -1)

    def pending_count(self) -> int:
        return sum(1 for k in self.watched.values() if k.outcome == "pending")

    def next_retry(self) -> Optional[float]:
        due = [k.retry_at for k in self.watched.values() if k.outcome == "pending"]
        return min(due) if due else None
