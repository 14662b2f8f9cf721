"""Where the module package's own files live (manifest, schemas, playbooks, module root)."""

from __future__ import annotations

from pathlib import Path

MODULE_REF = "platform/network/decision-dispatcher"
MANIFEST = "module.yml"


def module_dir() -> Path:
    """The folder holding module.yml: the checkout root (editable install, tests), or the
    copy installed as package data by ``pip install .`` (see pyproject.toml)."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[2], here.parent / "package"):
        if (candidate / MANIFEST).is_file():
            return candidate
    return Path(__file__).resolve().parents[2]


def modules_root() -> Path:
    """``<package>/modules``: what ``--module-root`` defaults to (HybridOps' layout)."""
    return module_dir() / "modules"


def schema_dir() -> Path:
    return module_dir() / "schemas"
