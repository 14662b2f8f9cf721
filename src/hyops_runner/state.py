"""The module state document (``latest.json``) and its life cycle.

running (previous outputs kept) -> ok | destroyed, or -> error (previous outputs kept,
``last_error``, ``failed_command``). Shapes follow CONTRACT.md section 4 and
``schemas/module-state.schema.json``; files are written atomically with mode 0600.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import HyopsError
from .fsutil import atomic_write_json
from .modules import ModuleSpec
from .runid import updated_at

TRANSIENT_KEYS = ("last_error", "failed_command")


def read_state(path: Path) -> dict[str, Any] | None:
    """The current document, or None when there is none or it is unreadable."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def base_document(spec: ModuleSpec, run_id: str, evidence_dir: Path) -> dict[str, Any]:
    return {
        "dependencies": [],
        "evidence_dir": str(evidence_dir),
        "execution": dict(spec.execution),
        "module_ref": spec.module_ref,
        "output_count": 0,
        "outputs": {},
        "requirements": {"credentials": list(spec.credentials)},
        "run_id": run_id,
        "status": "running",
        "updated_at": updated_at(),
    }


def running(
    previous: dict[str, Any] | None, spec: ModuleSpec, run_id: str, evidence_dir: Path
) -> dict[str, Any]:
    doc = base_document(spec, run_id, evidence_dir)
    if previous:
        # Readers keep using the last good outputs while a run is in flight.
        outputs = previous.get("outputs")
        if isinstance(outputs, dict):
            doc["outputs"] = outputs
            doc["output_count"] = len(outputs)
    return doc


def failed(running_doc: dict[str, Any], command: str, error: str) -> dict[str, Any]:
    doc = dict(running_doc)
    doc.update(status="error", last_error=error, failed_command=command, updated_at=updated_at())
    return doc


def succeeded_apply(
    spec: ModuleSpec,
    run_id: str,
    evidence_dir: Path,
    outputs: dict[str, Any],
    rerun_file: Path,
    resolved_file: Path,
) -> dict[str, Any]:
    doc = base_document(spec, run_id, evidence_dir)
    doc.update(
        status="ok",
        outputs=outputs,
        output_count=len(outputs),
        rerun_inputs_file=str(rerun_file),
        resolved_inputs_file=str(resolved_file),
    )
    return doc


def succeeded_destroy(spec: ModuleSpec, run_id: str, evidence_dir: Path) -> dict[str, Any]:
    doc = base_document(spec, run_id, evidence_dir)
    doc["status"] = "destroyed"
    return doc


def write_state(path: Path, doc: dict[str, Any]) -> None:
    try:
        atomic_write_json(path, doc)
    except OSError as exc:
        raise HyopsError(f"hyops: cannot write state file {path}: {exc.strerror or exc}") from None


def publish(raw: Any, allowed: tuple[str, ...]) -> tuple[dict[str, Any], list[str]]:
    """(outputs that may reach the state, published keys the playbook did not write)."""
    if not isinstance(raw, dict):
        return {}, list(allowed)
    kept = {k: raw[k] for k in allowed if k in raw}
    return kept, [k for k in allowed if k not in raw]
