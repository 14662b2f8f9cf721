"""The loop: wires the parts, waits for events, runs passes, owns retry and health.

Invariant: a part's failure is handled here, once (degrade, back off 1, 2, 4 ... 60 s);
SIGTERM finishes the current write; SIGHUP reloads.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import socket
import sqlite3
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

from .approvals import ApprovalBook
from .batch import Batch, WriteFailed
from .config import Config, ConfigError, load_config
from .console import age
from .decide import Decision, decide
from .episodes import LedgerEpisodes
from .fsio import UnsafeFile, check_own_path, remove_stale_temps
from .host import Notifier, acquire_lock, release_free_memory
from .inbox import ReplayInbox
from .index import FileIndex
from .jsonlog import JsonLog
from .ledger import (
    CLEAN_STOP,
    LEDGER_BUSY_SECONDS,
    LEDGER_OPEN_WAIT,
    LOOKUP_CHUNK,
    Ledger,
    is_corrupt,
)
from .metrics import MetricsReport
from .pipeline import ReadFault, judge_record_file, read_fault, read_record_bytes
from .record import RecordRejected, is_record_name, read_valid_record
from .replayguard import replay_conflicts
from .report import StateReport
from .runconfig import keep_running_config, running_copy_path
from .states import BATCH_MAX, DISPATCHED_OUTCOMES, VERSION
from .synthetic import SyntheticSweep
from .verdicts import COUNTED_REASON, NO_SIG, FileSig, KnownFile, Outcome, judge_file, judge_replay
from .watcher import Watcher

# Full stat scan of the records folder as a belt-and-braces check for in-place edits of
# already handled files that no inotify event reported.
FULL_SCAN_SECONDS = 3600.0

# A long pass (listing, full scan, retention prune, approvals resync) runs for at most
# this long per loop iteration; the loop (events, watchdog, state) runs in between.
SLICE_SECONDS = 0.02

# A pass over at most this many names keeps the lstat results it ordered them by, for
# consider() (one lstat per record instead of two); a bigger one keeps no object per name.
LOOKED_MAX = 2048

# While the first pass before READY progresses, each EXTEND_TIMEOUT_USEC asks systemd for
# this much more start time (the unit's TimeoutStartSec is 60 s).
START_EXTEND_SECONDS = 30.0

# After a failed write (disk full...) the daemon retries in-process, pausing up to this.
WRITE_RETRY_MAX = 60.0


class Parts(NamedTuple):
    """What a started daemon runs on, all of it open and ready."""

    notifier: Notifier
    lock_fd: Optional[int]
    ledger: Ledger
    index: FileIndex
    batch: Batch
    report: StateReport
    approvals: ApprovalBook
    watcher: Watcher
    replays: ReplayInbox


def feed_and_sleep(notifier: Notifier, mono: Callable[[], float], seconds: float) -> None:
    """Sleep, feeding the watchdog (a wait is never longer than WatchdogSec)."""
    until = mono() + seconds
    while True:
        notifier.ping(mono())
        left = until - mono()
        if left <= 0:
            return
        due = notifier.ping_due()
        step = left if due is None else max(0.01, min(left, due - mono()))
        time.sleep(step)


def start_daemon(
    config: Config,
    log: JsonLog,
    clock: Callable[[], float] = time.time,
    use_inotify: bool = True,
    owner: Optional[Tuple[int, int]] = None,
    monotonic: Callable[[], float] = time.monotonic,
    hold_lock: bool = True,
    command: str = "run",
) -> Daemon:
    """Open everything a pass needs (folders, the instance lock, the ledger, the index, the
    batch, the approvals, the watch) and return the running Daemon; on a failure nothing
    stays open. `owner`: (uid, gid) for files created when an operator runs as root;
    `command` (run, once, replay) is written into the lock file beside the pid."""
    cfg = config
    notifier = Notifier()
    replays = ReplayInbox(cfg)
    for folder in (
        os.path.dirname(cfg.state_file),
        cfg.requests_dir,
        os.path.dirname(cfg.ledger_file),
        replays.folder,
    ):
        if not os.path.isdir(folder):
            os.makedirs(folder, mode=0o750, exist_ok=True)
            if owner is not None:  # an operator command run as root
                os.chown(folder, *owner)
    lock_fd = acquire_lock(cfg.lock_file, command) if hold_lock else None
    if command != "run" and hold_lock:
        # Only `run` answers SIGUSR1; a `once` or a replay without a daemon holding the
        # lock must not die of one (an old `replay` may still send it).
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    ledger: Optional[Ledger] = None
    try:
        check_own_path(cfg.state_file)
        for folder in (cfg.requests_dir, os.path.dirname(cfg.state_file), replays.folder):
            remove_stale_temps(folder)
        # SQLite blocks while it waits for a lock: never as long as a watchdog interval.
        watchdog = notifier.watchdog_s
        busy = LEDGER_BUSY_SECONDS if watchdog is None else min(LEDGER_BUSY_SECONDS, watchdog / 4)
        ledger, rebuilt = Ledger.open_or_recover(
            cfg.ledger_file,
            log,
            lambda seconds: feed_and_sleep(notifier, monotonic, seconds),
            LEDGER_OPEN_WAIT,
            busy,
        )
        report = StateReport(log, clock(), monotonic)
        report.restore(ledger, rebuilt)
        batch = Batch(cfg.requests_dir, ledger, owner)
        # After a clean stop every request on disk has its ledger row (requests are made
        # durable before the rows, and stop() commits the last batch): the requests folder
        # only needs reconciling after a crash or with a new ledger.
        clean = not rebuilt and ledger.meta_get(CLEAN_STOP) == "1"
        if not clean:
            batch.reconcile(log, clock())
        ledger.begin()
        ledger.meta_set(CLEAN_STOP, "0")
        ledger.commit()
        index = FileIndex(ledger)
        index.load()
        approvals = ApprovalBook(cfg, log, ledger, resync=not clean, monotonic=monotonic)
        watcher = Watcher(cfg.records_dir, log, use_inotify)
        watcher.arm()
    except BaseException:
        if ledger is not None:
            ledger.close()
        if lock_fd is not None:
            os.close(lock_fd)
        raise
    release_free_memory()  # the compiler's scratch, before the first pass
    parts = Parts(notifier, lock_fd, ledger, index, batch, report, approvals, watcher, replays)
    return Daemon(config, log, parts, clock, monotonic)


class Daemon:
    """The loop over running parts (start_daemon builds them): each pass asks the Watcher
    which names to look at and runs read -> judge -> decide -> apply on each
    (judge_record_file, then apply()); the Batch makes the results durable, the
    StateReport tells the world. After stop() it is closed for good."""

    def __init__(
        self,
        config: Config,
        log: JsonLog,
        parts: Parts,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.log = log
        self.clock = clock  # wall time: timestamps, record ages, retention
        self.mono = monotonic  # intervals: polls, pings, heartbeats, retries
        self.notifier = parts.notifier
        self.lock_fd = parts.lock_fd
        self.ledger = parts.ledger
        self.index = parts.index
        self.batch = parts.batch
        self.report = parts.report
        self.approvals = parts.approvals
        self.watcher = parts.watcher
        self.replays = parts.replays
        self.metrics = MetricsReport(config, self.report)
        self.synthetic = SyntheticSweep(log, self.ledger)  # validate-handoff's leftovers
        self.closed = False
        self.last_pass = 0.0  # wall clock at the end of the last loop pass (metrics)
        self.last_poll = 0.0
        # A failed write (disk full, requests folder unwritable, ledger locked) is tried
        # again in-process at this monotonic time, the pause doubling up to a minute.
        self.write_retry_at = 0.0
        self.write_pause = 0.0
        self.stop_requested = False
        self.reload_requested = False
        self.poll_requested = False
        self.ready_sent = False  # until READY, a first pass that progresses extends the start
        self.last_extend = -START_EXTEND_SECONDS
        # The long pass in progress (a listing or the full scan), run in slices between
        # loop iterations; a full scan asked while it runs follows it.
        self.sweep: Optional[Iterator[int]] = None
        self.full_wanted = False
        # The lstat results of the names a small pass ordered (_oldest_first), used once.
        self.looked: Dict[str, FileSig] = {}

    def wait(self, seconds: float) -> None:
        feed_and_sleep(self.notifier, self.mono, seconds)

    def stop(self) -> None:
        """Commit the last batch, mark a clean stop, close everything (idempotent)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.drop_sweep()
            self.finish_batch()
            if not self.batch.failed:
                self.ledger.begin()
                self.ledger.meta_set(CLEAN_STOP, "1")
                self.ledger.commit()
        except (OSError, sqlite3.Error) as exc:
            # Still failing (disk full): the next start reconciles the requests folder.
            self.log.event("error", level="ERROR", reason=f"stop: cannot write: {exc}")
            self.batch.mark_failed()
        self.ledger.close()
        self.watcher.close()
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    # ---------------------------------------------------------------- passes
    def scan(
        self, full: bool = False, names: Optional[Iterable[str]] = None, sliced: bool = False
    ) -> int:
        """One pass. `names`: only these (inotify); `full`: stat every file; else the cheap
        safety net (folder mtime, listing only when it changed, pending files due).
        `sliced` (the loop's passes): a listing or a full scan is started as a sweep, run
        in slices between loop iterations (advance_sweep), instead of in this pass."""
        now = self.clock()
        if names is not None:
            todo = [n for n in names if is_record_name(n)]
        else:
            listed = self._safety_net(full, now, sliced)
            if listed is None:
                return 0
            todo = listed
        handled = 0
        fault: Optional[ReadFault] = None
        try:
            self.log.hold()  # the lines of a batch go out together, before it is durable
            ordered = self._oldest_first(todo)
            for pos, name in enumerate(ordered):
                if self.stop_requested:
                    break  # SIGTERM: the write in hand is done; the rest waits for the next start
                if pos % 128 == 0:  # before this file: nothing of it is staged yet
                    self.notifier.ping(self.mono())
                    self._first_pass_progress(pos, len(ordered))
                if pos % LOOKUP_CHUNK == 0:
                    self.index.prefetch(ordered[pos : pos + LOOKUP_CHUNK])
                try:
                    handled += self._consider_or_flush(name, now)
                except ReadFault as exc:
                    # The host's fault, not the record's: no verdict; the others go on, and
                    # the loop retries this one (degraded) once the pass is done.
                    fault = fault or exc
                if self.batch.full:
                    self.finish_batch()
            self.finish_batch()
        finally:
            self.index.end_pass()
            self.looked.clear()
            self.log.release()
        self._note_remade()
        if fault is not None:
            raise fault
        return handled

    def _consider_or_flush(self, name: str, now: float) -> int:
        """consider(); out of descriptors while requests of this batch hold some, the batch
        is made durable first (which frees them) and the file is tried once more."""
        try:
            return self.consider(name, now)
        except ReadFault as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE) or not len(self.batch.writes):
                raise
        self.finish_batch()
        return self.consider(name, now)

    def _first_pass_progress(self, seen: int, total: int) -> None:
        """Before READY (the first pass over a backlog), at most once a second: tell
        systemd the start is making progress (EXTEND_TIMEOUT_USEC moves the start timeout
        START_EXTEND_SECONDS ahead, so a big backlog cannot fail the unit), and rewrite
        state.json with how far the pass is (`first_pass`, what `status` shows)."""
        mono = self.mono()
        if self.ready_sent or mono - self.last_extend < 1.0:
            return
        self.last_extend = mono
        usec = int(START_EXTEND_SECONDS * 1e6)
        self.notifier.send(
            f"EXTEND_TIMEOUT_USEC={usec}\nSTATUS=first pass: {seen} of {total} records"
        )
        self.finish_batch()  # state.json counts only what is durable
        self.report.first_pass = (seen, total)
        with contextlib.suppress(OSError):  # only a view: the write at READY is the one that counts
            self.report.write(self.clock(), self.config, self.index, self.watcher.mode, force=True)

    def _note_remade(self) -> None:
        if self.batch.folder_remade():
            self.report.error(
                f"requests folder {self.config.requests_dir} was missing; re-created (0750)",
                level="WARNING",
            )

    # ---------------------------------------------------------------- sweeps
    def start_sweep(self, full: bool, mtime_ns: Optional[int] = None, upkeep: bool = False) -> None:
        """Start a long pass (the listing, or with `full` the stat of every file; with
        `upkeep`, the hourly one, then the retention prune and the approvals resync) that
        advance_sweep runs in slices."""
        if self.sweep is not None:
            self.full_wanted = self.full_wanted or full
            return
        if mtime_ns is None:
            mtime_ns = self.watcher.folder_mtime_ns()
        self.full_wanted = False
        if full:  # the hourly timer counts from the start of a scan
            self.watcher.last_full_scan = self.mono()
        self.sweep = self._sweep_steps(full, mtime_ns, upkeep and full)

    def _sweep_steps(self, full: bool, mtime_ns: int, upkeep: bool) -> Iterator[int]:
        """The steps of one sweep; each yields the records it handled (mostly none). The
        records folder is read as it is at each step: records that come meanwhile are
        handled by the loop (inotify) and are simply known when the sweep gets to them."""
        kind = "full stat scan" if full else "listing"
        self.log.event("scan-started", level="DEBUG", reason=kind)
        started = self.mono()
        todo: List[str] = []
        try:
            for _ in self.watcher.sweep(self.index, full, self.clock(), todo):
                yield 0
        except OSError as exc:
            self.report.folder_problem(
                f"cannot list records folder: {exc}", self.config.records_dir
            )
            return
        self.watcher.listed(mtime_ns, full, started)
        # What changed is handled at the end, oldest first (coalescing follows decision
        # order), like a listing done in one go.
        yield self.scan(names=todo)
        if upkeep:
            removed = 0
            for step in self.ledger.prune_steps(self.clock(), self.config.ledger_retention_seconds):
                removed += step
                yield 0
            if removed:
                self.log.event("pruned", level="DEBUG", reason=f"pruned {removed} ledger rows")
            for _ in self.approvals.sync_steps():
                yield 0
        self.ledger.shrink()  # a long pass: its scratch memory goes back
        release_free_memory()
        self.log.event("scan-finished", level="DEBUG", reason=kind)

    def advance_sweep(self) -> int:
        """Run the sweep in progress for one slice (at most SLICE_SECONDS, less when an
        inotify event waits; then the loop goes on: events, pings, state). Returns the
        records handled."""
        if self.sweep is None:
            return 0
        handled = 0
        until = self.mono() + SLICE_SECONDS
        try:
            while not self.stop_requested:
                handled += next(self.sweep)
                # A record that came ends the slice early: it is dispatched first.
                if self.mono() >= until or self.watcher.has_events():
                    return handled
        except StopIteration:
            pass
        except BaseException:
            self.sweep = None  # a failed step ends the sweep; the retry lists again
            raise
        self.sweep = None
        if self.full_wanted:
            self.start_sweep(full=True, upkeep=True)
        return handled

    def drop_sweep(self) -> None:
        if self.sweep is not None:
            self.sweep.close()
            self.sweep = None

    def _safety_net(self, full: bool, now: float, sliced: bool = False) -> Optional[List[str]]:
        """Names the poll-timer pass looks at: the listing (when the folder changed, or
        `full`) plus the pending and rejected files. None: the folder is unusable.
        `sliced`: the listing becomes a sweep (none starts while one runs; a full scan
        asked meanwhile follows it)."""
        records_dir = self.config.records_dir
        try:
            mtime_ns = self.watcher.folder_mtime_ns()
        except OSError as exc:
            self.report.folder_problem(f"records folder unusable: {exc}", records_dir)
            return None
        # A folder that failed stays suspect until it can be listed again; a chmod does not
        # change its mtime, so list it on every pass until then.
        recovering = not self.report.records_dir_ok
        hourly = full  # the poll timer's full scan (not a lost watch's)
        if self.watcher.rearm_if_lost():
            full = True
        todo: List[str] = []
        if sliced and not recovering:
            if full or self.watcher.needs_listing(mtime_ns):
                self.start_sweep(full, mtime_ns, upkeep=hourly)
        elif full or recovering or self.watcher.needs_listing(mtime_ns):
            try:
                todo = self.watcher.changed_names(self.index, full or recovering, now)
            except OSError as exc:
                self.report.folder_problem(f"cannot list records folder: {exc}", records_dir)
                return None
            if recovering:
                self.report.folder_usable(records_dir)
                self.watcher.arm()  # the old watch (if any) may belong to a replaced folder
            self.watcher.listed(mtime_ns, full or recovering, self.mono())
        # Bad files cost nothing here: pending ones only when their deadline is due; a
        # rejected one when inotify names it, the listing or the full scan finds it
        # changed; without inotify one slice of them per pass (duplicates are dropped by
        # _oldest_first).
        todo.extend(self.index.pending_due(now, self._settle_horizon()))
        if self.watcher.inotify is None and not full:
            todo.extend(self.index.rejected_slice())
        return todo

    def _oldest_first(self, names: List[str]) -> List[str]:
        """Oldest first, so coalescing follows decision order. A first pass over 100 000
        files must not hold a stat result (or a sort key tuple) per file: one int per
        name packs (mtime, position)."""
        if len(names) < 2:
            return names
        # In place where it can be: no second list of names, and the packed ints are
        # replaced one by one by the names they point to.
        names.sort()
        kept = 0
        for name in names:
            if kept == 0 or name != names[kept - 1]:
                names[kept] = name
                kept += 1
        del names[kept:]
        packed: List[Any] = []
        shift = len(names).bit_length()
        keep = len(names) <= LOOKED_MAX
        folder = os.path.join(self.config.records_dir, "")
        for pos, name in enumerate(names):
            try:
                st = os.lstat(folder + name)
            except OSError:
                mtime_ns = 0  # gone, or consider() stats again and reports why
            else:
                mtime_ns = st.st_mtime_ns
                if keep:
                    self.looked[name] = FileSig.of(st)  # 5 ints, not a whole stat result
            packed.append((max(mtime_ns, 0) << shift) | pos)
        packed.sort()
        mask = (1 << shift) - 1
        for i, p in enumerate(packed):
            packed[i] = names[p & mask]
        return packed

    def consider(self, name: str, now: float) -> int:
        """read -> judge -> decide -> apply for one name. Returns 1 if it was handled."""
        path = os.path.join(self.config.records_dir, "") + name
        try:
            # The lstat of this pass's ordering, when it kept one: the file as it was a
            # moment ago (the read checks it again, and a change after it is an event).
            sig = self.looked.pop(name, None) or FileSig.of(os.lstat(path))
        except FileNotFoundError:
            self.index.forget(name, now)
            return 0
        except OSError as exc:
            problem = read_fault(path, exc)
            if not isinstance(problem, RecordRejected):
                raise problem from None  # about the host: no verdict, the loop retries
            # About the file (EACCES, EPERM...): a verdict, judged again when it changes.
            known = self.index.lookup(name)
            self.apply(name, NO_SIG, Outcome("rejected", str(problem)), now, known)
            return 1
        known = self.index.lookup(name)
        try:
            judged = judge_record_file(
                self.config,
                name,
                sig,
                known,
                now,
                prior_of=self.ledger.prior,
                existing=self.batch.existing,
                episodes=LedgerEpisodes(self.config, self.ledger, self.batch.is_staged, now),
            )
            if judged is None:
                return 0
            self.apply(name, judged.sig, judged.outcome, now, known)
        except (sqlite3.Error, ReadFault):
            raise  # the ledger is broken (exit, systemd restarts us), or the host: retried
        except OSError as exc:
            # Disk full, requests folder unwritable...: not the record's fault. Leave it
            # unhandled: the daemon is degraded and tries again (the listing is forced).
            raise WriteFailed(f"cannot write the request for {name}: {exc}") from exc
        except Exception as exc:  # a bug must not stop the daemon; it is logged and counted
            reason = f"internal error: {type(exc).__name__}: {exc}"
            self.report.internal_error(f"{name}: {type(exc).__name__}: {exc}")
            self.apply(name, sig, Outcome("rejected", reason), now, known)
        return 1

    def apply(
        self,
        name: str,
        sig: FileSig,
        outcome: Outcome,
        now: float,
        known: Optional[KnownFile] = None,
        event: Optional[str] = None,
    ) -> None:
        """Write what was judged: the request (staged, durable at finish_batch), the
        decision row, the file row, the counters and the log line."""
        decision = outcome.decision
        if outcome.write and decision is not None:
            self.batch.stage(decision)  # the request first; the ledger rows only after it
        self.ledger.begin()
        if decision is not None:
            self.ledger.put_decision(
                decision.decision_id,
                outcome.outcome,
                outcome.dispatch_id,
                decision.route,
                decision.decision_epoch,
                name,
                outcome.reason,
                now,
            )
            if outcome.outcome == "emitted":
                self._note_emit(decision)
                self.approvals.note(decision.request, replace=outcome.write)
        elif (
            outcome.source == "prior"
            and outcome.log
            and outcome.outcome in DISPATCHED_OUTCOMES
            and outcome.decision_id is not None
        ):
            # An adopted request counted now, once: later rewrites of the file are not.
            self.ledger.settle_adopted(outcome.decision_id, COUNTED_REASON)
        self.index.put(name, sig, outcome, known, now)
        self.report.outcome(name, outcome, event)

    def _note_emit(self, decision: Decision) -> None:
        self.report.emitted(decision)

    def finish_batch(self) -> None:
        self.log.flush()
        if self.ledger.in_tx or len(self.batch.writes):
            self.batch.finish(self.report.meta())

    def prune(self) -> None:
        """The retention prune in one go (`once`); the loop's runs in its sweep."""
        self.finish_batch()
        removed = self.ledger.prune(self.clock(), self.config.ledger_retention_seconds)
        if removed:
            self.log.event("pruned", level="DEBUG", reason=f"pruned {removed} ledger rows")

    # ---------------------------------------------------------------- replay
    def replay(self, decision_id: str, confirmed: bool = False) -> dict:
        """Dispatch a decision the rules held back (stale, skipped, unrouted, coalesced),
        through the same checks and write path as every other request. A decision older
        than another route's latest request, or one whose opposite request awaits
        approval, is replayed only `confirmed` (--yes). Returns the answer for the
        operator."""
        now = self.clock()
        prior = self.ledger.prior(decision_id)
        refusal = judge_replay(decision_id, prior, None, None)
        if refusal is not None or prior is None:
            return {"ok": False, "error": refusal}
        name = prior.file or ""
        path = os.path.join(self.config.records_dir, name)
        try:
            sig = FileSig.of(os.lstat(path))
            verdict = judge_file(sig, name, self.config, None, now, look_again=True)
            if verdict.outcome is not None:
                raise RecordRejected(verdict.outcome.reason)
            data, sig = read_record_bytes(path, self.config.max_record_bytes)
            valid = read_valid_record(data)
        except (RecordRejected, OSError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
            return {"ok": False, "error": f"cannot replay {decision_id}: record {path}: {reason}"}
        decision = decide(
            valid,
            record_path=path,
            mtime=sig.mtime,
            config=self.config,
            now=now,
            force=True,
        )
        existing = self.batch.existing(decision.dispatch_id) if decision.dispatch_id else None
        refusal = judge_replay(decision_id, prior, valid.decision_id, existing)
        if refusal is None and decision.outcome != "emitted":
            refusal = f"cannot replay {decision_id}: {decision.reason}"
        if refusal is not None:
            return {"ok": False, "error": refusal}
        episodes = LedgerEpisodes(self.config, self.ledger, self.batch.is_staged, now)
        conflicts = replay_conflicts(
            self.config, self.ledger, episodes, decision.route or "", decision.decision_epoch
        )
        if conflicts and not confirmed:
            return {
                "ok": False,
                "needs_yes": True,
                "conflicts": conflicts,
                "error": f"replay of {decision_id} ({decision.route}, decided "
                f"{age(now - decision.decision_epoch)} ago) needs --yes: "
                + "; ".join(conflicts)
                + "; nothing written",
            }
        outcome = Outcome.of_decision(decision)._replace(
            reason=f"replayed by operator (was {prior.outcome})"
        )
        self.apply(name, sig, outcome, now, self.index.lookup(name), event="replayed")
        self.finish_batch()
        request = decision.request or {}
        return {
            "ok": True,
            "dispatch_id": decision.dispatch_id,
            "request": self.batch.target(decision.dispatch_id or ""),
            "status": request.get("status"),
        }

    def answer_replays(self) -> None:
        for decision_id in self.replays.asks():
            try:
                answer = self.replay(decision_id, self.replays.confirmed(decision_id))
            except (OSError, sqlite3.Error):
                raise
            except Exception as exc:  # a bug answers the operator instead of stopping us
                answer = {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}
            problem = self.replays.answer(decision_id, answer)
            if problem is not None:  # the operator's side times out and says so
                self.report.error(
                    f"replay {decision_id}: {problem}; the ask is dropped", level="WARNING"
                )

    # ---------------------------------------------------------------- state.json
    def write_state(self, force: bool = False) -> None:
        now = self.clock()
        self.last_pass = self.last_pass or now
        if not self.closed and self.approvals.refresh(now):
            self.report.add_fields(self.approvals.state_fields())
        before = self.report.last_write
        self.report.write(now, self.config, self.index, self.watcher.mode, force)
        # The metrics file follows state.json's cadence (a burst rewrites it at most every
        # STATE_MIN_INTERVAL, not per batch), its own heartbeat and its retries.
        mono = self.mono()
        if self.report.last_write == before and mono < self.metrics.due():
            return
        snap = self.metrics.snapshot(
            self.approvals, self.index, self.watcher.mode, self.last_pass, now
        )
        if self.metrics.write(snap, mono, force):
            # The metrics file just became unwritable: status says so now, not a pass later.
            self.report.write(now, self.config, self.index, self.watcher.mode, force=True)

    # ---------------------------------------------------------------- loop
    def reload(self) -> None:
        try:
            new = load_config(self.config.path)
        except ConfigError as exc:
            self.report.reload_refused(f"reload refused: {exc}; keeping the running config")
            return
        if new.paths() != self.config.paths():
            self.report.reload_refused(
                "reload refused: root, records, requests, state, ledger or log path "
                "changed; restart the service for that; keeping the running config"
            )
            return
        # What depends on the config is built again from it; the folders they write stay
        # (paths() is unchanged) and their rows stay in the ledger.
        self.config = new
        self.approvals = ApprovalBook(new, self.log, self.ledger, resync=False, monotonic=self.mono)
        self.metrics = MetricsReport(new, self.report)
        self.log.reconfigure(new.log_level, new.log_max_bytes, new.log_backup_count)
        self.report.reloaded()
        self.keep_config()
        self.log.event("config-reloaded", config_digest=new.digest, routes=sorted(new.routes))

    def keep_config(self) -> None:
        """The config in force, kept under state/ for the read commands."""
        try:
            keep_running_config(self.config)
            self.report.clear("running-config")
        except OSError as exc:
            self.report.error(
                f"cannot keep the running config at {running_copy_path(self.config)}: {exc}",
                level="WARNING",
                cause="running-config",
            )

    def run_forever(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old_wakeup = signal.set_wakeup_fd(wake_w)

        def on_stop(_sig: int, _frm: Any) -> None:
            self.stop_requested = True

        def on_hup(_sig: int, _frm: Any) -> None:
            self.reload_requested = True

        def on_usr1(_sig: int, _frm: Any) -> None:
            self.poll_requested = True

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)
        signal.signal(signal.SIGUSR1, on_usr1)
        try:
            self.log.event(
                "started",
                pid=os.getpid(),
                host=socket.gethostname(),
                config=self.config.path,
                config_digest=self.config.digest,
                watcher=self.watcher.mode,
                tracked_files=self.index.tracked,
                version=VERSION,
            )
            self.keep_config()
            # READY only after the first pass: "ready" means every file present at start
            # has an outcome (or is pending) and state.json is fresh. That pass lists the
            # folder (new and replaced files); the stat of every file, for files edited in
            # place while we were stopped, follows right after READY.
            # A write failure in the first pass (disk full) still ends in READY, reported
            # degraded: exiting would only run into the unit's start limit.
            self._guarded(self.scan)
            self.report.first_pass = None
            self.report.set_status("running")
            self._guarded(lambda: self.write_state(force=True))
            self.ready_sent = True
            self.notifier.send(
                f"READY=1\nSTATUS=watching {self.config.records_dir}\nMAINPID={os.getpid()}"
            )
            self.notifier.ping(self.mono(), force=True)
            self._guarded(self._after_ready)
            self.ledger.shrink()
            release_free_memory()
            self.last_poll = self.mono()
            while not self.stop_requested:
                timeout = self._next_timeout()
                fd = self.watcher.fd
                fds = [wake_r] + ([fd] if fd is not None else [])
                try:
                    ready, _, _ = select.select(fds, [], [], timeout)
                except InterruptedError:
                    ready = []
                if wake_r in ready:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(wake_r, 512):
                            pass
                if self.stop_requested:
                    break
                if self.reload_requested:
                    self.reload_requested = False
                    self.notifier.send("RELOADING=1")
                    self.reload()
                    self.notifier.send("READY=1")
                inotify_ready = fd is not None and fd in ready
                self._guarded(lambda: self._tick(inotify_ready))  # noqa: B023 (called at once)
                self.notifier.ping(self.mono())
        finally:
            self.notifier.send("STOPPING=1")
            self.report.set_status("stopping")
            self.stop()
            self.report.set_status("stopped")
            with contextlib.suppress(OSError):
                self.write_state(force=True)
            self.log.event("stopped", pid=os.getpid(), host=socket.gethostname())
            signal.set_wakeup_fd(old_wakeup)
            os.close(wake_r)
            os.close(wake_w)

    def _after_ready(self) -> None:
        self.start_sweep(full=True, upkeep=True)
        self.synthetic.sweep(self.config, self.clock())
        self.answer_replays()

    def _guarded(self, step: Callable[[], Any]) -> None:
        """Run one step of the loop; a failed write (disk full, requests folder gone or
        unwritable, ledger locked) keeps the daemon up, degraded, retrying. A corrupt
        ledger still ends the process (the next start moves it aside)."""
        try:
            step()
        except (OSError, sqlite3.Error) as exc:
            if is_corrupt(exc) or isinstance(exc, UnsafeFile):
                raise
            if not isinstance(exc, ReadFault):  # a read fault comes after finish_batch
                self.batch.mark_failed()  # requests may be on disk the ledger lacks
            self.ledger.rollback()
            plain = isinstance(exc, (WriteFailed, ReadFault))
            reason = str(exc) if plain else f"cannot write: {exc}"
            self._writes_failing(reason)

    def _writes_failing(self, reason: str) -> None:
        """Degraded until a retry succeeds; the pause grows 1, 2, 4 ... 60 s, once per
        failed pass or retry (the one place that decides it)."""
        self.write_pause = min(max(1.0, self.write_pause * 2), WRITE_RETRY_MAX)
        self.write_retry_at = self.mono() + self.write_pause
        self.watcher.distrust_listing()
        self.report.degraded(reason, f"{reason}; trying again in {self.write_pause:g} s")
        with contextlib.suppress(OSError):
            self.write_state(force=True)

    def _retry_writes(self) -> None:
        """The retry after a failed write: requests written before the failure get their
        ledger rows (reconcile), memory goes back to what the ledger says, and every file
        is looked at again."""
        problem = self.batch.usable()
        if problem is not None:
            self._writes_failing(problem)
            return
        self.drop_sweep()  # the retry stats every file in one go
        self.batch.recover(self.log, self.clock())
        self.report.rewind(self.ledger)
        self.index.load()
        was = self.report.recovered()
        self.scan(full=True)
        if self.report.write_problem:
            return  # failed again in this pass (a request that could not be written)
        self.write_pause = 0.0
        self.log.event("recovered", reason=f"reads and writes work again (after: {was})")
        self.answer_replays()

    def _tick(self, inotify_ready: bool) -> None:
        now, mono = self.clock(), self.mono()
        handled = 0
        if self.report.write_problem:
            if inotify_ready and self.watcher.inotify is not None:
                self.watcher.drain()  # the retry lists the whole folder anyway
            if self.poll_requested or mono >= self.write_retry_at:
                self.poll_requested = False
                self.last_poll = mono
                self._retry_writes()
            # Already degraded: a state.json that cannot be written either is not a new
            # failure (the pause grows once per retry, not per wake-up).
            with contextlib.suppress(OSError):
                self.write_state()
            return
        if inotify_ready and self.watcher.inotify is not None:
            names, overflow = self.watcher.drain()
            if names:
                handled += self.scan(names=names)
            if overflow:  # events were lost: every file is stat'ed (in slices)
                self.start_sweep(full=True)
        retry = self.index.next_retry()
        # A deadline further away than a settle wait: the wall clock stepped back.
        pending_due = retry is not None and not 0 < retry - now <= self._settle_horizon()
        full = False
        if self.poll_requested or mono - self.last_poll >= self.config.poll_seconds or pending_due:
            self.poll_requested = False
            self.last_poll = mono
            full = mono - self.watcher.last_full_scan >= FULL_SCAN_SECONDS
            problem = self.batch.usable()
            self._note_remade()
            if problem is not None:
                self._writes_failing(problem)
                return
            handled += self.scan(full=full, sliced=True)
            self.synthetic.sweep(self.config, self.clock())
            self.answer_replays()
        handled += self.advance_sweep()
        if handled >= BATCH_MAX:  # a big pass: its scratch memory goes back
            self.ledger.shrink()
            release_free_memory()
        self.approvals.tick(self.clock())
        self.last_pass = self.clock()
        self.write_state()

    def _settle_horizon(self) -> float:
        return self.config.settle_seconds + 1.0

    def _next_timeout(self) -> float:
        if self.sweep is not None:
            return 0.0  # the next slice, once the events that came are handled
        mono = self.mono()
        heartbeat = self.config.heartbeat_seconds
        deadlines = [
            self.last_poll + self.config.poll_seconds,
            self.report.next_write(heartbeat),
            self.metrics.due(),
            self.approvals.last_check + heartbeat,
        ]
        if self.report.write_problem:
            deadlines.append(self.write_retry_at)
        if self.approvals.next_expiry is not None:
            # expires_at is wall time: wake when it passes, at most a heartbeat from now.
            wait = min(max(0.0, self.approvals.next_expiry - self.clock()), heartbeat)
            deadlines.append(mono + wait)
        ping = self.notifier.ping_due()
        if ping is not None:
            deadlines.append(ping)
        retry = self.index.next_retry()
        if retry is not None:
            # Pending files wait for their wall-clock settle deadline, at most a settle
            # wait from now (after a backward step of the wall clock).
            wait = min(max(0.0, retry - self.clock()), self._settle_horizon())
            deadlines.append(mono + wait)
        return max(0.0, min(deadlines) - mono)
