"""What a replay would surprise someone with: a decision older than the latest request of
another route (a replayed 2-day-old cutover after today's failback), or a request of an
opposite route still awaiting approval (`supersedes`, declared either way). `replay`
says so in one line and writes only with --yes (Daemon.replay).

Invariant: reads only (the ledger's requests, the requests and approvals folders).
"""

from __future__ import annotations

from typing import List

from .config import Config
from .console import age
from .episodes import LedgerEpisodes
from .ledger import Ledger

# Later than any decision time: the route's latest request (Ledger.request_around).
_END_OF_TIME = float("inf")


def opposite(config: Config, route: str, other: str) -> bool:
    """One of the two routes declares that it supersedes the other."""
    mine, theirs = config.routes.get(route), config.routes.get(other)
    return bool(
        (mine is not None and other in mine.supersedes)
        or (theirs is not None and route in theirs.supersedes)
    )


def replay_conflicts(
    config: Config, ledger: Ledger, episodes: LedgerEpisodes, route: str, epoch: float
) -> List[str]:
    """Why replaying a decision of `route` made at `epoch` needs a person's --yes (none:
    no conflict). Synthetic handoff requests never count (the ledger leaves them out)."""
    found: List[str] = []
    for other in sorted(config.routes):
        if other == route:
            continue
        latest, _ = ledger.request_around(other, _END_OF_TIME)
        if latest is None:
            continue
        dispatch_id, decided = latest
        awaits = opposite(config, route, other) and episodes.approval(dispatch_id) == "awaiting"
        if decided > epoch:
            found.append(
                f"it is older than the latest {other} request {dispatch_id} "
                f"(decided {age(episodes.now - decided)} ago)"
                + (", which awaits approval (an opposite route)" if awaits else "")
            )
        elif awaits:
            found.append(f"the opposite {other} request {dispatch_id} awaits approval")
    return found
