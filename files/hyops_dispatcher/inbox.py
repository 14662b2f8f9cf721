"""The replay inbox: operator replays asked of the running daemon (`state/replay/`).

Invariant: an ask is answered once by the daemon that holds the lock; an answer that
cannot be written drops its ask (it is not a request write: nothing is degraded).
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import List, Optional, Tuple

from .config import Config
from .fsio import read_json_quiet, write_file_durably
from .jsontext import dump_json
from .record import DECISION_ID_RE


class ReplayInbox:
    """`replay` asks the running daemon instead of writing behind its back: the command
    drops <state dir>/replay/<decision_id>.ask, sends SIGUSR1 and waits for
    <decision_id>.answer (JSON: ok, dispatch_id, request, status or error; `yes` in the ask
    is replay --yes), which the
    daemon writes after doing the replay through its own write path (Daemon.replay)."""

    ASK = ".ask"
    ANSWER = ".answer"

    def __init__(self, config: Config) -> None:
        self.folder = os.path.join(os.path.dirname(config.state_file), "replay")
        self.empty_mtime_ns: Optional[int] = None  # listed empty at this folder mtime

    def asks(self) -> List[str]:
        """decision ids asked for. An idle pass costs one stat: the folder is listed only
        when its mtime changed since it was last seen empty."""
        try:
            mtime_ns = os.stat(self.folder).st_mtime_ns
            if mtime_ns == self.empty_mtime_ns:
                return []
            with os.scandir(self.folder) as entries:
                # Only regular files are asks: a stray folder or FIFO is no one's question.
                names = [
                    e.name
                    for e in entries
                    if e.name.endswith(self.ASK) and e.is_file(follow_symlinks=False)
                ]
        except FileNotFoundError:
            return []
        # Trust an empty listing only for an mtime older than a second (a file added in
        # the same timestamp tick would not change it).
        trusted = not names and time.time_ns() - mtime_ns > 1_000_000_000
        self.empty_mtime_ns = mtime_ns if trusted else None
        ids = [n[: -len(self.ASK)] for n in sorted(names)]
        return [i for i in ids if DECISION_ID_RE.match(i)]

    def confirmed(self, decision_id: str) -> bool:
        """The ask says `yes` (replay --yes): a replay that would surprise may be done."""
        doc = read_json_quiet(os.path.join(self.folder, decision_id + self.ASK))
        return isinstance(doc, dict) and doc.get("yes") is True

    def answer(self, decision_id: str, answer: dict) -> Optional[str]:
        """Write the answer and take the ask away. None, or why the answer could not be
        written (a stray entry at its name, a full disk): then the ask is dropped too, so
        it is not asked again at every pass and the asks after it are answered."""
        base = os.path.join(self.folder, decision_id)
        problem = None
        try:
            write_file_durably(base + self.ANSWER, dump_json(answer), sync_dir=False)
        except OSError as exc:
            problem = f"cannot write {base + self.ANSWER}: {exc.strerror or exc}"
        with contextlib.suppress(OSError):
            os.unlink(base + self.ASK)
        return problem

    # --- the operator's side
    def ask(self, decision_id: str, owner: Optional[Tuple[int, int]], yes: bool = False) -> None:
        if not os.path.isdir(self.folder):
            os.makedirs(self.folder, mode=0o750, exist_ok=True)
            if owner is not None:
                os.chown(self.folder, *owner)
        base = os.path.join(self.folder, decision_id)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(base + self.ANSWER)
        doc = {"decision_id": decision_id, "yes": yes}
        write_file_durably(base + self.ASK, dump_json(doc), owner=owner)

    def take_answer(self, decision_id: str) -> Optional[dict]:
        path = os.path.join(self.folder, decision_id + self.ANSWER)
        doc = read_json_quiet(path)
        if doc is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)
        return doc

    def withdraw(self, decision_id: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self.folder, decision_id + self.ASK))
