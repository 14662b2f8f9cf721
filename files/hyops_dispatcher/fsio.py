"""Files on disk, whatever they hold: durable writes (temp in the same folder, fsync,
rename, fsync of the folder), staged batches of them, safe opens of the daemon's own files
(no symlink, no FIFO, owner checked) and quiet JSON reads.

Invariant: every file someone else reads is written here and only here, complete or not
at all; knows no record, request or config; imports nothing of the package.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import json
import os
import re
import stat
from typing import Callable, List, Optional, Tuple

# From this many staged requests on, one syncfs() replaces the per-file fsyncs.
SYNCFS_MIN_BATCH = 8


def fsync_dir(path: str) -> None:
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_file_durably(
    path: str,
    data: bytes,
    mode: int = 0o644,
    sync_dir: bool = True,
    owner: Optional[Tuple[int, int]] = None,
    exact_mode: bool = False,
) -> None:
    """Temp file in the same folder (name not ending in .json), fsync, rename, fsync folder.
    `exact_mode`: `mode` whatever the umask (a file another user must read)."""
    folder = os.path.dirname(path)
    fd, tmp = write_temp(path, data, mode)
    try:
        if exact_mode:
            os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, *owner)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(folder)


def write_temp(path: str, data: bytes, mode: int) -> Tuple[int, str]:
    """Write `data` to our temp file beside `path` (a dot name ending in .tmp-<pid>, never
    .json); return (open descriptor, temp path). On an error the temp file is removed."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}")
    # O_NONBLOCK: a FIFO planted at the temp name fails (ENXIO) instead of blocking;
    # regular files ignore it.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    fd = os.open(tmp, flags, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return fd, tmp


def remove_stale_temps(folder: str) -> int:
    """Our own temp files left by a crash (never anything ending in .json)."""
    removed = 0
    pid_suffix = re.compile(r"\.tmp-\d+$")
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if entry.name.startswith(".") and pid_suffix.search(entry.name):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


_LIBC: Optional[ctypes.CDLL] = None


def libc() -> ctypes.CDLL:
    """The C library the interpreter already uses (no ldconfig/gcc lookup at start, which
    a sandboxed unit may not allow)."""
    global _LIBC
    if _LIBC is None:
        try:
            lib = ctypes.CDLL(None, use_errno=True)
            lib.inotify_init1  # noqa: B018 (probe: a static build may not export it)
        except (OSError, AttributeError):
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _LIBC = lib
    return _LIBC


class StagedWrites:
    """Request files written as a batch, durably: every temp file is written, then all are
    flushed at once (one syncfs() for a burst instead of an fsync per file) and closed,
    then renamed, then the folder is fsynced. Only after commit() may the ledger say they
    exist. Each descriptor is closed BEFORE its rename: a reader watching the requests
    folder with inotify then sees one event per request (IN_MOVED_TO), never a late
    IN_CLOSE_WRITE under the final name."""

    def __init__(self, folder: str, owner: Optional[Tuple[int, int]] = None) -> None:
        self.folder = folder
        self.owner = owner  # (uid, gid) when an operator command runs as root
        self.staged: List[Tuple[int, str, str]] = []  # (fd or -1, temp path, target path)
        self.targets: set = set()
        self._syncfs: Optional[Callable[[int], int]] = None
        with contextlib.suppress(OSError, AttributeError):
            self._syncfs = libc().syncfs

    def __len__(self) -> int:
        return len(self.staged)

    def stage(self, target: str, data: bytes) -> None:
        fd, tmp = write_temp(target, data, 0o644)
        try:
            if self.owner is not None:
                os.fchown(fd, *self.owner)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if len(self.staged) >= SYNCFS_MIN_BATCH:
            # A burst: syncfs() will flush it; do not hold a descriptor per file.
            os.close(fd)
            fd = -1
        self.staged.append((fd, tmp, target))
        self.targets.add(target)

    def commit(self) -> int:
        """Flush every staged file and close it, rename them all, fsync the folder. On an
        error the temp files not yet renamed are removed and the error is raised."""
        staged, self.staged, self.targets = self.staged, [], set()
        if not staged:
            return 0
        done = 0
        open_fds = [fd for fd, _tmp, _target in staged if fd >= 0]
        try:
            synced = False
            if len(staged) >= SYNCFS_MIN_BATCH and self._syncfs is not None:
                dfd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    synced = self._syncfs(dfd) == 0
                finally:
                    os.close(dfd)
            if not synced:
                for fd, tmp, _target in staged:
                    sfd = fd if fd >= 0 else os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        os.fsync(sfd)
                    finally:
                        if sfd != fd:
                            os.close(sfd)
            while open_fds:
                os.close(open_fds.pop())
            for _fd, tmp, target in staged:
                os.replace(tmp, target)
                done += 1
            fsync_dir(self.folder)
            return done
        finally:
            for fd in open_fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            for _fd, tmp, _target in staged[done:]:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def abort(self) -> None:
        """Drop staged files that were never committed."""
        staged, self.staged, self.targets = self.staged, [], set()
        for fd, tmp, _target in staged:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)


class UnsafeFile(OSError):
    """A file of ours (lock, log, ledger, state) is a symlink, a FIFO or another kind of
    non-regular file, or belongs to another user: never followed, read or written."""


def open_own_file(path: str, flags: int, mode: int = 0o640, owned: bool = True) -> int:
    """Open one of the daemon's own files under state/ or logs/ without following a
    symlink or blocking on a FIFO (the folders belong to the service user, and operator
    commands may run as root): O_NOFOLLOW|O_NONBLOCK, then it must be a regular file and,
    when `owned` (we write to it), ours. O_NONBLOCK is cleared again before returning."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile(errno.ELOOP, f"{path} is a symlink (never followed)") from None
        if exc.errno == errno.ENXIO:  # a FIFO nobody reads, opened for writing
            raise UnsafeFile(errno.ENXIO, f"{path} is not a regular file") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(errno.EINVAL, f"{path} is not a regular file; remove it")
        if owned and st.st_uid != os.geteuid():
            raise UnsafeFile(
                errno.EPERM,
                f"{path} belongs to uid {st.st_uid}, not to uid {os.geteuid()} that runs "
                "this; give it back (chown) or remove it",
            )
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_own_path(path: str) -> None:
    """For files SQLite or a rename opens by name: refuse a symlink, a FIFO or another
    user's file already at `path` (a missing one is fine)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeFile(errno.ELOOP, f"{path} is a symlink (never followed)")
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFile(errno.EINVAL, f"{path} is not a regular file; remove it")
    if st.st_uid != os.geteuid():
        raise UnsafeFile(
            errno.EPERM,
            f"{path} belongs to uid {st.st_uid}, not to uid {os.geteuid()} that runs this; "
            "give it back (chown) or remove it",
        )


def read_json_doc(path: str) -> Tuple[Optional[dict], str]:
    """A small JSON object (state, request, replay answer) and "", or None and why not
    (one line). Never follows a symlink nor blocks on a FIFO someone put in its place;
    total: a text that is not UTF-8, not JSON, too deep, not an object, or that holds a
    lone surrogate (no valid text; SQLite and a terminal would refuse it) is a reason."""
    try:
        with os.fdopen(open_own_file(path, os.O_RDONLY, owned=False), "rb") as fh:
            doc = json.loads(fh.read(4 << 20))
        if not isinstance(doc, dict):
            return None, "not a JSON object"
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return None, "holds a lone surrogate (not valid Unicode text)"
    except OSError as exc:
        return None, str(exc.strerror or exc)
    except RecursionError:
        return None, "JSON nested too deeply"
    except ValueError as exc:
        return None, f"not JSON: {exc}"
    return doc, ""


def read_json_quiet(path: str) -> Optional[dict]:
    """read_json_doc without the reason: the document, or None."""
    return read_json_doc(path)[0]
