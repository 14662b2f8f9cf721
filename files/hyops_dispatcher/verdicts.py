"""File verdicts: what to do with a file in the records folder from its stat, its prior
ledger row and the request folder's answer (settle, pending, rejected, duplicate,
collision, replay).

Invariant: pure; every file gets exactly one Outcome with a reason.
"""

from __future__ import annotations

import os
import stat
from typing import NamedTuple, Optional, Tuple

from .config import Config
from .decide import Decision
from .jsontext import short
from .record import FUTURE_SKEW_SECONDS, RecordRejected, ledger_name
from .states import DISPATCHED_OUTCOMES


class FileSig(NamedTuple):
    """A file as stat() saw it. The first four fields are what the ledger keeps: a change
    in any of them means "look again" (an in-place edit, a chmod, a replaced file)."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    mode: int = 0  # file type bits (not kept in the ledger)

    @classmethod
    def of(cls, st: os.stat_result) -> FileSig:
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode)

    def key(self) -> Tuple[int, int, int, int]:
        return (self.size, self.mtime_ns, self.ctime_ns, self.inode)

    @property
    def mtime(self) -> float:
        return self.mtime_ns / 1e9


NO_SIG = FileSig(0, 0, 0, 0)


class KnownFile(NamedTuple):
    """What the index (the ledger) knows about one record file name."""

    sig: FileSig
    outcome: str
    decision_id: Optional[str] = None
    gone: bool = False  # the name went away once; a file under it now is new
    retry_at: float = 0.0  # pending: when to read it again


# The reason of a decision row adopted from the requests folder (not yet counted).
ADOPTED_REASON = "adopted from the requests folder"
COUNTED_REASON = "request found in the requests folder (recovered after a restart)"


class PriorDecision(NamedTuple):
    """The ledger's row for a decision_id (what happened to it before)."""

    decision_id: str
    outcome: str
    dispatch_id: Optional[str]
    route: Optional[str]
    decision_epoch: Optional[float]
    file: Optional[str]
    reason: Optional[str]
    handled_at: float


class Outcome(NamedTuple):
    """The verdict on one record file: what the ledger, log and counters get.

    `decision` is set when the decision row is (re)written too; `write` when its request
    file is still to be written. `log` False: seen before, nothing new to say."""

    outcome: str
    reason: str = ""
    decision_id: Optional[str] = None
    dispatch_id: Optional[str] = None
    route: Optional[str] = None
    decision: Optional[Decision] = None
    write: bool = False
    log: bool = True
    retry_at: float = 0.0
    source: str = "file"  # which rule decided: file, read, prior, decide, collision

    @classmethod
    def of_decision(cls, decision: Decision) -> Outcome:
        return cls(
            decision.outcome,
            decision.reason,
            decision.decision_id,
            decision.dispatch_id,
            decision.route,
            decision=decision,
            write=decision.outcome == "emitted",
            source="decide",
        )


SKIP = "skip"  # unchanged since it was handled: nothing to do
READ = "read"  # read the file, then judge what it holds
DECIDED = "decided"  # the stat alone decides (the outcome is in the verdict)


class FileVerdict(NamedTuple):
    action: str  # SKIP, READ or DECIDED
    outcome: Optional[Outcome] = None


def judge_file(
    sig: FileSig,
    name: str,
    config: Config,
    known: Optional[KnownFile],
    now: float,
    look_again: bool = False,
) -> FileVerdict:
    """What to do with a record file from its stat alone. `look_again` (explain) ignores
    that the file was handled before."""
    unchanged = known is not None and not known.gone and known.sig.key() == sig.key()
    # A pending file waits for its deadline, but never longer than a settle wait from now:
    # a deadline further away means the wall clock stepped back.
    waiting = known is not None and now < known.retry_at <= now + config.settle_seconds + 1
    if unchanged and not look_again and (known.outcome != "pending" or waiting):
        return FileVerdict(SKIP)
    if ledger_name(name) != name:
        return FileVerdict(DECIDED, Outcome("rejected", "file name is not valid UTF-8"))
    if stat.S_ISLNK(sig.mode):
        return FileVerdict(DECIDED, Outcome("rejected", "symlink (never followed)"))
    if not stat.S_ISREG(sig.mode):
        return FileVerdict(DECIDED, Outcome("rejected", "not a regular file"))
    if sig.size > config.max_record_bytes:
        reason = f"file is {sig.size} bytes, over max_record_bytes {config.max_record_bytes}"
        return FileVerdict(DECIDED, Outcome("rejected", reason))
    return FileVerdict(READ)


def judge_unreadable(
    problem: RecordRejected, sig: FileSig, known: Optional[KnownFile], config: Config, now: float
) -> Outcome:
    """A file that could not be read or is not a valid record: pending while it may still
    be being written (until settle_seconds after its last change), else rejected (a later
    change re-opens it)."""
    if known is not None and known.outcome == "pending" and known.sig.key() == sig.key():
        # Unchanged since: keep the first deadline (bounded, should the clock step back).
        settle_until = min(known.retry_at - 0.05, now + config.settle_seconds)
    else:
        # min(): a file stamped in the future (clock skew) must not stay pending forever.
        settle_until = min(sig.mtime, now) + config.settle_seconds
    if problem.retryable and now < settle_until:
        first = known is None or known.outcome != "pending"  # one line per file, not per write
        return Outcome(
            "pending",
            f"{problem.reason}; retrying until it settles",
            log=first,
            retry_at=settle_until + 0.05,
            source="read",
        )
    return Outcome("rejected", problem.reason, source="read")


def judge_ahead(
    decision: Decision, sig: FileSig, known: Optional[KnownFile], config: Config, now: float
) -> Outcome:
    """A decision stamped further ahead than the clock skew allows (decide said `pending`):
    held, and read again when it no longer is, or at the latest a settle wait from now
    (a clock corrected forward is noticed then). Logged once per file."""
    due = decision.decision_epoch - FUTURE_SKEW_SECONDS + 0.05
    first = known is None or known.outcome != "pending" or known.sig.key() != sig.key()
    return Outcome(
        "pending",
        decision.reason,
        decision.decision_id,
        route=decision.route,
        log=first,
        retry_at=min(due, now + config.settle_seconds + 1),
        source="decide",
    )


def judge_prior(
    name: str, decision_id: str, prior: Optional[PriorDecision], known: Optional[KnownFile]
) -> Optional[Outcome]:
    """The prior-decision check: a decision that already owns a request never gets a
    second one. None: no prior request, go on to decide()."""
    if prior is None or prior.outcome not in DISPATCHED_OUTCOMES:
        return None
    if prior.file in (None, name):
        # Same file seen again: it keeps the decision's outcome. When the file row is
        # missing the request was adopted after a crash (or a lost ledger) and this is the
        # first time it is counted; when the row is there the file was only touched.
        # Counted once: when the decision row came from a request adopted after a crash,
        # this file is counted now (and the row says so, see Daemon.apply); otherwise it
        # was counted when it was decided, however often the file was rewritten since.
        touched = (known is not None and known.decision_id == decision_id) or (
            prior.reason != ADOPTED_REASON
        )
        reason = (
            f"already handled: {prior.outcome} as {prior.dispatch_id}"
            if touched
            else COUNTED_REASON
        )
        return Outcome(
            prior.outcome, reason, decision_id, prior.dispatch_id, log=not touched, source="prior"
        )
    return Outcome(
        "duplicate",
        f"decision_id already {prior.outcome} as {prior.dispatch_id} from {prior.file}; "
        "no new request",
        decision_id,
        prior.dispatch_id,
        source="prior",
    )


def seen_before(known: Optional[KnownFile], sig: FileSig, outcome: Outcome) -> Outcome:
    """The very same file (size, mtime, ctime, inode) back under its name after it was
    seen gone (a records folder moved away and back) with the outcome it had: not a new
    outcome to count or log."""
    same = known is not None and known.gone and known.sig.key() == sig.key()
    if same and known is not None and known.outcome == outcome.outcome and not outcome.write:
        return outcome._replace(log=False)
    return outcome


IN_THIS_BATCH = {"source_decision_id": "(a decision in the same batch)"}


def judge_collision(decision: Decision, existing: Optional[dict]) -> Outcome:
    """An emitted decision against the request file already at its dispatch id (None:
    the slot is free). Never overwrite a request: it may be another decision's, or being
    processed by the consumer."""
    outcome = Outcome.of_decision(decision)
    if existing is None:
        return outcome
    owner = existing.get("source_decision_id")
    if owner != decision.decision_id:
        return Outcome(
            "rejected",
            f"dispatch id {decision.dispatch_id} already used by decision {short(owner)}",
            source="collision",
        )
    return outcome._replace(
        reason="request already in the requests folder (recovered)",
        write=False,
        source="collision",
    )


def judge_replay(
    asked: str, prior: Optional[PriorDecision], held: Optional[str], existing: Optional[dict]
) -> Optional[str]:
    """Why `replay asked` must not write (None: it may). `held` is the decision_id the
    ledger's record file holds now (None: not read yet); `existing` the request file at the
    replayed dispatch id."""
    if prior is None:
        return f"decision_id {asked!r} is not in the ledger (not seen, or pruned); see 'list'"
    if prior.outcome == "emitted":
        return (
            f"decision {asked} was already dispatched as {prior.dispatch_id}; approve that "
            "request instead (a new one would need a second approval)"
        )
    if held is not None and held != asked:
        return (
            f"record file {prior.file} now holds decision {held}, not {asked}; nothing "
            "written (replay that one by its own id if it is meant)"
        )
    if existing is not None:
        owner = existing.get("source_decision_id")
        if owner == asked:
            return (
                f"decision {asked} already has a request in the requests folder "
                f"({existing.get('dispatch_id')}); approve that request instead"
            )
        return f"its dispatch id is already used by decision {short(owner)}; nothing written"
    return None
