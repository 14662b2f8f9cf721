"""Hand-written dispatch requests and approval markers, for the approval-awareness tests.

Built from the dispatch-request schema (not from the daemon's code), so the tests say what
the files on disk look like without depending on how the daemon makes them."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .conftest import ROUTES, Root


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat()


def request_doc(
    decision_id: str,
    route: str,
    issued: float,
    *,
    ttl: int | None = None,
    requires_approval: bool = True,
) -> dict[str, Any]:
    stamp = datetime.fromtimestamp(issued, tz=UTC).strftime("%Y%m%dT%H%M%SZ")
    digest = hashlib.sha256(decision_id.encode()).hexdigest()[:8]
    target = ROUTES[route]
    doc: dict[str, Any] = {
        "schema_version": 1,
        "dispatch_id": f"dispatch-{stamp}-{route}-{digest}",
        "timestamp_utc": iso(issued),
        "status": "awaiting-approval" if requires_approval else "queued",
        "execution_mode": "record-only",
        "source_decision_id": decision_id,
        "source_decision_file": f"/srv/records/{decision_id}.json",
        "decision_type": route,
        "route": route,
        "execution_plane": target["execution_plane"],
        "target_kind": target["target_kind"],
        "target_ref": target["target_ref"],
        "target_env": target["target_env"],
        "requires_approval": requires_approval,
        "approval_source": "route",
        "rationale": f"seeded {decision_id}",
        "checks": [],
        "decision_timestamp_utc": iso(issued),
        "decision_status": "emitted",
    }
    if ttl is not None:
        doc["expires_at"] = iso(issued + ttl)
    return doc


def seed_request(root: Root, doc: dict[str, Any]) -> str:
    root.requests.mkdir(parents=True, exist_ok=True)
    (root.requests / f"{doc['dispatch_id']}.json").write_text(json.dumps(doc, indent=2))
    return str(doc["dispatch_id"])


def approve(approvals: Path, dispatch_id: str) -> None:
    """The consumer's approval marker: its existence is the approval
    (docs/INTERFACES.md "Approval marker")."""
    approvals.mkdir(parents=True, exist_ok=True)
    (approvals / f"{dispatch_id}.approved.json").write_text('{"approved_by": "test"}\n')
