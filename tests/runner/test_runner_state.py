"""latest.json documents: shapes per status (checked against schemas/module-state),
publish filtering, and atomic 0600 writes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from hyops_runner import schemas, state
from hyops_runner.modules import find_module

REF = "platform/network/decision-dispatcher"
OUTPUTS = {
    "cap.control.decision_dispatcher": "ready",
    "decision_dispatcher.execution_mode": "record-only",
    "decision_dispatcher.last_dispatch_id": "",
    "decision_dispatcher.last_tick": "2026-03-20T10:15:31.482913+00:00",
    "decision_dispatcher.status": "ready",
}


def check(doc: dict) -> None:
    assert schemas.violations("module-state", doc) == []


def test_the_package_module_root_finds_this_module() -> None:
    spec = find_module(REF)
    assert spec.module_ref == REF
    assert spec.manifest.name == "module.yml" and spec.manifest == spec.directory / "module.yml"
    assert spec.publish == tuple(sorted(OUTPUTS, key=list(spec.publish).index))


def files(tmp_path: Path, command: str, run_id: str) -> state.RunFiles:
    ev = tmp_path / "logs" / run_id
    return state.RunFiles(command, run_id, ev, tmp_path / "r.yml", ev / "resolved.inputs.yml")


def test_every_lifecycle_document_matches_the_schema(tmp_path: Path) -> None:
    spec = find_module(REF)
    run1 = files(tmp_path, "apply", "apply-20260320T101500Z-1a2b3c4d")
    first = state.running(None, spec, run1)
    check(first)
    assert first["outputs"] == {} and first["active_command"] == "apply"
    ok = state.succeeded_apply(spec, run1, OUTPUTS)
    check(ok)
    assert list(json.loads(json.dumps(ok, sort_keys=True))) == sorted(ok)
    again = state.running(ok, spec, files(tmp_path, "apply", "apply-20260321T101500Z-2a2b3c4d"))
    check(again)
    assert again["outputs"] == OUTPUTS and again["output_count"] == 5
    err = state.failed(again, "apply", "boom")
    check(err)
    assert err["outputs"] == OUTPUTS and err["last_error"] == "boom"
    assert "active_command" not in err and err["rerun_inputs_file"] == str(tmp_path / "r.yml")
    gone = state.succeeded_destroy(
        spec, files(tmp_path, "destroy", "destroy-20260322T101500Z-3a2b3c4d")
    )
    check(gone)
    assert gone["outputs"] == {} and gone["output_count"] == 0


def test_publish_keeps_only_published_keys() -> None:
    raw = {**OUTPUTS, "decision_dispatcher.secret_thing": "x", "other": 1}
    kept, missing = state.publish(raw, tuple(OUTPUTS))
    assert kept == OUTPUTS and missing == []
    kept, missing = state.publish({"decision_dispatcher.status": "ready"}, tuple(OUTPUTS))
    assert kept == {"decision_dispatcher.status": "ready"}
    assert len(missing) == 4
    assert state.publish(["not", "a", "dict"], ("a",)) == ({}, ["a"])


def test_state_write_is_atomic_and_private(tmp_path: Path) -> None:
    path = tmp_path / "latest.json"
    path.write_text("old")
    os.chmod(path, 0o644)
    state.write_state(path, {"b": 1, "a": {"d": 2, "c": 3}})
    assert path.read_text() == '{\n  "a": {\n    "c": 3,\n    "d": 2\n  },\n  "b": 1\n}\n'
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["latest.json"]  # no temp file left
    assert state.read_state(tmp_path / "missing.json") is None
