"""Shared fixtures: the repository root and the module manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def module_spec() -> dict[str, Any]:
    return yaml.safe_load((REPO / "module.yml").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def input_defaults(module_spec: dict[str, Any]) -> dict[str, Any]:
    return module_spec["inputs"]["defaults"]
