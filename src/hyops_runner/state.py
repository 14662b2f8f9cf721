"""The module state document (``latest.json``) and its life cycle.

Apply: running (the previous document plus this run; previous outputs kept) -> ok, or
-> error (``last_error``, ``failed_command``). Destroy: -> destroyed on success, nothing
written on failure. Shapes are HybridOps' (docs/RUNNER.md) and
``schemas/module-state.schema.json``; files are written atomically with mode 0600.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import HyopsError
from .fsutil import atomic_write_json
from .modules import ModuleSpec
from .runid import updated_at

TRANSIENT_KEYS = ("last_error", "failed_command")


@dataclass(frozen=True)
class RunFiles:
    """What a state document says about the run that wrote it."""

    command: str
    run_id: str
    evidence_dir: Path
    rerun_inputs_file: Path
    resolved_inputs_file: Path
    state_instance: str | None = None


def read_state(path: Path) -> dict[str, Any] | None:
    """The current document, or None when there is none or it is unreadable."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def base_document(
    spec: ModuleSpec, run_id: str, evidence_dir: Path, state_instance: str | None = None
) -> dict[str, Any]:
    doc: dict[str, Any] = {
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
    if state_instance:
        doc["state_instance"] = state_instance
    return doc


def running(
    previous: dict[str, Any] | None,
    spec: ModuleSpec,
    run: RunFiles,
) -> dict[str, Any]:
    """HybridOps' in-flight document: the previous one (extra keys kept) updated with this
    run, its previous outputs, ``active_command`` and the run's input files."""
    doc = dict(previous or {})
    outputs = doc.get("outputs")
    outputs = outputs if isinstance(outputs, dict) else {}
    doc.update(base_document(spec, run.run_id, run.evidence_dir, run.state_instance))
    doc.update(outputs=outputs, output_count=len(outputs), active_command=run.command)
    for key in TRANSIENT_KEYS:
        doc.pop(key, None)
    doc["rerun_inputs_file"] = str(run.rerun_inputs_file)
    doc["resolved_inputs_file"] = str(run.resolved_inputs_file)
    return doc


def failed(running_doc: dict[str, Any], command: str, error: str) -> dict[str, Any]:
    doc = dict(running_doc)
    doc.pop("active_command", None)
    doc.update(status="error", last_error=error, failed_command=command, updated_at=updated_at())
    return doc


def succeeded_apply(spec: ModuleSpec, run: RunFiles, outputs: dict[str, Any]) -> dict[str, Any]:
    """A fresh document (nothing carried over), as HybridOps writes it."""
    doc = base_document(spec, run.run_id, run.evidence_dir, run.state_instance)
    doc.update(
        status="ok",
        outputs=outputs,
        output_count=len(outputs),
        rerun_inputs_file=str(run.rerun_inputs_file),
        resolved_inputs_file=str(run.resolved_inputs_file),
    )
    return doc


def succeeded_destroy(spec: ModuleSpec, run: RunFiles) -> dict[str, Any]:
    doc = base_document(spec, run.run_id, run.evidence_dir, run.state_instance)
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
