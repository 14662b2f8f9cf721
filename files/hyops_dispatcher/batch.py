"""The one write path of requests: stage a batch of requests, make them durable, then
commit their ledger rows; adopt requests the ledger lacks after a crash.

Invariant: a request file is durable before the ledger says it exists; the requests
folder is the truth.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

from .decide import Decision
from .fsio import StagedWrites, read_json_doc, read_json_quiet
from .ids import dispatch_id_epoch, parse_iso_utc
from .jsonlog import JsonLog
from .jsontext import dump_json, short
from .ledger import LOOKUP_CHUNK, Ledger
from .record import DECISION_ID_RE, is_record_name
from .states import BATCH_MAX
from .verdicts import ADOPTED_REASON, IN_THIS_BATCH


class WriteFailed(OSError):
    """A request (or its ledger row) could not be written: the host's fault (disk full,
    folder unwritable), not the record's. The pass stops here; the loop decides what
    happens next (degraded, one retry 1, 2, 4 ... 60 s later)."""


class Batch:
    """The one write path for requests, for the daemon's passes and for `replay` alike: a
    request is staged as a temp file, and the ledger rows of the batch are committed only
    after every staged file is durable and renamed (requests first, then the ledger). A
    dispatch id already taken (in the folder or in this batch) is never written again."""

    def __init__(self, requests_dir: str, ledger: Ledger, owner: Optional[Tuple[int, int]]) -> None:
        self.requests_dir = requests_dir  # a path a reload cannot change
        self.ledger = ledger
        self.writes = StagedWrites(requests_dir, owner)
        self.failed = False  # a commit failed: requests may be on disk the ledger lacks
        self.remade = 0  # times the requests folder was re-created, not yet reported

    def mark_failed(self) -> None:
        """A write of this batch failed: drop what is staged; requests may be on disk that
        the ledger lacks until recover() (or the next start) reconciles them."""
        self.failed = True
        self.writes.abort()

    def recover(self, log: JsonLog, now: float) -> None:
        """After a failure: adopt the requests that reached the disk, then trust again."""
        if self.failed:
            self.reconcile(log, now)
            self.failed = False

    def folder_remade(self) -> int:
        """Times the requests folder was re-created since the last call (to report)."""
        remade, self.remade = self.remade, 0
        return remade

    def target(self, dispatch_id: str) -> str:
        return os.path.join(self.requests_dir, dispatch_id + ".json")

    def existing(self, dispatch_id: str) -> Optional[dict]:
        """The request at this dispatch id, if any (also one staged in this batch)."""
        target = self.target(dispatch_id)
        doc = read_json_quiet(target)
        if doc is None and target in self.writes.targets:
            return IN_THIS_BATCH
        return doc

    def is_staged(self, target: str) -> bool:
        """A request file of this batch, written but not yet renamed into the folder."""
        return target in self.writes.targets

    def stage(self, decision: Decision) -> None:
        assert decision.dispatch_id is not None and decision.request is not None
        target, data = self.target(decision.dispatch_id), dump_json(decision.request)
        try:
            self.writes.stage(target, data)
        except FileNotFoundError:
            if not self.make_folder():
                raise
            self.writes.stage(target, data)

    def make_folder(self) -> bool:
        """Re-create a requests folder that vanished (0750, ours) when the folder above it
        is still there; False when it cannot be (then the daemon reports degraded)."""
        folder = self.requests_dir
        if os.path.isdir(folder) or not os.path.isdir(os.path.dirname(folder)):
            return False
        try:
            os.mkdir(folder, 0o750)
            os.chmod(folder, 0o750)  # whatever the umask
            if self.writes.owner is not None:
                os.chown(folder, *self.writes.owner)
        except OSError:
            return os.path.isdir(folder)
        self.remade += 1  # the daemon logs it
        return True

    def usable(self) -> Optional[str]:
        """Why requests cannot be written now (None: they can). One stat and one access
        check per poll; a vanished folder is re-created."""
        folder = self.requests_dir
        if not os.path.isdir(folder) and not self.make_folder():
            return f"requests folder {folder} is missing and cannot be re-created"
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"requests folder {folder} is not writable"
        return None

    @property
    def full(self) -> bool:
        return len(self.writes) >= BATCH_MAX

    def finish(self, meta: Dict[str, str]) -> None:
        """Make the batch durable: requests folder fsync first, then the ledger commit."""
        if len(self.writes):
            try:
                self.writes.commit()
            except BaseException:
                # Nothing may claim a request that is not on disk; some may be on disk
                # that the ledger does not claim: the next start must reconcile.
                self.mark_failed()
                self.ledger.rollback()
                raise
        if self.ledger.in_tx:
            for key, value in meta.items():
                self.ledger.meta_set(key, value)
            self.ledger.commit()

    def reconcile(self, log: JsonLog, now: float) -> None:
        """The requests folder is the truth: adopt any request the ledger does not know
        (written just before a crash, or the ledger was lost). Streamed in chunks: the
        folder may hold a request per decision of a long history."""
        adopted = 0
        try:
            with os.scandir(self.requests_dir) as entries:
                chunk: List[str] = []
                for entry in entries:
                    if is_record_name(entry.name):
                        chunk.append(entry.name)
                        if len(chunk) >= LOOKUP_CHUNK:
                            adopted += self._adopt(chunk, log, now)
                            chunk = []
                adopted += self._adopt(chunk, log, now)
        except FileNotFoundError:
            return
        self.ledger.commit()
        if adopted:
            log.event(
                "recovered",
                level="INFO",
                reason=f"adopted {adopted} request(s) from the requests folder into the ledger",
            )

    def _adopt(self, names: List[str], log: JsonLog, now: float) -> int:
        if not names:
            return 0
        known = self.ledger.emitted_among([n[:-5] for n in names])
        adopted = 0
        for name in names:
            if name[:-5] in known:
                continue
            path = os.path.join(self.requests_dir, name)
            doc, problem = read_json_doc(path)
            decision_id = dispatch_id = epoch = None
            if doc is not None:
                decision_id, dispatch_id = doc.get("source_decision_id"), doc.get("dispatch_id")
                epoch = dispatch_id_epoch(dispatch_id)
                if not isinstance(decision_id, str) or not DECISION_ID_RE.match(decision_id):
                    problem = f"source_decision_id {short(decision_id)} is not a decision id"
                elif epoch is None:
                    problem = f"dispatch_id {short(dispatch_id)} is not a dispatch id"
            if problem or doc is None or decision_id is None or dispatch_id is None:
                # Reported, never fatal, never moved: the folder is the consumer's too.
                log.event(
                    "error",
                    level="WARNING",
                    file=path,
                    reason=f"request file ignored (not adopted into the ledger): {problem}",
                )
                continue
            stamped = parse_iso_utc(doc.get("decision_timestamp_utc"))
            epoch = epoch if stamped is None else stamped
            source = doc.get("source_decision_file")
            route = doc.get("route") or doc.get("decision_type")
            self.ledger.begin()
            self.ledger.put_decision(
                decision_id,
                "emitted",
                dispatch_id,
                route if isinstance(route, str) else None,
                epoch,
                os.path.basename(source) if isinstance(source, str) else None,
                ADOPTED_REASON,
                now,
            )
            adopted += 1
        return adopted
