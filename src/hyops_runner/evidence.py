"""The evidence folder of one run, under HybridOps' file names and shapes.

``meta.json``, ``preflight_decision.json``, ``preflight_result.json``,
``inputs_resolved.json``, ``resolved.inputs.yml``, ``driver_result.json``,
``result.json``, ``module_state.json`` (plus ``ansible.log``, ``ansible_<cmd>.*`` and
``connectivity_ssh_auth.*`` written by playbook.py and preflight.py). Inputs are masked
here (secrets -> ``REDACTED``). This runner's own files use names HybridOps does not:
``hyops_run.json`` (its report) and ``ansible.events.jsonl`` (task events).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import redact
from .fsutil import atomic_write_json, atomic_write_yaml
from .modules import ModuleSpec
from .runid import updated_at

REPORT = "hyops_run.json"
RESOLVED_INPUTS = "resolved.inputs.yml"


@dataclass(frozen=True)
class Evidence:
    dir: Path
    spec: ModuleSpec
    command: str
    run_id: str

    def write_json(self, name: str, doc: Any) -> Path:
        path = self.dir / name
        atomic_write_json(path, doc)
        return path

    def driver(self) -> dict[str, str]:
        ex = self.spec.execution
        return {"ref": ex["driver"], "profile": ex["profile"], "pack_id": ex["pack_id"]}

    def driver_result(
        self, status: str, error: str = "", outputs: dict[str, Any] | None = None,
        command: str | None = None, warnings: list[str] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        doc: dict[str, Any] = {
            "command": command or self.command,
            "driver": self.driver(),
            "normalized_outputs": outputs or {},
            "run_id": self.run_id,
            "status": status,
            "warnings": list(warnings or []),
        }
        if status != "ok":
            doc["error"] = error
        return doc

    def inputs(self, values: dict[str, Any], state_instance: str | None) -> None:
        masked = redact.masked(values)
        self.write_json(
            "inputs_resolved.json",
            {"inputs": masked, "module_ref": self.spec.module_ref,
             "state_instance": state_instance or ""},
        )  # fmt: skip

    def resolved_inputs(self, values: dict[str, Any]) -> Path:
        path = self.dir / RESOLVED_INPUTS
        atomic_write_yaml(path, redact.masked(values), sort_keys=False)
        return path

    def preflight_decision(self, passed: bool | None, detail: str = "") -> None:
        """HybridOps' record of the preflight gate: pending, then passed or failed."""
        now = updated_at()
        doc: dict[str, Any] = {
            "command": self.command,
            "completed_at": now if passed is not None else "",
            "decision": "enforce",
            "decision_source": "operator-cli",
            "guarantee": "established" if passed else "not-established",
            "mutating": self.command in ("apply", "destroy"),
            "reason": "",
            "recorded_at": now,
            "requirement": "driver-preflight",
            "schema_version": 1,
            "scope": "driver",
            "status": {None: "pending", True: "passed", False: "failed"}[passed],
        }
        if passed is False:
            doc["detail"] = detail
        self.write_json("preflight_decision.json", doc)

    def module_state(
        self, state_path: Path, rerun: Path | None, resolved: Path | None,
        published: list[str], status: str | None = None, detail: str = "",
    ) -> None:  # fmt: skip
        doc: dict[str, Any] = {
            "path": str(state_path),
            "published_outputs": sorted(published),
            "publish_policy": list(self.spec.publish),
            "rerun_inputs_file": str(rerun) if rerun else "",
            "resolved_inputs_file": str(resolved) if resolved else "",
        }
        if status:
            doc.update(status=status, detail=detail)
        self.write_json("module_state.json", doc)
