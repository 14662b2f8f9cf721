"""What is known per file of the records folder (its signature and outcome), kept in the
ledger so memory stays flat in history.

Invariant: an already handled, unchanged file is never read again.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from .ledger import Ledger
from .record import folder_name, ledger_name
from .states import WATCHED_OUTCOMES
from .verdicts import FileSig, KnownFile, Outcome


class FileIndex:
    """What is known about each record file. It lives in the ledger (SQLite with a bounded
    page cache), so memory stays flat however long the history; only the few files still
    pending or rejected are kept in memory, because they are re-stat'ed on every pass."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.watched: Dict[str, KnownFile] = {}
        self.tracked = 0  # files present and known (state.json tracked_files)
        # The rows of the names a pass is about to look at, read in one query
        # (prefetch); each is used once, and put/forget drop it, so none is stale.
        self.ahead: Dict[str, Optional[KnownFile]] = {}

    def load(self) -> None:
        self.watched = {folder_name(n): known for n, known in self.ledger.watched_files()}
        self.tracked = self.ledger.live_count()

    def prefetch(self, names: List[str]) -> None:
        """Read the rows of `names` (up to LOOKUP_CHUNK) now, in one query."""
        self.ahead.clear()
        spelled = {ledger_name(n): n for n in names if n not in self.watched}
        if spelled:
            rows = self.ledger.known_files(list(spelled))
            for key, name in spelled.items():
                self.ahead[name] = rows.get(key)

    def end_pass(self) -> None:
        self.ahead.clear()

    def lookup(self, name: str) -> Optional[KnownFile]:
        known = self.watched.get(name)
        if known is not None:
            return known
        if name in self.ahead:
            return self.ahead.pop(name)
        return self.ledger.known_file(name)

    def put(
        self, name: str, sig: FileSig, outcome: Outcome, known: Optional[KnownFile], now: float
    ) -> None:
        self.ahead.pop(name, None)
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
        if outcome.outcome in WATCHED_OUTCOMES:
            self.watched[name] = KnownFile(
                sig, outcome.outcome, outcome.decision_id, retry_at=outcome.retry_at
            )
        else:
            self.watched.pop(name, None)

    def forget(self, name: str, now: float) -> None:
        """The file went away: its row stays (marked gone) until the retention prunes it."""
        self.watched.pop(name, None)
        self.ahead.pop(name, None)
        known = self.ledger.known_file(name)
        if known is None or known.gone:
            return  # never handled (e.g. renamed away at once): nothing to write
        self.ledger.begin()
        if self.ledger.mark_gone(name, now):
            self.tracked -= 1

    def pending_count(self) -> int:
        return sum(1 for k in self.watched.values() if k.outcome == "pending")

    def next_retry(self) -> Optional[float]:
        due = [k.retry_at for k in self.watched.values() if k.outcome == "pending"]
        return min(due) if due else None
