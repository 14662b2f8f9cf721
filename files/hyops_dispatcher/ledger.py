"""The ledger (SQLite): every SQL statement of ledger.db, its schema and version, the
decisions handled and the index of handled files.

Invariant: a row says "emitted" only after its request is durable; a corrupt file is moved
aside, a locked one is waited for; the schema version is in PRAGMA user_version.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from .fsio import UnsafeFile, check_own_path, open_own_file
from .ids import compact_ts
from .jsonlog import JsonLog
from .record import ledger_name
from .states import HANDOFF_PREFIX
from .verdicts import ADOPTED_REASON, FileSig, KnownFile, PriorDecision

# A ledger that is locked or cannot be opened (not corrupt) is tried again for this long
# (pauses 0.25 s doubling to 4 s, the watchdog fed) before the start fails.
LEDGER_OPEN_WAIT = 15.0
LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    name TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    decision_id TEXT,
    dispatch_id TEXT,
    reason TEXT,
    handled_at REAL NOT NULL,
    gone_at REAL
);
CREATE INDEX IF NOT EXISTS files_decision ON files(decision_id);
CREATE INDEX IF NOT EXISTS files_watched ON files(outcome)
    WHERE outcome IN ('pending', 'rejected') AND gone_at IS NULL;
-- The listing compares every name in the folder with this (a covering index: a lookup
-- never reads the wide rows).
CREATE INDEX IF NOT EXISTS files_live ON files(name, size, mtime_ns, ctime_ns, inode)
    WHERE gone_at IS NULL;
CREATE TABLE IF NOT EXISTS decisions (
    decision_id TEXT PRIMARY KEY,
    outcome TEXT NOT NULL,
    dispatch_id TEXT,
    route TEXT,
    decision_epoch REAL,
    file TEXT,
    reason TEXT,
    handled_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_dispatch ON decisions(dispatch_id);
CREATE INDEX IF NOT EXISTS decisions_emitted ON decisions(route, decision_epoch)
    WHERE outcome = 'emitted';
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# The approvals table (approvals.ApprovalBook): one row per request.
APPROVALS_SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
    dispatch_id TEXT PRIMARY KEY,
    route TEXT NOT NULL,
    state TEXT NOT NULL,
    issued_at REAL NOT NULL,
    expires_at REAL,
    supersedes TEXT,
    synthetic INTEGER NOT NULL DEFAULT 0
);
-- Open rows in issue order: new requests append at its end (cheap during a burst), and
-- the markers of open rows are looked for page by page along it.
CREATE INDEX IF NOT EXISTS approvals_open ON approvals(issued_at, dispatch_id)
    WHERE state = 'open';
CREATE INDEX IF NOT EXISTS approvals_supersedes ON approvals(supersedes)
    WHERE supersedes IS NOT NULL;
CREATE INDEX IF NOT EXISTS approvals_synthetic ON approvals(dispatch_id) WHERE synthetic = 1;
-- The counts status and the metrics show (rows by route and state, oldest issued_at) are
-- read from this index alone, not the table: at 100 000 rows a GROUP BY that blocked the
-- loop ~60 ms after each full scan takes ~14 ms.
CREATE INDEX IF NOT EXISTS approvals_counted ON approvals(route, state, issued_at, synthetic)
    WHERE synthetic = 0;
-- The next expiry of an open request (when the counts change by time alone): one index
-- step, not a walk over every open row.
CREATE INDEX IF NOT EXISTS approvals_open_expiry ON approvals(expires_at)
    WHERE state = 'open' AND synthetic = 0;
"""

# PRAGMA user_version of a ledger this code made or upgraded. 0: a ledger from before the
# version was kept (same tables; stamped on open). A ledger with a higher version comes
# from newer code (a rollback after an upgrade that changed the schema): refused, left as
# it is.
LEDGER_SCHEMA_VERSION = 1

# SQLite's busy wait for a lock another process holds (a reader, a backup): well under
# WatchdogSec; a write that still finds it locked fails and is retried (degraded).
LEDGER_BUSY_SECONDS = 5.0

# Ledger meta key: "1" when the daemon last stopped cleanly (nothing to reconcile).
CLEAN_STOP = "clean_stop"

# SQLite page cache per connection, in KiB (negative PRAGMA value): the index of every
# handled file lives in the ledger, so this bounds what history costs in memory.
LEDGER_CACHE_KIB = 2048

# Names looked up per query when a listing is compared with the ledger.
LOOKUP_CHUNK = 500

# Rows (a rowid range) the retention prune looks at per step.
PRUNE_ROWS = 20000


class LedgerCorrupt(sqlite3.DatabaseError):
    """PRAGMA quick_check did not answer ok."""


class LedgerUnusable(sqlite3.OperationalError):
    """The ledger stayed locked or unopenable for the whole wait (not corrupt)."""


# SQLite's primary result codes that mean the file itself is damaged; anything else
# (busy, locked, cannot open, read-only, I/O error, full) leaves the ledger alone.
SQLITE_CORRUPT_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB
SQLITE_CORRUPT_TEXTS = ("file is not a database", "database disk image is malformed")


def is_corrupt(exc: BaseException) -> bool:
    if isinstance(exc, LedgerCorrupt):
        return True
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(code, int):
        return code & 0xFF in SQLITE_CORRUPT_CODES
    return any(text in str(exc) for text in SQLITE_CORRUPT_TEXTS)


class Ledger:
    """Durable record of handled files and decisions (SQLite, rollback journal,
    synchronous=FULL: a commit is on disk when it returns). A rollback journal rather than
    WAL so that an operator command run as root never leaves -wal/-shm files the service
    user cannot open. It is also the daemon's index of handled files (FileIndex)."""

    def __init__(
        self, path: str, readonly: bool = False, busy_timeout: float = LEDGER_BUSY_SECONDS
    ) -> None:
        self.path = path
        # SQLite follows symlinks and would make any empty file a ledger: the file (made
        # here, ours, when missing) and its journal are checked first; SQLite then opens
        # them by name, in a folder only the service user (and root) can change.
        if readonly:
            os.close(open_own_file(path, os.O_RDONLY, owned=False))
        else:
            os.close(open_own_file(path, os.O_RDWR | os.O_CREAT))
            check_own_path(path + "-journal")
        # SQLite URI: only %, ? and # need escaping in the path part.
        escaped = path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")
        if readonly:
            uri = f"file:{escaped}?mode=ro"
            self.db = sqlite3.connect(
                uri, uri=True, isolation_level=None, timeout=LEDGER_BUSY_SECONDS
            )
        else:
            uri = f"file:{escaped}?mode=rw"
            self.db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=busy_timeout)
            self.db.execute("PRAGMA journal_mode=DELETE")
            self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(f"PRAGMA cache_size=-{LEDGER_CACHE_KIB}")
        if not readonly:
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version > LEDGER_SCHEMA_VERSION:
                self.db.close()
                raise LedgerUnusable(
                    f"ledger {path} has schema version {version}, newer than this code's "
                    f"{LEDGER_SCHEMA_VERSION}: run the release that wrote it (or restore a copy)"
                )
            self.db.executescript(LEDGER_SCHEMA + APPROVALS_SCHEMA)
            if version != LEDGER_SCHEMA_VERSION:
                self.db.execute(f"PRAGMA user_version={LEDGER_SCHEMA_VERSION}")
        self.in_tx = False

    @classmethod
    def open_or_recover(
        cls,
        path: str,
        log: JsonLog,
        wait: Callable[[float], None],
        budget: float,
        busy: float = LEDGER_BUSY_SECONDS,
    ) -> Tuple[Ledger, bool]:
        """Open the ledger; only a corrupt one (SQLite says so) is moved aside and a new
        one started (the requests folder then rebuilds it). A locked ledger, or one we
        may not open (permissions, I/O error), is not corrupt: it is tried again with a
        growing pause (`wait` sleeps and keeps the watchdog fed; SQLite's own busy wait,
        `busy`, is shorter than a ping interval) for up to `budget` seconds, then the
        error is raised and the file left exactly as it is: moving it aside would forget
        which decisions already had a request. Returns (ledger, rebuilt)."""
        existed = os.path.exists(path)
        deadline = time.monotonic() + budget
        pause = 0.25
        while True:
            try:
                ledger = cls(path, busy_timeout=busy)
                try:
                    row = ledger.db.execute("PRAGMA quick_check").fetchone()
                    if row is None or row[0] != "ok":
                        raise LedgerCorrupt(f"quick_check: {row[0] if row else 'no answer'}")
                    # A write lock now: a ledger we can read but not write fails here.
                    ledger.begin()
                    ledger.commit()
                except BaseException:
                    ledger.db.close()
                    raise
                return ledger, not existed
            except UnsafeFile:
                raise  # a symlink or another user's file: waiting does not change it
            except (sqlite3.Error, OSError) as exc:
                if not is_corrupt(exc):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise LedgerUnusable(f"ledger {path}: {exc}; left as it is") from None
                    log.event(
                        "error",
                        level="WARNING",
                        file=path,
                        reason=f"ledger not usable ({exc}); not corrupt, trying again "
                        f"in {min(pause, left):g} s",
                    )
                    wait(min(pause, left))
                    pause = min(pause * 2, 4.0)
                    continue
                problem = exc
            aside = f"{path}.corrupt-{compact_ts(time.time())}"
            with contextlib.suppress(OSError):
                os.replace(path, aside)
            with contextlib.suppress(OSError):
                os.replace(path + "-journal", aside + "-journal")
            log.event(
                "error",
                level="ERROR",
                file=path,
                reason=f"ledger corrupt ({problem}); moved to {aside}, rebuilding from "
                "the requests folder",
            )
            return cls(path, busy_timeout=busy), True

    def begin(self) -> None:
        if not self.in_tx:
            self.db.execute("BEGIN IMMEDIATE")
            self.in_tx = True

    def commit(self) -> None:
        if self.in_tx:
            try:
                self.db.execute("COMMIT")
            finally:
                # A failed COMMIT (disk full) may leave the transaction open or already
                # rolled back by SQLite: either way it is over, and the caller gets the
                # real error, never a later "cannot commit - no transaction is active".
                self.in_tx = False
                if self.db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self.db.execute("ROLLBACK")

    def rollback(self) -> None:
        if self.in_tx or self.db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
            self.in_tx = False

    def close(self) -> None:
        self.rollback()
        self.db.close()

    def shrink(self) -> None:
        """Hand SQLite's page cache back after a big pass (it refills from the OS's page
        cache as needed): resident memory then does not keep what one pass touched."""
        if not self.in_tx:
            self.db.execute("PRAGMA shrink_memory")

    # --- reads: files (the index)
    _KNOWN = (
        "SELECT name, size, mtime_ns, ctime_ns, inode, outcome, decision_id, gone_at FROM files"
    )

    @staticmethod
    def _known(row: tuple) -> KnownFile:
        _name, size, mtime_ns, ctime_ns, inode, outcome, decision_id, gone_at = row
        return KnownFile(
            FileSig(size, mtime_ns, ctime_ns, inode), outcome, decision_id, gone_at is not None
        )

    def known_file(self, name: str) -> Optional[KnownFile]:
        """The row for one file name, also when the file went away (gone=True)."""
        row = self.db.execute(f"{self._KNOWN} WHERE name = ?", (ledger_name(name),)).fetchone()
        return None if row is None else self._known(row)

    def known_files(self, names: List[str]) -> Dict[str, KnownFile]:
        """ledger name -> its row, for up to LOOKUP_CHUNK ledger names (one query for a
        pass's names instead of one per file)."""
        marks = ",".join("?" * len(names))
        rows = self.db.execute(f"{self._KNOWN} WHERE name IN ({marks})", names)
        return {row[0]: self._known(row) for row in rows}

    def inodes_of(self, names: List[str]) -> Dict[str, int]:
        """name -> inode of files still present, for up to LOOKUP_CHUNK ledger names."""
        marks = ",".join("?" * len(names))
        rows = self.db.execute(
            f"SELECT name, inode FROM files INDEXED BY files_live "
            f"WHERE gone_at IS NULL AND name IN ({marks})",
            names,
        )
        return dict(rows.fetchall())

    def sigs_of(self, names: List[str]) -> Dict[str, Tuple[int, int, int, int]]:
        """name -> FileSig.key() of files still present, for up to LOOKUP_CHUNK names."""
        marks = ",".join("?" * len(names))
        rows = self.db.execute(
            f"SELECT name, size, mtime_ns, ctime_ns, inode FROM files INDEXED BY files_live "
            f"WHERE gone_at IS NULL AND name IN ({marks})",
            names,
        )
        return {row[0]: row[1:] for row in rows}

    def pending_files(self) -> List[Tuple[str, KnownFile]]:
        rows = self.db.execute(
            f"{self._KNOWN} INDEXED BY files_watched "
            "WHERE outcome IN ('pending', 'rejected') AND outcome = 'pending' AND gone_at IS NULL"
        ).fetchall()
        return [(row[0], self._known(row)) for row in rows]

    def rejected_after(self, rowid: int, limit: int) -> List[Tuple[int, str]]:
        """(rowid, name) of up to `limit` present rejected files after `rowid`."""
        return self.db.execute(
            "SELECT rowid, name FROM files INDEXED BY files_watched "
            "WHERE outcome IN ('pending', 'rejected') AND outcome = 'rejected' "
            "AND gone_at IS NULL AND rowid > ? ORDER BY rowid LIMIT ?",
            (rowid, limit),
        ).fetchall()

    def live_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM files WHERE gone_at IS NULL").fetchone()[0]

    def live_names_after(self, after: str, limit: int = LOOKUP_CHUNK) -> List[str]:
        rows = self.db.execute(
            "SELECT name FROM files WHERE gone_at IS NULL AND name > ? ORDER BY name LIMIT ?",
            (after, limit),
        )
        return [r[0] for r in rows]

    def get_file(self, name: str) -> Optional[dict]:
        row = self.db.execute(
            "SELECT name, outcome, decision_id, dispatch_id, reason, handled_at, gone_at "
            "FROM files WHERE name = ?",
            (ledger_name(name),),
        ).fetchone()
        if row is None:
            return None
        keys = ("file", "outcome", "decision_id", "dispatch_id", "reason", "handled_at", "gone_at")
        return dict(zip(keys, row))

    # --- reads: decisions
    def prior(self, decision_id: str) -> Optional[PriorDecision]:
        row = self.db.execute(
            "SELECT decision_id, outcome, dispatch_id, route, decision_epoch, file, reason, "
            "handled_at FROM decisions WHERE decision_id = ?",
            (decision_id,),
        ).fetchone()
        return None if row is None else PriorDecision(*row)

    def get_decision(self, decision_id: str) -> Optional[dict]:
        prior = self.prior(decision_id)
        return None if prior is None else prior._asdict()

    def emitted_among(self, dispatch_ids: List[str]) -> set:
        """Which of up to LOOKUP_CHUNK dispatch ids the ledger has as emitted."""
        marks = ",".join("?" * len(dispatch_ids))
        rows = self.db.execute(
            f"SELECT dispatch_id FROM decisions WHERE outcome = 'emitted' "
            f"AND dispatch_id IN ({marks})",
            dispatch_ids,
        )
        return {r[0] for r in rows}

    # --- reads: episodes (episodes.LedgerEpisodes). Rows of this batch count too: they
    # are in the open transaction, which this connection sees. Synthetic handoff checks
    # never count.
    def request_around(
        self, route: str, epoch: float
    ) -> Tuple[Optional[Tuple[str, float]], Optional[Tuple[str, float]]]:
        """(dispatch_id, decision_epoch) of the route's latest request at or before
        `epoch` and of its earliest request after it."""
        query = (
            "SELECT dispatch_id, decision_epoch FROM decisions INDEXED BY decisions_emitted "
            "WHERE outcome = 'emitted' AND route = ? AND decision_epoch {op} ? "
            "AND decision_id NOT LIKE ? ORDER BY decision_epoch {order} LIMIT 1"
        )
        args = (route, epoch, HANDOFF_PREFIX + "%")
        before = self.db.execute(query.format(op="<=", order="DESC"), args).fetchone()
        after = self.db.execute(query.format(op=">", order="ASC"), args).fetchone()
        return (None if before is None else tuple(before), None if after is None else tuple(after))

    def last_folded(self, dispatch_id: str) -> Optional[float]:
        """The latest decision time folded into a request (its own, or coalesced)."""
        return self.db.execute(
            "SELECT max(decision_epoch) FROM decisions WHERE dispatch_id = ? "
            "AND outcome IN ('emitted', 'coalesced')",
            (dispatch_id,),
        ).fetchone()[0]

    def request_between(self, routes: List[str], lo: float, hi: float) -> bool:
        """A request on one of `routes` whose decision time is within [lo, hi]."""
        for route in routes:
            row = self.db.execute(
                "SELECT 1 FROM decisions INDEXED BY decisions_emitted WHERE outcome = 'emitted' "
                "AND route = ? AND decision_epoch BETWEEN ? AND ? AND decision_id NOT LIKE ? "
                "LIMIT 1",
                (route, lo, hi, HANDOFF_PREFIX + "%"),
            ).fetchone()
            if row is not None:
                return True
        return False

    def approval_row(self, dispatch_id: str) -> Optional[Tuple[str, Optional[float]]]:
        """(state, expires_at) of a request's approvals row (open, approved, not-required)."""
        row = self.db.execute(
            "SELECT state, expires_at FROM approvals WHERE dispatch_id = ?", (dispatch_id,)
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def live_outcome_counts(self, outcomes: Tuple[str, ...]) -> Dict[str, int]:
        """Files present now with one of `outcomes`, by outcome (one scan, at load)."""
        marks = ",".join("?" * len(outcomes))
        rows = self.db.execute(
            f"SELECT outcome, count(*) FROM files WHERE gone_at IS NULL "
            f"AND outcome IN ({marks}) GROUP BY outcome",
            outcomes,
        )
        return {r[0]: r[1] for r in rows}

    def counts(self) -> Dict[str, int]:
        rows = self.db.execute(
            "SELECT outcome, count(*) FROM files WHERE gone_at IS NULL GROUP BY outcome"
        )
        return {r[0]: r[1] for r in rows}

    def meta_get(self, key: str) -> Optional[str]:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def listing(self, outcomes: Tuple[str, ...], limit: int = 1000) -> List[dict]:
        marks = ",".join("?" * len(outcomes))
        rows = self.db.execute(
            f"SELECT name, outcome, decision_id, dispatch_id, reason, handled_at FROM files "
            f"WHERE gone_at IS NULL AND outcome IN ({marks}) ORDER BY handled_at DESC LIMIT ?",
            (*outcomes, limit),
        )
        keys = ("file", "outcome", "decision_id", "dispatch_id", "reason", "handled_at")
        return [dict(zip(keys, r)) for r in rows]

    # --- writes (inside begin()/commit())
    def put_file(
        self,
        name: str,
        sig: FileSig,
        outcome: str,
        decision_id: Optional[str],
        dispatch_id: Optional[str],
        reason: str,
        now: float,
    ) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO files (name, size, mtime_ns, ctime_ns, inode, outcome, "
            "decision_id, dispatch_id, reason, handled_at, gone_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,NULL)",
            (ledger_name(name), *sig.key(), outcome, decision_id, dispatch_id, reason, now),
        )

    def put_decision(
        self,
        decision_id: str,
        outcome: str,
        dispatch_id: Optional[str],
        route: Optional[str],
        epoch: Optional[float],
        file: Optional[str],
        reason: str,
        now: float,
    ) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO decisions (decision_id, outcome, dispatch_id, route, "
            "decision_epoch, file, reason, handled_at) VALUES (?,?,?,?,?,?,?,?)",
            (decision_id, outcome, dispatch_id, route, epoch, file, reason, now),
        )

    def settle_adopted(self, decision_id: str, reason: str) -> None:
        self.db.execute(
            "UPDATE decisions SET reason = ? WHERE decision_id = ? AND reason = ?",
            (reason, decision_id, ADOPTED_REASON),
        )

    def mark_gone(self, name: str, now: float) -> bool:
        cur = self.db.execute(
            "UPDATE files SET gone_at = ? WHERE name = ? AND gone_at IS NULL",
            (now, ledger_name(name)),
        )
        return cur.rowcount > 0

    def meta_set(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def prune(self, now: float, retention: float) -> int:
        """Forget files that are gone and older than the retention, then decisions no file
        refers to any more (a re-dropped record keeps its decision alive). In one go."""
        return sum(self.prune_steps(now, retention))

    def prune_steps(self, now: float, retention: float) -> Iterator[int]:
        """prune() one rowid range (PRUNE_ROWS rows) per step, each step in its own
        transaction: yields the rows removed by the step, so a long table is pruned in
        short pieces with the loop running between them."""
        cutoff = now - retention
        for table, sql in (
            (
                "files",
                "DELETE FROM files WHERE rowid > ? AND rowid <= ? AND gone_at IS NOT NULL "
                "AND gone_at < ? AND handled_at < ?",
            ),
            (
                "decisions",
                "DELETE FROM decisions WHERE rowid > ? AND rowid <= ? AND handled_at < ? "
                "AND NOT EXISTS "
                "(SELECT 1 FROM files WHERE files.decision_id = decisions.decision_id)",
            ),
        ):
            top = self.db.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0] or 0
            for low in range(0, top, PRUNE_ROWS):
                args = (low, low + PRUNE_ROWS, cutoff) + ((cutoff,) if table == "files" else ())
                self.begin()
                removed = self.db.execute(sql, args).rowcount
                self.commit()
                yield removed

    # --- the approvals table (approvals.ApprovalBook)
    def approvals_known(self, dispatch_ids: List[str]) -> set:
        """Which of up to LOOKUP_CHUNK dispatch ids have an approvals row."""
        marks = ",".join("?" * len(dispatch_ids))
        rows = self.db.execute(
            f"SELECT dispatch_id FROM approvals WHERE dispatch_id IN ({marks})", dispatch_ids
        )
        return {r[0] for r in rows}

    def approvals_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM approvals").fetchone()[0]

    def approvals_put(self, row: Tuple, replace: bool) -> None:
        """(dispatch_id, route, state, issued_at, expires_at, supersedes, synthetic);
        `replace` False keeps a row already there. Inside begin()/commit()."""
        verb = "REPLACE" if replace else "IGNORE"
        self.db.execute(
            f"INSERT OR {verb} INTO approvals (dispatch_id, route, state, issued_at, "
            "expires_at, supersedes, synthetic) VALUES (?,?,?,?,?,?,?)",
            row,
        )

    def approvals_all_ids(self, after: str, limit: int = LOOKUP_CHUNK) -> List[str]:
        rows = self.db.execute(
            "SELECT dispatch_id FROM approvals WHERE dispatch_id > ? ORDER BY dispatch_id LIMIT ?",
            (after, limit),
        )
        return [r[0] for r in rows]

    def approvals_open_after(
        self, position: Tuple[float, str], limit: int = LOOKUP_CHUNK
    ) -> List[Tuple[float, str]]:
        """(issued_at, dispatch_id) of open rows after `position`, in issue order."""
        return self.db.execute(
            "SELECT issued_at, dispatch_id FROM approvals INDEXED BY approvals_open "
            "WHERE state = 'open' AND (issued_at, dispatch_id) > (?, ?) "
            "ORDER BY issued_at, dispatch_id LIMIT ?",
            (*position, limit),
        ).fetchall()

    def approvals_mark_approved(self, dispatch_ids: List[str]) -> None:
        self.db.executemany(
            "UPDATE approvals SET state = 'approved' WHERE dispatch_id = ?",
            [(i,) for i in dispatch_ids],
        )

    def approvals_synthetic_ids(self) -> List[str]:
        """Dispatch ids of the synthetic (validate-handoff) rows; normally none."""
        rows = self.db.execute(
            "SELECT dispatch_id FROM approvals INDEXED BY approvals_synthetic "
            "WHERE synthetic = 1 ORDER BY dispatch_id"
        )
        return [r[0] for r in rows]

    def approvals_drop(self, dispatch_ids: List[str]) -> None:
        self.db.executemany(
            "DELETE FROM approvals WHERE dispatch_id = ?", [(i,) for i in dispatch_ids]
        )

    def approvals_counts(
        self, open_state_sql: str, now: float
    ) -> List[Tuple[str, str, int, float]]:
        """(route, state, requests, oldest issued_at) of the counted (not synthetic) rows;
        an open row's state comes from `open_state_sql` (approvals' twin of its rule)."""
        closed = self.db.execute(
            "SELECT route, state, count(*), min(issued_at) FROM approvals "
            "WHERE state != 'open' AND synthetic = 0 GROUP BY route, state"
        ).fetchall()
        opened = self.db.execute(
            f"SELECT route, {open_state_sql} AS st, count(*), min(issued_at) "
            "FROM approvals a WHERE state = 'open' AND synthetic = 0 GROUP BY route, st",
            (now,),
        ).fetchall()
        return closed + opened

    def approvals_next_expiry(self, now: float) -> Optional[float]:
        return self.db.execute(
            "SELECT min(expires_at) FROM approvals WHERE state = 'open' AND synthetic = 0 "
            "AND expires_at > ?",
            (now,),
        ).fetchone()[0]

    def approvals_newest_open(
        self, open_state_sql: str, now: float, limit: int
    ) -> List[Tuple[str, str, str, float, Optional[float]]]:
        """(dispatch_id, route, state, issued_at, expires_at) of the newest open rows."""
        return self.db.execute(
            f"SELECT dispatch_id, route, {open_state_sql}, issued_at, expires_at "
            "FROM approvals a INDEXED BY approvals_open WHERE state = 'open' "
            "AND synthetic = 0 ORDER BY issued_at DESC LIMIT ?",
            (now, limit),
        ).fetchall()
