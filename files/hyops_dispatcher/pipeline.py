"""One record file through the pipeline: read (bounded, no symlink) -> judge -> decide.
The daemon, `explain` and `replay` use it, so exactly-once is enforced in one place.

Invariant: reads only the record file; writes nothing. A read that fails for a reason of
the record (its mode, its type, its content) is a verdict; any other failure (descriptors,
memory, I/O: the host's) is a ReadFault, never a verdict.
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
    judge_ahead,
    judge_collision,
    judge_file,
    judge_prior,
    judge_unreadable,
    seen_before,
)

# The errors of an open or a read that are about the record file itself: final verdicts.
# Every other errno (EMFILE, ENFILE, ENOMEM, EIO, EINTR, ESTALE...) is about the host.
RECORD_ERRNOS = frozenset(
    (errno.EACCES, errno.EPERM, errno.ENXIO, errno.ENODEV, errno.EISDIR, errno.EOVERFLOW)
)


class ReadFault(OSError):
    """A record could not be stat'ed, opened or read for a reason of the host, not of the
    record (too many open files, no memory, an I/O error): the file keeps no verdict and
    is read again; the loop reports the daemon degraded and retries (1, 2, 4 ... 60 s)."""


def read_fault(path: str, exc: OSError) -> Exception:
    """The exception a failed stat, open or read of a record becomes."""
    if exc.errno in RECORD_ERRNOS:
        return RecordRejected(f"unreadable: {exc.strerror}")
    return ReadFault(exc.errno, f"cannot read record {path}: {exc.strerror or exc}")


def read_record_bytes(path: str, cap: int) -> Tuple[bytes, FileSig]:
    """Read a record without following symlinks or blocking on a FIFO; the signature is of
    the open file, and a file that changes while being read counts as still being written.
    Raises RecordRejected (about the record) or ReadFault (about the host)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RecordRejected("symlink (never followed)") from None
        if exc.errno == errno.ENOENT:
            raise RecordRejected("file vanished while being read", True) from None
        raise read_fault(path, exc) from None
    try:
        try:
            before = FileSig.of(os.fstat(fd))
        except OSError as exc:
            raise read_fault(path, exc) from None
        if not stat.S_ISREG(before.mode):
            raise RecordRejected("not a regular file")
        chunks = []
        total = 0
        while total <= cap:
            try:
                chunk = os.read(fd, min(1 << 20, cap + 1 - total))
            except OSError as exc:
                raise read_fault(path, exc) from None
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > cap:
            raise RecordRejected(f"file is over max_record_bytes {cap}")
        try:
            after = FileSig.of(os.fstat(fd))
        except OSError as exc:
            raise read_fault(path, exc) from None
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
                if decision.outcome == "pending":
                    outcome = judge_ahead(decision, sig, known, config, now)
                if decision.outcome == "emitted":
                    assert decision.dispatch_id is not None
                    outcome = judge_collision(decision, existing(decision.dispatch_id))
    assert outcome is not None
    return Judged(seen_before(known, sig, outcome), sig)
