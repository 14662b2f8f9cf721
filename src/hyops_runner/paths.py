"""Where the module package's own files live (manifest, schemas, playbooks)."""

from __future__ import annotations

from pathlib import Path

MODULE_REF = "platform/network/decision-dispatcher"


def module_dir() -> Path:
    """The folder holding module.yml: the repository root in an editable install."""
    return Path(__file__).resolve().parents[2]


def schema_dir() -> Path:
    return module_dir() / "schemas"
