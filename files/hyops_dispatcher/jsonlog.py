"""The event log: one JSON line per event to the log file (rotated by size) and to stderr
for the journal.

Invariant: one line per event, never per idle tick; a line is written whole or not at
all; on the journal's stream (JOURNAL_STREAM) every stderr line starts with its syslog
priority, `<3>` error, `<4>` warning, `<6>` info, `<7>` debug.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, List, Optional, TextIO, Tuple

from .config import Config
from .fsio import open_own_file
from .ids import now_iso
from .states import LOG_LEVELS

# syslog(3) priorities of the log levels: journald reads a `<N>` line prefix as the line's
# priority (SyslogLevelPrefix=yes, the default), so `journalctl -p warning` shows them.
SYSLOG_PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3}
_PREFIX = {level: f"<{n}>".encode() for level, n in SYSLOG_PRIORITY.items()}

# Lines held (JsonLog.hold) before they are written anyway: a pass over records that
# make no request (unrouted, rejected) is never made durable mid-way, and its lines must
# not pile up in memory.
HOLD_LINES = 256

# Built once (json.dumps with options builds an encoder per call); C encoder, ASCII.
_LINE = json.JSONEncoder(ensure_ascii=True, default=str)


def journal_stream() -> bool:
    """stderr is the stream systemd connected to journald: JOURNAL_STREAM holds its
    `<device>:<inode>`, and fd 2 is still that stream (not a pipe or file it was
    redirected to by someone in between)."""
    dev, _, ino = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(2)
        return st.st_dev == int(dev) and st.st_ino == int(ino)
    except (OSError, ValueError):
        return False


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a signal may cut a long write short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class JournalLines:
    """A text stream that starts each line written to `raw` with `<priority>` (for the
    one-line errors of the commands, which print to sys.stderr)."""

    def __init__(self, raw: TextIO, priority: int) -> None:
        self.raw = raw
        self.prefix = f"<{priority}>"
        self.at_line_start = True

    def write(self, text: str) -> int:
        out = []
        for piece in text.splitlines(keepends=True):
            if self.at_line_start:
                out.append(self.prefix)
            out.append(piece)
            self.at_line_start = piece.endswith("\n")
        self.raw.write("".join(out))
        return len(text)

    def flush(self) -> None:
        self.raw.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


class JsonLog:
    """One JSON line per event to the log file (rotated by size) and to stderr."""

    def __init__(
        self, path: Optional[str], level: str, max_bytes: int, backups: int, to_stderr: bool = True
    ) -> None:
        self.path = path
        self.level = LOG_LEVELS.get(level, 20)
        self.max_bytes = max_bytes
        self.backups = backups
        self.to_stderr = to_stderr
        self.fd: Optional[int] = None
        self.size = 0
        self.held: Optional[List[Tuple[str, bytes]]] = None  # lines kept until flush()
        self.journal = to_stderr and journal_stream()
        if path:
            self._open()

    def _open(self) -> None:
        assert self.path
        self.fd = open_own_file(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        self.size = os.fstat(self.fd).st_size

    def reconfigure(self, level: str, max_bytes: int, backups: int) -> None:
        self.level = LOG_LEVELS.get(level, 20)
        self.max_bytes = max_bytes
        self.backups = backups

    def _rotate(self) -> None:
        assert self.path and self.fd is not None
        os.close(self.fd)
        self.fd = None
        if self.backups <= 0:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        else:
            for i in range(self.backups - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{self.path}.{i}", f"{self.path}.{i + 1}")
            os.replace(self.path, f"{self.path}.1")
        self._open()

    def event(self, event: str, level: str = "INFO", **fields: Any) -> None:
        if LOG_LEVELS.get(level, 20) < self.level:
            return
        doc = {"ts": now_iso(), "level": level, "event": event}
        for key, value in fields.items():
            if value is not None:
                doc[key] = value
        line = (_LINE.encode(doc) + "\n").encode("ascii")
        if self.held is not None:
            self.held.append((level, line))
            if len(self.held) >= HOLD_LINES:
                self.flush()  # a pass that writes no request holds no more than this
            return
        self._write([(level, line)])

    def hold(self) -> None:
        """Keep the lines of the events that follow until flush(): a pass writes the
        lines of a batch with one write per stream instead of two per record."""
        if self.held is None:
            self.held = []

    def flush(self) -> None:
        """Write the lines held so far (whole lines, in order); holding goes on."""
        if self.held:
            lines, self.held = self.held, []
            self._write(lines)

    def release(self) -> None:
        """flush(), then write each line as it comes again."""
        self.flush()
        self.held = None

    def _write(self, lines: List[Tuple[str, bytes]]) -> None:
        if self.fd is not None:
            try:
                # Rotation as if the lines came one by one: a file goes over max_bytes
                # only by a line, never by a batch.
                piece: List[bytes] = []
                piece_size = 0
                for _level, line in lines:
                    if self.size + piece_size + len(line) > self.max_bytes and (
                        self.size + piece_size > 0
                    ):
                        if piece:
                            write_all(self.fd, b"".join(piece))
                            self.size += piece_size
                            piece, piece_size = [], 0
                        self._rotate()
                    piece.append(line)
                    piece_size += len(line)
                if piece:
                    write_all(self.fd, b"".join(piece))
                    self.size += piece_size
            except OSError as exc:
                # The log must never stop the daemon; the journal still gets the line.
                failed = {
                    "ts": now_iso(),
                    "level": "ERROR",
                    "event": "error",
                    "reason": f"log write failed: {exc}",
                }
                self._stderr([("ERROR", (_LINE.encode(failed) + "\n").encode("ascii"))])
        if self.to_stderr:
            self._stderr(lines)

    def _stderr(self, lines: List[Tuple[str, bytes]]) -> None:
        if self.journal:
            data = b"".join(_PREFIX.get(level, b"<6>") + line for level, line in lines)
        else:
            data = b"".join(line for _level, line in lines)
        with contextlib.suppress(OSError, ValueError):
            write_all(2, data)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def open_log(config: Config, to_stderr: bool = True, rotate: bool = True) -> JsonLog:
    os.makedirs(os.path.dirname(config.log_file), mode=0o750, exist_ok=True)
    # Operator commands (possibly root) never rotate: a rotated log created by root
    # would be unwritable for the service user.
    max_bytes = config.log_max_bytes if rotate else 1 << 62
    return JsonLog(
        config.log_file, config.log_level, max_bytes, config.log_backup_count, to_stderr=to_stderr
    )
