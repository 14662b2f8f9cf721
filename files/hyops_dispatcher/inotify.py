"""inotify through ctypes (no package): watch the records folder and report the names
that changed.

Invariant: an overflow or a failure is reported as "list the folder", never as "nothing
changed".
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import struct
from typing import Tuple

from .fsio import libc


class Inotify:
    """Minimal inotify over ctypes: which names in one folder changed."""

    IN_MODIFY = 0x00000002
    IN_ATTRIB = 0x00000004
    IN_CLOSE_WRITE = 0x00000008
    IN_MOVED_FROM = 0x00000040
    IN_MOVED_TO = 0x00000080
    IN_CREATE = 0x00000100
    IN_DELETE = 0x00000200
    IN_DELETE_SELF = 0x00000400
    IN_MOVE_SELF = 0x00000800
    IN_Q_OVERFLOW = 0x00004000
    IN_IGNORED = 0x00008000
    IN_ONLYDIR = 0x01000000
    IN_NONBLOCK = 0o4000
    IN_CLOEXEC = 0o2000000
    MASK = (
        IN_MODIFY
        | IN_ATTRIB
        | IN_CLOSE_WRITE
        | IN_MOVED_FROM
        | IN_MOVED_TO
        | IN_CREATE
        | IN_DELETE
        | IN_DELETE_SELF
        | IN_MOVE_SELF
        | IN_ONLYDIR
    )
    HEADER = struct.Struct("iIII")

    def __init__(self, path: str) -> None:
        lib = libc()
        self._init1 = lib.inotify_init1
        self._add = lib.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        fd = self._init1(self.IN_NONBLOCK | self.IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.fd = fd
        wd = self._add(fd, os.fsencode(path), self.MASK)
        if wd < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"inotify_add_watch {path}: {os.strerror(err)}")
        self.lost = False  # the watched folder went away: caller falls back to polling

    def read(self) -> Tuple[set, bool]:
        """Drain events: (changed names, overflow)."""
        raws: set = set()  # a name has several events per write: decoded once
        overflow = False
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            if not buf:
                break
            pos = 0
            while pos + self.HEADER.size <= len(buf):
                _wd, mask, _cookie, length = self.HEADER.unpack_from(buf, pos)
                pos += self.HEADER.size
                raw = buf[pos : pos + length].split(b"\0", 1)[0]
                pos += length
                if mask & self.IN_Q_OVERFLOW:
                    overflow = True
                if mask & (self.IN_DELETE_SELF | self.IN_MOVE_SELF | self.IN_IGNORED):
                    self.lost = True
                    overflow = True
                if raw:
                    raws.add(raw)
        return {os.fsdecode(raw) for raw in raws}, overflow

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
