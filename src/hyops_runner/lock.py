"""One run at a time per module state slot (``latest`` or one ``--state-instance``).

An advisory ``flock`` on a file next to the state file, taken without waiting: a second
concurrent apply fails at once and names the holder. The kernel drops the lock when the
holder dies, so a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import LockBusy


@contextmanager
def slot_lock(path: Path, holder: str) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            raise LockBusy(
                f"hyops: another hyops run holds {path.name} ({who}); wait for it to finish"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} run {holder}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
