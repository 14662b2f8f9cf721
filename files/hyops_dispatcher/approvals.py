"""The approval rule and everything that spells it: the marker path, the request's
approval state (awaiting, approved, expired, superseded, not-required), its SQL twin, and
the ApprovalBook that follows open requests for status and metrics.

Invariant: the rule is written once here; the daemon only reads the approvals folder,
never writes it.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

from .config import Config
from .fsio import read_json_quiet
from .ids import dispatch_id_epoch, iso_ts, parse_iso_utc
from .jsonlog import JsonLog
from .ledger import LOOKUP_CHUNK, Ledger
from .record import is_handoff, is_record_name
from .states import APPROVAL_STATES

# Requests listed one by one in state.json (the newest still open); the counts cover all.
OPEN_LISTED = 10


class RequestFacts(NamedTuple):
    """What the approval state of one request file depends on, read once."""

    dispatch_id: str
    route: str
    needs_approval: bool  # false: status `queued` (not-required)
    issued_at: float
    expires_at: Optional[float]
    supersedes: Optional[str]
    synthetic: bool  # validate-handoff's request: never counted in status or metrics


def request_facts(doc: Any) -> Optional[RequestFacts]:
    """The approval-relevant fields of a request document; None when it is not one."""
    if not isinstance(doc, dict):
        return None
    dispatch_id = doc.get("dispatch_id")
    id_epoch = dispatch_id_epoch(dispatch_id)
    if id_epoch is None:
        return None  # not a dispatch id (or one naming no real date)
    route = doc.get("route") or doc.get("decision_type")
    issued = parse_iso_utc(doc.get("timestamp_utc"))
    if issued is None:
        issued = id_epoch
    supersedes = doc.get("supersedes")
    source = doc.get("source_decision_id")
    return RequestFacts(
        dispatch_id=dispatch_id,
        route=route if isinstance(route, str) else "",
        needs_approval=doc.get("status") != "queued",
        issued_at=issued,
        expires_at=parse_iso_utc(doc.get("expires_at")),
        supersedes=supersedes if isinstance(supersedes, str) else None,
        synthetic=doc.get("synthetic") is True or (isinstance(source, str) and is_handoff(source)),
    )


def approval_state(facts: RequestFacts, approved: bool, superseded: bool, now: float) -> str:
    """THE approval rule, first match wins: not-required, approved, superseded, expired,
    awaiting. An unreadable approvals folder means `approved` False (a missed page is
    worse than a false one)."""
    if not facts.needs_approval:
        return "not-required"
    if approved:
        return "approved"
    if superseded:
        return "superseded"
    if facts.expires_at is not None and facts.expires_at <= now:
        return "expired"
    return "awaiting"


def approval_marker(config: Config, dispatch_id: str) -> str:
    """THE marker path: the consumer's approval of a request; its existence is approval."""
    return os.path.join(config.approvals_dir, dispatch_id + ".approved.json")


def request_path(config: Config, dispatch_id: str) -> str:
    return os.path.join(config.requests_dir, dispatch_id + ".json")


def approval_now(config: Config, dispatch_id: str, now: float, staged: Optional[str]) -> str:
    """The approval state of one request now, for the episode rules (decide): approved
    (its marker), not-required, expired, awaiting, or gone (no request file: taken away).
    `staged`: the approvals-row state of a request staged in this batch, not yet renamed
    into the folder (it has just been written: awaiting or not-required). Superseded is
    not derived here (a superseded request is still awaiting for this purpose)."""
    doc = read_json_quiet(request_path(config, dispatch_id))
    if doc is None and staged is not None:
        return "not-required" if staged == "not-required" else "awaiting"
    facts = request_facts(doc)
    if facts is None or facts.dispatch_id != dispatch_id:
        return "gone"
    approved = os.path.lexists(approval_marker(config, dispatch_id))
    return approval_state(facts, approved, False, now)


# Ledger meta key: "1" once every request file in the folder has its approvals row.
APPROVALS_INDEXED = "approvals_indexed"

# The open state of a row, derived at query time (first match wins, as approval_state).
_OPEN_STATE_SQL = (
    "CASE WHEN EXISTS (SELECT 1 FROM approvals s WHERE s.supersedes = a.dispatch_id) "
    "THEN 'superseded' WHEN a.expires_at IS NOT NULL AND a.expires_at <= ? THEN 'expired' "
    "ELSE 'awaiting' END"
)


class ApprovalBook:
    """Which requests wait for a person. One row per request in the ledger's `approvals`
    table (state `open`, `approved` or `not-required`; superseded, expired and awaiting
    are derived from the open rows at query time by _OPEN_STATE_SQL); memory holds only
    the counts. An idle pass costs one stat of the approvals folder. Open rows are
    re-checked for their marker when that folder's mtime changes and at every heartbeat
    (which also drops rows whose request file went away); the requests folder is listed
    only at a start after a crash, with a new ledger, and at the hourly full scan.

    Built on an open ledger, complete; a reload builds a new one (the rows stay in the
    ledger)."""

    def __init__(
        self,
        config: Config,
        log: JsonLog,
        ledger: Ledger,
        resync: bool,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`resync`: list the requests folder, the ledger may lack rows (after a crash, a
        new ledger, or a ledger from before this table)."""
        self.config = config
        self.log = log
        self.ledger = ledger
        self.monotonic = monotonic  # the heartbeat interval; expiries are wall time
        self.readable: Optional[bool] = None  # None: not checked yet
        self.missing: Optional[bool] = None  # the folder does not exist (no consumer yet)
        self.folder_key: Optional[Tuple[int, int]] = None  # (inode, mtime_ns) last checked
        # Request files taken away while stopped are dropped at the first heartbeat, not
        # before READY (a stat per open request).
        self.last_check = monotonic()
        self.dirty = True  # the counts below need recomputing
        self.counts: Dict[Tuple[str, str], int] = {}  # (route, state) -> requests
        self.oldest_awaiting: Optional[float] = None  # issued_at of the oldest awaiting
        self.next_expiry: Optional[float] = None
        self.open_rows: List[dict] = []  # the newest open requests, for state.json
        if resync or ledger.meta_get(APPROVALS_INDEXED) != "1":
            self.sync()
            ledger.begin()
            ledger.meta_set(APPROVALS_INDEXED, "1")
            ledger.commit()
        # The first look at the approvals folder waits for the first state write (refresh),
        # so that `started` stays the first line of a run in the log.

    def sync(self) -> None:
        """Rows for request files the table lacks; rows of files gone are dropped."""
        for _ in self.sync_steps():
            pass

    def sync_steps(self) -> Iterator[None]:
        """sync() in steps: yields after each LOOKUP_CHUNK requests, their rows committed
        (the loop may run a pass, with its own transaction, in between)."""
        seen = 0
        try:
            with os.scandir(self.config.requests_dir) as entries:
                chunk: List[str] = []
                for entry in entries:
                    if is_record_name(entry.name):
                        chunk.append(entry.name[:-5])
                        if len(chunk) >= LOOKUP_CHUNK:
                            seen += self._index(chunk)
                            chunk = []
                            self.ledger.commit()
                            yield
                seen += self._index(chunk)
        except FileNotFoundError:
            pass
        self.ledger.commit()
        # A row added meanwhile (a request of a pass between steps) that the listing did
        # not return only costs a look for rows of gone files.
        if self.ledger.approvals_count() > seen:
            self._drop_gone(open_only=False)
        self.dirty = True

    def _index(self, ids: List[str]) -> int:
        if not ids:
            return 0
        known = self.ledger.approvals_known(ids)
        for dispatch_id in ids:
            if dispatch_id not in known:
                facts = request_facts(read_json_quiet(request_path(self.config, dispatch_id)))
                if facts is None or facts.dispatch_id != dispatch_id:
                    continue  # not a request of ours: the reconcile logs it
                self.ledger.begin()
                self._put(facts)
                known.add(dispatch_id)
        return len(known)

    # ---------------------------------------------------------------- changes
    def note(self, request: Optional[dict], replace: bool) -> None:
        """A request of an emitted decision, inside the batch's ledger transaction.
        `replace` False: the file was already there (adopted), keep what is known."""
        facts = request_facts(request)
        if facts is not None:
            self._put(facts, replace)
            self.dirty = True

    def _put(self, facts: RequestFacts, replace: bool = False) -> None:
        row = (
            facts.dispatch_id,
            facts.route,
            "open" if facts.needs_approval else "not-required",
            facts.issued_at,
            facts.expires_at,
            facts.supersedes,
            int(facts.synthetic),
        )
        self.ledger.approvals_put(row, replace)

    def marker_of(self, dispatch_id: str) -> str:
        return approval_marker(self.config, dispatch_id)

    def _folder_key(self) -> Optional[Tuple[int, int]]:
        """(inode, mtime_ns) of the approvals folder; None when it cannot be read."""
        folder = self.config.approvals_dir
        try:
            st = os.stat(folder)
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "not a folder", folder)
            if not os.access(folder, os.R_OK | os.X_OK):
                raise PermissionError(errno.EACCES, "not readable", folder)
        except FileNotFoundError:
            # No consumer installed yet: nothing is unreadable, nothing to alert on.
            if self.missing is not True:
                self.log.event(
                    "approvals-missing",
                    file=folder,
                    reason="approvals folder missing: no consumer yet; requests count as awaiting",
                )
                self.missing, self.readable, self.dirty = True, False, True
            return None
        except OSError as exc:
            self.missing = False
            if self.readable is not False:  # once per streak, not on every pass
                self.log.event(
                    "approvals-unreadable",
                    level="WARNING",
                    file=folder,
                    reason=f"approvals folder unusable ({exc.strerror or exc}); requests "
                    "count as awaiting until it can be read",
                )
                self.readable = False
                self.dirty = True
            return None
        if self.readable is False:
            self.log.event("recovered", reason=f"approvals folder {folder} is readable now")
        self.missing = False
        if self.readable is not True:
            self.readable = True
            self.dirty = True
        return (st.st_ino, st.st_mtime_ns)

    def tick(self, now: float, force: bool = False) -> None:
        """Every loop pass: one stat of the approvals folder. Markers of open rows are
        looked for when it changed (or its last look was within the racy second), at the
        heartbeat, and when forced; an expiry that passed only needs new counts."""
        mono = self.monotonic()
        heartbeat = mono - self.last_check >= self.config.heartbeat_seconds
        key = self._folder_key()
        changed = key is not None and key != self.folder_key
        if force or heartbeat or changed:
            if key is not None:
                self._look_for_markers()
            if heartbeat:
                self._drop_gone(open_only=True)
                self.last_check = mono
            # A marker added within the folder's mtime granularity would not change it:
            # look again next pass until the mtime is older than a second.
            racy = key is not None and time.time_ns() - key[1] < 1_000_000_000
            self.folder_key = None if racy else key
        if self.next_expiry is not None and now >= self.next_expiry:
            self.dirty = True

    def _ids(self, open_only: bool = True) -> Iterable[List[str]]:
        """Dispatch ids of the rows (open ones only by default), LOOKUP_CHUNK at a time."""
        if not open_only:
            after = ""
            while True:
                ids = self.ledger.approvals_all_ids(after)
                if not ids:
                    return
                after = ids[-1]
                yield ids
        position = (-1.0, "")
        while True:
            rows = self.ledger.approvals_open_after(position)
            if not rows:
                return
            position = rows[-1]
            yield [r[1] for r in rows]

    def _look_for_markers(self) -> None:
        approved = [i for ids in self._ids() for i in ids if os.path.lexists(self.marker_of(i))]
        self._update(self.ledger.approvals_mark_approved, approved)

    def _drop_gone(self, open_only: bool) -> None:
        """Rows whose request file left the requests folder (the consumer or an operator
        took it away; validate-handoff removes its own)."""
        gone = [
            i
            for ids in self._ids(open_only)
            for i in ids
            if not os.path.lexists(request_path(self.config, i))
        ]
        self._update(self.ledger.approvals_drop, gone)

    def _update(self, change: Callable[[List[str]], None], ids: List[str]) -> None:
        if not ids:
            return
        self.ledger.begin()
        change(ids)
        self.ledger.commit()
        self.dirty = True

    # ---------------------------------------------------------------- counts
    def refresh(self, now: float) -> bool:
        """Recompute the counts when something changed; True when it did."""
        if self.readable is None:
            self.tick(now, force=True)
        if not self.dirty:
            return False
        self.dirty = False
        counts: Dict[Tuple[str, str], int] = {}
        oldest = None
        for route, state, n, first in self.ledger.approvals_counts(_OPEN_STATE_SQL, now):
            counts[(route, state)] = n
            if state == "awaiting" and (oldest is None or first < oldest):
                oldest = first
        self.counts, self.oldest_awaiting = counts, oldest
        self.next_expiry = self.ledger.approvals_next_expiry(now)
        self.open_rows = [
            {
                "dispatch_id": dispatch_id,
                "route": route,
                "approval": state,
                "timestamp_utc": iso_ts(issued),
                "expires_at": None if expires is None else iso_ts(expires),
            }
            for dispatch_id, route, state, issued, expires in self.ledger.approvals_newest_open(
                _OPEN_STATE_SQL, now, OPEN_LISTED
            )
        ]
        return True

    def by_route(self, state: str, routes: Iterable[str]) -> Tuple[Tuple[str, int], ...]:
        names = set(routes) | {r for r, s in self.counts if s == state}
        return tuple((r, self.counts.get((r, state), 0)) for r in sorted(names))

    def dir_state(self) -> str:
        """readable, missing (no consumer yet) or unreadable."""
        if self.readable:
            return "readable"
        return "missing" if self.missing else "unreadable"

    def state_fields(self) -> dict:
        """What state.json says about approvals (status adds the ages)."""
        totals = {s: 0 for s in APPROVAL_STATES}
        for (_route, state), n in self.counts.items():
            totals[state] = totals.get(state, 0) + n
        return {
            "approvals": totals,
            "approvals_dir_readable": bool(self.readable),
            "approvals_dir_state": self.dir_state(),
            "oldest_awaiting_timestamp_utc": None
            if self.oldest_awaiting is None
            else iso_ts(self.oldest_awaiting),
            "requests_open": self.open_rows,
        }
