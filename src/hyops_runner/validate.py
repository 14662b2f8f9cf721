"""Pick the module's input schema for a lifecycle command and list every violation.

The schema is ``schemas/module-inputs-<command>.schema.json`` when the module ships
one (apply needs hosts and routes), else ``schemas/module-inputs.schema.json``; a module
without schemas is not validated. Messages come from schemas.py, one
``inputs.<path>: <what is wrong>`` line per violation. Then the rules a schema cannot
say across keys: with ``dispatcher_handoff_check`` on, the handoff's decision type must
be one of ``dispatcher_routes`` (else only the host would find out, naming the role
variable).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import schemas


def schema_name(schema_dir: Path, command: str) -> str | None:
    for name in (f"module-inputs-{command}", "module-inputs"):
        if (schema_dir / f"{name}{schemas.SCHEMA_SUFFIX}").is_file():
            return name
    return None


def input_problems(schema_dir: Path, command: str, values: dict[str, Any]) -> list[str]:
    name = schema_name(schema_dir, command) if schema_dir.is_dir() else None
    if name is None:
        return []
    found = schemas.violations(name, values, prefix="inputs", folder=schema_dir)
    if command == "apply" and not found:
        found += _handoff_problems(values)
    return found


def _handoff_problems(values: dict[str, Any]) -> list[str]:
    routes = values.get("dispatcher_routes")
    wanted = values.get("dispatcher_handoff_decision_type")
    if values.get("dispatcher_handoff_check") is not True or not isinstance(routes, dict):
        return []
    if wanted in routes:
        return []
    have = ", ".join(sorted(str(r) for r in routes)) or "none"
    return [
        f"inputs.dispatcher_handoff_decision_type: {wanted!r} has no route in "
        f"inputs.dispatcher_routes (routes: {have})"
    ]
