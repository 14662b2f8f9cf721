"""What is known per file of the records folder (its signature and outcome), kept in the
ledger so memory stays flat in history and in bad files.

Invariant: an already handled, unchanged file is never read again; only pending files
(waiting for their settle deadline) are held in memory; `awaiting_operator` counts the
present files whose outcome is one of OPERATOR_OUTCOMES, as the ledger does.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from .ledger import LOOKUP_CHUNK, Ledger
from .record import folder_name, ledger_name
from .states import OPERATOR_OUTCOMES
from .verdicts import FileSig, KnownFile, Outcome


class FileIndex:
    """What is known about each record file. It lives in the ledger (SQLite with a bounded
    page cache), so memory stays flat however long the history. Only pending files are in
    memory (`watched`, with their settle deadline): a poll pass looks at the ones that are
    due, nothing else. Rejected files stay in the ledger only: they are judged again when
    inotify names them, when the listing finds another file under the name, or at the
    full stat scan; without inotify a poll pass also re-stats one slice of them
    (REJECTED_SLICE, in turn), so every pass stays bounded however many there are."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.watched: Dict[str, KnownFile] = {}  # pending files only
        self.tracked = 0  # files present and known (state.json tracked_files)
        self.changes = 0  # files that came or went (a sliced listing compares it)
        self._next_retry: Optional[float] = None
        self._retry_known = True  # _next_retry is up to date with `watched`
        self.rejected_cursor = 0  # rowid after which the next slice of rejected files starts
        # The rows of the names a pass is about to look at, read in one query
        # (prefetch); each is used once, and put/forget drop it, so none is stale.
        self.ahead: Dict[str, Optional[KnownFile]] = {}
        # Present files not dispatched that wait for an operator, by outcome (metrics).
        self.awaiting_operator: Dict[str, int] = {k: 0 for k in OPERATOR_OUTCOMES}

    def load(self) -> None:
        self.watched = {folder_name(n): known for n, known in self.ledger.pending_files()}
        self._retry_known = False
        self.tracked = self.ledger.live_count()
        counts = self.ledger.live_outcome_counts(OPERATOR_OUTCOMES)
        self.awaiting_operator = {k: counts.get(k, 0) for k in OPERATOR_OUTCOMES}

    def _count(self, outcome: str, step: int) -> None:
        if outcome in self.awaiting_operator:
            self.awaiting_operator[outcome] = max(0, self.awaiting_operator[outcome] + step)

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
            self.changes += 1
        else:
            self._count(known.outcome, -1)
        self._count(outcome.outcome, +1)
        if outcome.outcome == "pending":
            self.watched[name] = KnownFile(
                sig, outcome.outcome, outcome.decision_id, retry_at=outcome.retry_at
            )
            self._retry_known = False
        elif self.watched.pop(name, None) is not None:
            self._retry_known = False

    def forget(self, name: str, now: float) -> None:
        """The file went away: its row stays (marked gone) until the retention prunes it."""
        if self.watched.pop(name, None) is not None:
            self._retry_known = False
        self.ahead.pop(name, None)
        known = self.ledger.known_file(name)
        if known is None or known.gone:
            return  # never handled (e.g. renamed away at once): nothing to write
        self.ledger.begin()
        if self.ledger.mark_gone(name, now):
            self.tracked -= 1
            self.changes += 1
            self._count(known.outcome, -1)

    def pending_count(self) -> int:
        return len(self.watched)

    def next_retry(self) -> Optional[float]:
        """The earliest settle deadline of a pending file (computed again only after the
        pending set changed: the loop asks on every wake-up)."""
        if not self._retry_known:
            due = [k.retry_at for k in self.watched.values()]
            self._next_retry = min(due) if due else None
            self._retry_known = True
        return self._next_retry

    def pending_due(self, now: float, horizon: float) -> List[str]:
        """Pending files a poll pass must look at: deadline passed, or further away than
        `horizon` (the wall clock stepped back). No stat: the deadlines are in memory."""
        return [
            name
            for name, known in self.watched.items()
            if not now < known.retry_at <= now + horizon
        ]

    def rejected_slice(self) -> List[str]:
        """The next REJECTED_SLICE rejected files, in turn (for passes without inotify)."""
        rows = self.ledger.rejected_after(self.rejected_cursor, REJECTED_SLICE)
        self.rejected_cursor = rows[-1][0] if len(rows) == REJECTED_SLICE else 0
        return [folder_name(name) for _rowid, name in rows]


# Rejected files re-stat'ed per poll pass when inotify is not there to report changes.
REJECTED_SLICE = LOOKUP_CHUNK
