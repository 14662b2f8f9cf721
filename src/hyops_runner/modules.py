"""Find a module package by ref and read its manifest (HybridOps' ``spec.yml``).

Lookup is HybridOps' own: ``<module_root>/<ref>`` is resolved (symlinks followed) and
``spec.yml`` read from it (``module.yml`` too, for a package checkout given as a root).
Module roots: each ``--module-root DIR``, then this package's ``modules/`` folder, then
the ``hyops.modules`` entry point group of installed packages (entries named by module
ref, loading a callable that returns the module's folder).

The manifest must be one HybridOps accepts as is: ``execution`` holds only ``driver``,
``profile`` and ``pack_ref`` (``pack_ref`` only ``id``). The playbooks come from this
runner's own top-level ``playbooks`` key, read relative to the manifest's real folder
(``spec.yml`` is a symlink to the package's ``module.yml``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from . import paths
from .errors import HyopsError, UsageError
from .yamlsafe import YamlRefused, load_yaml_text

ENTRY_POINT_GROUP = "hyops.modules"
MANIFEST_NAMES = ("spec.yml", "module.yml")
EXECUTION_KEYS = ("driver", "profile", "pack_ref")
PACK_REF_KEYS = ("id",)
# plan runs the apply playbook in --check mode and validate syntax-checks it (HybridOps).
PLAYBOOK_OF = {"apply": "apply", "plan": "apply", "validate": "apply", "destroy": "destroy"}


@dataclass(frozen=True)
class ModuleSpec:
    module_ref: str
    directory: Path
    defaults: dict[str, Any]
    publish: tuple[str, ...]
    playbooks: dict[str, Path]
    execution: dict[str, str]
    manifest: Path = Path()
    credentials: list[Any] = field(default_factory=list)
    target_groups: tuple[str, ...] = ()

    @property
    def schema_dir(self) -> Path:
        return self.directory / "schemas"

    def playbook(self, command: str) -> Path:
        try:
            return self.playbooks[PLAYBOOK_OF.get(command, command)]
        except KeyError:
            raise HyopsError(
                f"hyops: module {self.module_ref} has no '{command}' playbook in {self.manifest}"
            ) from None


def installed_modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            found[ep.name] = Path(ep.load()())
        except Exception as exc:  # a broken third-party package must not hide ours
            found.setdefault(ep.name, Path(f"<entry point {ep.value} failed: {exc}>"))
    return found


def default_roots() -> list[Path]:
    root = paths.modules_root()
    return [root] if root.is_dir() else []


def find_module(module_ref: str, module_roots: list[str] | None = None) -> ModuleSpec:
    searched: list[str] = []
    for root in [*(module_roots or []), *default_roots()]:
        folder = (Path(root).expanduser() / module_ref).resolve()
        searched.append(str(root))
        if _manifest_in(folder):
            return load_module(folder, module_ref)
    installed = installed_modules()
    if module_ref in installed and _manifest_in(installed[module_ref]):
        return load_module(installed[module_ref], module_ref)
    where = ", ".join(searched) or "no module root"
    raise UsageError(
        f"hyops: module {module_ref!r} not found (searched {where}; installed: "
        f"{', '.join(sorted(installed)) or 'none'}); pass --module-root <package checkout>/modules"
    )


def _manifest_in(folder: Path) -> Path | None:
    for name in MANIFEST_NAMES:
        if (folder / name).is_file():
            return folder / name
    return None


def load_module(folder: Path, expected_ref: str | None = None) -> ModuleSpec:
    found = _manifest_in(folder)
    if found is None:
        raise HyopsError(f"hyops: no spec.yml or module.yml in {folder}")
    path = found.resolve()  # spec.yml -> the package's module.yml: its folder holds the rest
    try:
        doc = load_yaml_text(path.read_text(encoding="utf-8"))
    except (OSError, YamlRefused) as exc:
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
    check_execution(execution, path)
    base = path.parent
    playbooks = {str(k): (base / str(v)).resolve() for k, v in need("playbooks", dict).items()}
    constraints = doc.get("constraints") or {}
    return ModuleSpec(
        module_ref=ref,
        directory=base,
        defaults=need("inputs.defaults", dict),
        publish=tuple(need("outputs.publish", list)),
        playbooks=playbooks,
        execution={
            "driver": str(execution.get("driver", "")),
            "pack_id": str((execution.get("pack_ref") or {}).get("id", "")),
            "profile": str(execution.get("profile", "")),
        },
        manifest=path,
        credentials=list((doc.get("requirements") or {}).get("credentials") or []),
        target_groups=tuple(constraints.get("target_groups") or ()),
    )


def check_execution(execution: dict[str, Any], path: Path) -> None:
    """HybridOps' rule: a manifest with other keys under ``execution`` is refused there."""
    unknown = sorted(str(k) for k in execution if k not in EXECUTION_KEYS)
    if unknown:
        raise HyopsError(
            f"hyops: manifest {path}: spec.execution has unknown keys: {', '.join(unknown)}"
        )
    pack_ref = execution.get("pack_ref")
    if not isinstance(pack_ref, dict) or not isinstance(pack_ref.get("id"), str):
        raise HyopsError(f"hyops: manifest {path}: spec.execution.pack_ref.id must be a string")
    extra = sorted(str(k) for k in pack_ref if k not in PACK_REF_KEYS)
    if extra:
        raise HyopsError(
            f"hyops: manifest {path}: spec.execution.pack_ref has unknown keys: {', '.join(extra)}"
        )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
