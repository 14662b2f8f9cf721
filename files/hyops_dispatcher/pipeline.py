"""One record file through the pipeline: read (bounded, no symlink) -> judge -> decide.
The daemon, `explain` and `replay` use it, so exactly-once is enforced in one place.

Invariant: reads only the record file; writes nothing.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Callable, NamedTuple, Optional, Tuple

from .config import Config
from .decide import EpisodeView, decide
from .record import RecordRejected, read_valid_record
from .verdicts import (
    READ,
    SKIP,
    FileSig,
    KnownFile,
    Outcome,
    PriorDecision,
    judge_collision,
    judge_file,
    judge_prior,
    judge_unreadable,
    seen_before,
)


def read_record_bytes(path: str, cap: int) -> Tuple[bytes, FileSig]:
    """Read a record without following symlinks or blocking on a FIFO; the signature is of
    the open file, and a file that changes while being read counts as still being written."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RecordRejected("symlink (never followed)") from None
        if exc.errno == errno.ENOENT:
            raise RecordRejected("file vanished while being read", True) from None
        raise RecordRejected(f"unreadable: {exc.strerror}") from None
    try:
        before = FileSig.of(os.fstat(fd))
        if not stat.S_ISREG(before.mode):
            raise RecordRejected("not a regular file")
        chunks = []
        total = 0
        while total <= cap:
            try:
                chunk = os.read(fd, min(1 << 20, cap + 1 - total))
            except OSError as exc:
                raise RecordRejected(f"unreadable: {exc.strerror}") from None
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > cap:
            raise RecordRejected(f"file is over max_record_bytes {cap}")
        after = FileSig.of(os.fstat(fd))
        if after.key() != before.key():
            raise RecordRejected("file changed while being read", True)
        return b"".join(chunks), after
    finally:
        os.close(fd)


class Judged(NamedTuple):
    """judge_record_file's answer: the outcome and the signature of the file as read."""

    outcome: Outcome
    sig: FileSig


def judge_record_file(
    config: Config,
    name: str,
    sig: FileSig,
    known: Optional[KnownFile],
    now: float,
    *,
    prior_of: Callable[[str], Optional[PriorDecision]],
    existing: Callable[[str], Optional[dict]],
    episodes: Optional[EpisodeView],
    look_again: bool = False,
) -> Optional[Judged]:
    """read -> judge -> decide for one record file: the daemon and `explain` both call
    this. `prior_of` looks a decision up in the ledger, `existing` the request file at a
    dispatch id, `episodes` what requests exist (DR episodes, supersedes). None:
    unchanged since it was handled (nothing to do)."""
    verdict = judge_file(sig, name, config, known, now, look_again)
    if verdict.action == SKIP:
        return None
    outcome = verdict.outcome
    if verdict.action == READ:
        path = os.path.join(config.records_dir, name)
        try:
            data, sig = read_record_bytes(path, config.max_record_bytes)
            valid = read_valid_record(data)
        except RecordRejected as problem:
            outcome = judge_unreadable(problem, sig, known, config, now)
        else:
            outcome = judge_prior(name, valid.decision_id, prior_of(valid.decision_id), known)
            if outcome is None:
                decision = decide(
                    valid,
                    record_path=path,
                    mtime=sig.mtime,
                    config=config,
                    now=now,
                    episodes=episodes,
                )
                outcome = Outcome.of_decision(decision)
                if decision.outcome == "emitted":
                    assert decision.dispatch_id is not None
                    outcome = judge_collision(decision, existing(decision.dispatch_id))
    assert outcome is not None
    return Judged(seen_before(known, sig, outcome), sig)
