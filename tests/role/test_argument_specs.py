"""The role's defaults and its argument_specs document the same variables, the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROLE = Path(__file__).resolve().parents[2] / "roles" / "decision_dispatcher"
PY_TYPES = {
    "str": str,
    "path": str,
    "int": int,
    "bool": bool,
    "dict": dict,
    "list": list,
}


def load(relative: str) -> Any:
    return yaml.safe_load((ROLE / relative).read_text(encoding="utf-8"))


DEFAULTS: dict[str, Any] = load("defaults/main.yml")
OPTIONS: dict[str, Any] = load("meta/argument_specs.yml")["argument_specs"]["main"]["options"]


def test_defaults_and_argument_specs_have_the_same_keys() -> None:
    assert set(DEFAULTS) - set(OPTIONS) == set(), "defaults missing from argument_specs"
    assert set(OPTIONS) - set(DEFAULTS) == set(), "argument_specs options without a default"


def test_every_variable_carries_the_role_prefix() -> None:
    assert [k for k in DEFAULTS if not k.startswith("decision_dispatcher_")] == []


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_option_is_documented_typed_and_agrees_with_its_default(name: str) -> None:
    option = OPTIONS[name]
    assert option.get("description"), f"{name}: no description"
    assert option.get("type") in PY_TYPES, f"{name}: type {option.get('type')!r}"
    assert option.get("default") == DEFAULTS.get(name), (
        f"{name}: default differs from defaults/main.yml"
    )
    assert isinstance(DEFAULTS.get(name), PY_TYPES[option["type"]]), (
        f"{name}: default has the wrong type"
    )
    if "choices" in option:
        assert DEFAULTS.get(name) in option["choices"], f"{name}: default not among the choices"
