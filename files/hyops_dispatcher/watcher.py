"""Which names of the records folder need a look: inotify events, the folder's mtime,
and the listing when events cannot be trusted.

Invariant: level-triggered: a name that changed is returned by some pass, with or
without inotify.
"""

from __future__ import annotations

import os
import select
import stat
import time
from typing import Iterator, List, Optional, Tuple

from .index import FileIndex
from .inotify import Inotify
from .jsonlog import JsonLog
from .ledger import LOOKUP_CHUNK
from .record import folder_name, is_record_name, ledger_name
from .states import BATCH_MAX

# inotify: after a wake-up keep collecting events while they keep coming (a burst
# becomes one batch), for at most this long.
EVENT_GATHER_GAP = 0.002
EVENT_GATHER_MAX = 0.1


class Watcher:
    """Which record names need a look. inotify reports names within milliseconds; the
    safety net (every poll) stats the folder and lists it only when its mtime changed;
    once an hour every file is stat'ed. A listing is compared with the index chunk by
    chunk in SQLite: no Python set of every name, no list of 100 000 directory entries."""

    def __init__(self, records_dir: str, log: JsonLog, use_inotify: bool) -> None:
        self.records_dir = records_dir  # a path a reload cannot change
        self.log = log
        self.use_inotify = use_inotify
        self.inotify: Optional[Inotify] = None
        self.mode = "poll"
        self.error = ""
        self.dir_mtime_ns: Optional[int] = None  # the listing is up to date for this mtime
        self.rewatch = False  # re-add the watch at the next pass (folder replaced)
        self.last_full_scan = 0.0

    @property
    def fd(self) -> Optional[int]:
        return None if self.inotify is None else self.inotify.fd

    def arm(self) -> None:
        if not self.use_inotify:
            return
        self.close()
        try:
            self.inotify = Inotify(self.records_dir)
            self.mode = "inotify"
            self.error = ""
        except (OSError, AttributeError) as exc:
            # Missing folder or no inotify (old kernel, exhausted watches): polling only.
            self.inotify = None
            if str(exc) == self.error:
                return  # said once already
            self.error = str(exc)
            self.log.event(
                "error",
                level="WARNING",
                file=self.records_dir,
                reason=f"inotify unavailable ({exc}); falling back to polling (poll_seconds)",
            )

    def close(self) -> None:
        if self.inotify is not None:
            self.inotify.close()
            self.inotify = None
        self.mode = "poll"

    def drain(self) -> Tuple[set, bool]:
        """Names inotify reported, gathered while events keep coming (a burst becomes one
        batch), and whether the queue overflowed (then: a full scan)."""
        if self.inotify is None:
            return set(), False
        names, overflow = self.inotify.read()
        records = sum(1 for n in names if is_record_name(n))
        gather_until = time.monotonic() + EVENT_GATHER_MAX
        while time.monotonic() < gather_until and not overflow and records < BATCH_MAX:
            more, _, _ = select.select([self.inotify.fd], [], [], EVENT_GATHER_GAP)
            if not more:
                break
            extra, overflow = self.inotify.read()
            records += sum(1 for n in extra - names if is_record_name(n))
            names |= extra
        if self.inotify.lost:
            self.close()
            self.dir_mtime_ns = None
            self.rewatch = True
        return names, overflow

    def has_events(self) -> bool:
        """inotify has events waiting (no wait, no read)."""
        if self.inotify is None:
            return False
        ready, _, _ = select.select([self.inotify.fd], [], [], 0)
        return bool(ready)

    def distrust_listing(self) -> None:
        """The next pass lists the folder whatever its mtime (after a failed write)."""
        self.dir_mtime_ns = None

    def needs_listing(self, mtime_ns: int) -> bool:
        return mtime_ns != self.dir_mtime_ns

    def rearm_if_lost(self) -> bool:
        """The watch was lost (folder replaced): add it again. True: the pass must list and
        stat everything (events may have been missed)."""
        if not self.rewatch:
            return False
        self.rewatch = False
        self.arm()
        return True

    def folder_mtime_ns(self) -> int:
        """Raises OSError when the records folder is missing or not a folder."""
        dst = os.stat(self.records_dir)
        if not stat.S_ISDIR(dst.st_mode):
            raise NotADirectoryError(self.records_dir)
        return dst.st_mtime_ns

    def listed(self, mtime_ns: int, full: bool, mono_now: float) -> None:
        # A folder changed within the last second may change again with the same coarse
        # timestamp: only trust a listing of an older mtime (racy-git rule).
        trusted = (time.time_ns() - mtime_ns) > 1_000_000_000
        self.dir_mtime_ns = mtime_ns if trusted else None
        if full:
            self.last_full_scan = mono_now

    def changed_names(self, index: FileIndex, with_stat: bool, now: float) -> List[str]:
        """Names that need a look: new, replaced (other inode), or (with_stat) changed.
        Files the index has but the folder no longer holds are marked gone. Raises
        OSError when the folder cannot be listed. In one go (see sweep)."""
        todo: List[str] = []
        for _ in self.sweep(index, with_stat, now, todo):
            pass
        return todo

    def sweep(
        self, index: FileIndex, with_stat: bool, now: float, todo: List[str]
    ) -> Iterator[None]:
        """changed_names in steps: yields after each LOOKUP_CHUNK names compared (and each
        chunk of the gone check), so the loop can run between them; `todo` fills up. The
        index may change between steps (records handled meanwhile): then the gone check
        looks at every indexed name, since the counts no longer tell."""
        seen_known = 0
        changes = index.changes
        chunk: List[os.DirEntry] = []
        with os.scandir(self.records_dir) as entries:
            for entry in entries:
                if is_record_name(entry.name):
                    chunk.append(entry)
                    if len(chunk) >= LOOKUP_CHUNK:
                        seen_known += self._compare(chunk, index, with_stat, todo)
                        chunk = []
                        yield
        if chunk:
            seen_known += self._compare(chunk, index, with_stat, todo)
        missing = index.ledger.live_count() - seen_known
        every = index.changes != changes
        if missing > 0 or every:
            yield from self._mark_gone(index, missing, every, now)

    @staticmethod
    def _compare(
        chunk: List[os.DirEntry], index: FileIndex, with_stat: bool, todo: List[str]
    ) -> int:
        """Adds the entries that need a look to `todo`; returns how many the index knows.
        Plain tuples, no objects per file: this runs over every name of a long history."""
        spelled = [ledger_name(e.name) for e in chunk]
        if not with_stat:
            inodes = index.ledger.inodes_of(spelled)
            for entry, name in zip(chunk, spelled):
                if inodes.get(name) != entry.inode():  # new (None) or replaced
                    todo.append(entry.name)
            return len(inodes)
        sigs = index.ledger.sigs_of(spelled)
        for entry, name in zip(chunk, spelled):
            known = sigs.get(name)
            if known is None:
                todo.append(entry.name)
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                todo.append(entry.name)
                continue
            if (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) != known:
                todo.append(entry.name)
        return len(sigs)

    def _mark_gone(self, index: FileIndex, missing: int, every: bool, now: float) -> Iterator[None]:
        """`missing` indexed files are no longer in the folder: find them (rare: the
        decision service never prunes; inotify usually reported them already). `every`:
        look at every indexed name. Yields after each chunk."""
        after = ""
        while missing > 0 or every:
            names = index.ledger.live_names_after(after)
            if not names:
                return
            after = names[-1]
            for spelled in names:
                name = folder_name(spelled)
                if not os.path.lexists(os.path.join(self.records_dir, name)):
                    index.forget(name, now)
                    missing -= 1
            yield
