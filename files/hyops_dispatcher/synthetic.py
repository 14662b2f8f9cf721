"""Synthetic requests left behind: a validate-handoff request whose check can no longer
clean it up (its record is gone, or it is older than SYNTHETIC_MAX_AGE_SECONDS: a killed
check) is removed by the daemon, one log line each.

Invariant: only a request file that says `synthetic: true` and comes from a handoff-check
decision is ever removed; an approved one (or one whose approval cannot be told) is left
for the operator and reported once.
"""

from __future__ import annotations

import contextlib
import os
from typing import Dict, List, Optional

from .approvals import approval_marker, request_facts, request_path
from .config import Config
from .fsio import fsync_dir, read_json_quiet
from .jsonlog import JsonLog
from .ledger import Ledger
from .record import is_handoff
from .states import SYNTHETIC_MAX_AGE_SECONDS


class SyntheticSweep:
    """Run at every poll pass and after READY; costs one indexed query when there is no
    synthetic request (the usual case)."""

    def __init__(self, log: JsonLog, ledger: Ledger) -> None:
        self.log = log
        self.ledger = ledger
        self.reported: Dict[str, str] = {}  # dispatch id -> what was said (said once)

    def sweep(self, config: Config, now: float) -> int:
        """Remove the synthetic requests that are over; returns how many."""
        removed: List[str] = []
        for dispatch_id in self.ledger.approvals_synthetic_ids():
            path = request_path(config, dispatch_id)
            doc = read_json_quiet(path)
            facts = request_facts(doc)
            if doc is None or facts is None or facts.dispatch_id != dispatch_id:
                continue  # gone (the heartbeat drops its row) or not a request of ours
            source = doc.get("source_decision_id")
            if doc.get("synthetic") is not True or not is_handoff(source or ""):
                continue  # only the check's own requests, never a real one
            why = _over(config, doc, facts.issued_at, now)
            if why is None:
                continue
            held = _approved(config, dispatch_id)
            if held is not None:
                self._say_once(dispatch_id, "synthetic-approved", path, f"{why}; {held}")
                continue
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                self._say_once(
                    dispatch_id, "synthetic-unremovable", path, f"{why}; cannot remove: {exc}"
                )
                continue
            removed.append(dispatch_id)
            self.log.event(
                "synthetic-removed",
                file=path,
                dispatch_id=dispatch_id,
                decision_id=source,
                reason=f"synthetic request removed: {why}",
            )
        if removed:
            with contextlib.suppress(OSError):  # a removal that comes back goes again
                fsync_dir(config.requests_dir)
            self.ledger.begin()
            self.ledger.approvals_drop(removed)
            self.ledger.commit()
        return len(removed)

    def _say_once(self, dispatch_id: str, event: str, path: str, reason: str) -> None:
        if self.reported.get(dispatch_id) == event:
            return
        self.reported[dispatch_id] = event
        self.log.event(event, level="WARNING", file=path, dispatch_id=dispatch_id, reason=reason)


def _over(config: Config, doc: dict, issued_at: float, now: float) -> Optional[str]:
    """Why this synthetic request's check is over, or None while it may still run."""
    age = now - issued_at
    if age > SYNTHETIC_MAX_AGE_SECONDS:
        return f"{int(age)} s old, older than {SYNTHETIC_MAX_AGE_SECONDS:g} s (its check is over)"
    record = doc.get("source_decision_file")
    if not isinstance(record, str) or not os.path.isdir(config.records_dir):
        return None  # an unmounted records folder says nothing about the record
    try:
        os.lstat(record)
    except FileNotFoundError:
        return f"its record {record} is gone (its check is over)"
    except OSError:
        return None
    return None


def _approved(config: Config, dispatch_id: str) -> Optional[str]:
    """Why the request must stay: approved (its marker exists), or its approval cannot be
    told (the approvals folder cannot be read); None when it is not approved."""
    marker = approval_marker(config, dispatch_id)
    try:
        os.lstat(marker)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"approval unknown ({marker}: {exc.strerror or exc}); left in place"
    return f"approved ({marker}); left for the operator, remove it by hand"
