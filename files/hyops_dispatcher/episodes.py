"""The DR episodes decide asks about (decide.EpisodeView): each route's requests by
decision time, the decisions folded into them, and their approval state now, from the
ledger and the requests and approvals folders.

Invariant: what a request of this batch means is known before the batch is durable:
its ledger rows are in the open transaction and it counts as staged, so the answer does
not depend on when a batch ends. Reads only; writes nothing.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

from .approvals import approval_now, request_path
from .config import Config
from .decide import Episode
from .ledger import Ledger


class LedgerEpisodes:
    """decide.EpisodeView over the ledger. `staged(path)`: whether a request file is
    staged in the batch being written (Batch.is_staged)."""

    def __init__(
        self, config: Config, ledger: Ledger, staged: Callable[[str], bool], now: float
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.staged = staged
        self.now = now

    def _episode(self, row: Optional[Tuple[str, float]]) -> Optional[Episode]:
        if row is None:
            return None
        dispatch_id, first = row
        last = self.ledger.last_folded(dispatch_id)
        return Episode(dispatch_id, first, first if last is None else max(first, last))

    def around(self, route: str, epoch: float) -> Tuple[Optional[Episode], Optional[Episode]]:
        before, after = self.ledger.request_around(route, epoch)
        return self._episode(before), self._episode(after)

    def request_between(self, routes: Sequence[str], lo: float, hi: float) -> bool:
        return self.ledger.request_between(list(routes), lo, hi)

    def approval(self, dispatch_id: str) -> str:
        staged = None
        if self.staged(request_path(self.config, dispatch_id)):
            row = self.ledger.approval_row(dispatch_id)
            staged = "open" if row is None else row[0]
        return approval_now(self.config, dispatch_id, self.now, staged)
