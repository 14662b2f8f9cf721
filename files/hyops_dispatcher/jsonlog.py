"""The event log: one JSON line per event to the log file (rotated by size) and to stderr
for the journal.

Invariant: one line per event, never per idle tick; a line is written whole or not at
all.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Optional

from .config import Config
from .fsio import open_own_file
from .ids import now_iso
from .states import LOG_LEVELS

# Built once (json.dumps with options builds an encoder per call); C encoder, ASCII.
_LINE = json.JSONEncoder(ensure_ascii=True, default=str)


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
        if self.fd is not None:
            try:
                if self.size + len(line) > self.max_bytes and self.size > 0:
                    self._rotate()
                os.write(self.fd, line)
                self.size += len(line)
            except OSError as exc:
                # The log must never stop the daemon; the journal still gets the line.
                failed = {
                    "ts": now_iso(),
                    "level": "ERROR",
                    "event": "error",
                    "reason": f"log write failed: {exc}",
                }
                self._stderr((_LINE.encode(failed) + "\n").encode("ascii"))
        if self.to_stderr:
            self._stderr(line)

    @staticmethod
    def _stderr(line: bytes) -> None:
        with contextlib.suppress(OSError, ValueError):
            os.write(2, line)

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
