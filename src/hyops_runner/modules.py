"""Find a module package by ref and read its manifest (``module.yml``, HybridOps' ``spec.yml``).

Two places are searched, in this order: ``--module-root DIR`` (a folder holding
``<ref>/module.yml`` or ``<ref>/spec.yml``) and the ``hyops.modules`` entry point group
of installed packages, whose entries are named by module ref and load a callable that
returns the module's folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import yaml

from .errors import HyopsError, UsageError

ENTRY_POINT_GROUP = "hyops.modules"
MANIFEST_NAMES = ("module.yml", "spec.yml")


@dataclass(frozen=True)
class ModuleSpec:
    module_ref: str
    directory: Path
    defaults: dict[str, Any]
    publish: tuple[str, ...]
    playbooks: dict[str, Path]
    execution: dict[str, str]
    credentials: list[Any] = field(default_factory=list)
    target_groups: tuple[str, ...] = ()

    @property
    def schema_dir(self) -> Path:
        return self.directory / "schemas"

    def playbook(self, command: str) -> Path:
        try:
            return self.playbooks[command]
        except KeyError:
            raise HyopsError(
                f"hyops: module {self.module_ref} has no '{command}' playbook in its manifest"
            ) from None


def installed_modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            found[ep.name] = Path(ep.load()())
        except Exception as exc:  # a broken third-party package must not hide ours
            found.setdefault(ep.name, Path(f"<entry point {ep.value} failed: {exc}>"))
    return found


def find_module(module_ref: str, module_roots: list[str] | None = None) -> ModuleSpec:
    for root in module_roots or []:
        folder = Path(root).expanduser() / module_ref
        if _manifest_in(folder):
            return load_module(folder, module_ref)
    installed = installed_modules()
    if module_ref in installed and _manifest_in(installed[module_ref]):
        return load_module(installed[module_ref], module_ref)
    known = sorted(installed)
    where = ", ".join(str(r) for r in module_roots or []) or "no --module-root"
    raise UsageError(
        f"hyops: module {module_ref!r} not found (searched {where}; installed: "
        f"{', '.join(known) or 'none'})"
    )


def _manifest_in(folder: Path) -> Path | None:
    for name in MANIFEST_NAMES:
        if (folder / name).is_file():
            return folder / name
    return None


def load_module(folder: Path, expected_ref: str | None = None) -> ModuleSpec:
    path = _manifest_in(folder)
    if path is None:
        raise HyopsError(f"hyops: no module.yml or spec.yml in {folder}")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise HyopsError(f"hyops: cannot read manifest {path}: {_one_line(exc)}") from None
    if not isinstance(doc, dict):
        raise HyopsError(f"hyops: manifest {path}: top level must be a mapping")

    def need(key: str, kind: type) -> Any:
        node: Any = doc
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, kind):
            raise HyopsError(f"hyops: manifest {path}: {key} must be a {kind.__name__}")
        return node

    ref = need("module_ref", str)
    if expected_ref and ref != expected_ref:
        raise HyopsError(
            f"hyops: manifest {path}: module_ref is {ref!r}, expected {expected_ref!r}"
        )
    execution = need("execution", dict)
    playbooks = {k: (folder / v).resolve() for k, v in need("execution.playbooks", dict).items()}
    constraints = doc.get("constraints") or {}
    return ModuleSpec(
        module_ref=ref,
        directory=folder.resolve(),
        defaults=need("inputs.defaults", dict),
        publish=tuple(need("outputs.publish", list)),
        playbooks=playbooks,
        execution={
            "driver": str(execution.get("driver", "")),
            "pack_id": str((execution.get("pack_ref") or {}).get("id", "")),
            "profile": str(execution.get("profile", "")),
        },
        credentials=list((doc.get("requirements") or {}).get("credentials") or []),
        target_groups=tuple(constraints.get("target_groups") or ()),
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
