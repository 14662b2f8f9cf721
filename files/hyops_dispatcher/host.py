"""What the daemon asks of its host: the instance lock (one daemon per root), sd_notify
(READY, WATCHDOG, STATUS), and giving freed memory back.

Invariant: the lock is held for the daemon's whole life; a notify never blocks the loop.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import time
from typing import Optional, Tuple

from .fsio import libc, open_own_file


def release_free_memory() -> None:
    """Give memory freed by a big pass (and by compiling this file at start) back to the
    OS: glibc keeps freed heap otherwise, and RSS would stay at the high-water mark."""
    with contextlib.suppress(OSError, AttributeError):
        libc().malloc_trim(0)


class Notifier:
    """sd_notify over NOTIFY_SOCKET (a datagram socket; '@' means the abstract namespace)."""

    def __init__(self) -> None:
        self.addr = os.environ.get("NOTIFY_SOCKET") or None
        self.watchdog_s: Optional[float] = None
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if usec and usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6
        self.last_ping = 0.0

    def send(self, message: str) -> None:
        if not self.addr:
            return
        addr = "\0" + self.addr[1:] if self.addr.startswith("@") else self.addr
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # Never block the loop on a receiver that is slow to read (a full queue
                # drops this message; the next ping follows within half WatchdogSec).
                sock.sendto(message.encode(), socket.MSG_DONTWAIT, addr)
        except OSError:
            pass  # systemd gone, not listening or busy: nothing useful to do

    # `now` here is time.monotonic(): a wall-clock step must not stop the pings.
    def ping_due(self) -> Optional[float]:
        if self.watchdog_s is None:
            return None
        return self.last_ping + self.watchdog_s / 2

    def ping(self, now: float, force: bool = False) -> None:
        due = self.ping_due()
        if due is not None and (force or now >= due):
            self.send("WATCHDOG=1")
            self.last_ping = now


def lock_holder_running(lock_file: str) -> bool:
    """True when some process holds the instance lock (i.e. a daemon runs on this root)."""
    try:
        fd = open_own_file(lock_file, os.O_RDONLY, owned=False)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


class Locked(Exception):
    pass


def lock_holder(lock_file: str) -> Tuple[Optional[int], str]:
    """(pid, command) the lock file names: `run` is the daemon, `once` and `replay` are
    operator commands (no SIGUSR1 handler). A file from before the command was written
    names only a pid: taken for `run`. (None, "") when it cannot be read."""
    try:
        with os.fdopen(open_own_file(lock_file, os.O_RDONLY, owned=False), "rb") as fh:
            words = fh.read(64).decode("ascii", "replace").split()
        return int(words[0]), (words[1] if len(words) > 1 else "run")
    except (OSError, ValueError, IndexError):
        return None, ""


def acquire_lock(lock_file: str, command: str = "run") -> int:
    fd = open_own_file(lock_file, os.O_RDWR | os.O_CREAT)
    # `status` and `validate-handoff` probe the lock with a shared flock held for
    # microseconds: retry briefly so a probe never makes a starting daemon give up.
    deadline = time.monotonic() + 1.0
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as exc:
            busy = exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
            if busy and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            os.close(fd)
            if busy:
                raise Locked(lock_file) from None
            raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {command}\n".encode())
    return fd
