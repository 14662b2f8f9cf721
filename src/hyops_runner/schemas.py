"""Load the package's JSON Schemas and turn violations into one line per offending key.

Every schema in schemas/ is registered under its $id so that relative $refs
(`route.schema.json`, `common.schema.json#/$defs/...`) resolve offline.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

from hyops_runner.paths import schema_dir
from hyops_runner.redact import holds_key_material, is_secret_path

SCHEMA_SUFFIX = ".schema.json"


def schema_files(folder: Path | None = None) -> list[Path]:
    return sorted((folder or schema_dir()).glob(f"*{SCHEMA_SUFFIX}"))


@cache
def _load(folder: str) -> tuple[dict[str, dict[str, Any]], Registry]:
    by_name: dict[str, dict[str, Any]] = {}
    registry: Registry = Registry()
    for path in schema_files(Path(folder)):
        schema = json.loads(path.read_text(encoding="utf-8"))
        by_name[path.name[: -len(SCHEMA_SUFFIX)]] = schema
        registry = registry.with_resource(schema["$id"], Resource.from_contents(schema))
    return by_name, registry


def load_schema(name: str, folder: Path | None = None) -> dict[str, Any]:
    """The schema called NAME (file NAME.schema.json)."""
    return _load(str(folder or schema_dir()))[0][name]


def validator(name: str, folder: Path | None = None) -> Draft202012Validator:
    by_name, registry = _load(str(folder or schema_dir()))
    return Draft202012Validator(
        by_name[name],
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def _join(prefix: str, parts: Iterable[Any]) -> str:
    out = prefix
    for part in parts:
        out = f"{out}[{part}]" if isinstance(part, int) else (f"{out}.{part}" if out else str(part))
    return out


def _describe(value: Any) -> str:
    return json.dumps(value) if value is None or isinstance(value, (bool, str)) else repr(value)


def _leaves(error: ValidationError) -> list[ValidationError]:
    """For oneOf/anyOf/if-then errors, the most specific sub-errors; else the error."""
    if error.validator in ("oneOf", "anyOf") and error.context:
        deepest = max(len(e.absolute_path) for e in error.context)
        if deepest > len(error.absolute_path):
            return [e for e in error.context if len(e.absolute_path) == deepest]
    return [error]


def _what(kind: str, want: Any, got: Any) -> str | None:
    """A short plain-words reason for the common validators; None for the rest."""
    if kind == "enum":
        return "must be one of " + ", ".join(str(v) for v in want)
    if kind == "const":
        return f"must be {_describe(want)}"
    if kind == "type":
        names = want if isinstance(want, str) else " or ".join(want)
        return f"must be of type {names} (got {_describe(got)})"
    if kind in ("minLength", "minItems", "minProperties") and want == 1:
        return "must not be empty"
    if kind == "pattern":
        return "must not be empty" if got == "" else f"{_describe(got)} must match {want}"
    bounds = {
        "minimum": f"must be >= {want} (got {_describe(got)})",
        "maximum": f"must be <= {want} (got {_describe(got)})",
        "minLength": f"must be at least {want} characters",
        "maxLength": f"must be at most {want} characters",
        "minItems": f"needs at least {want} items",
        "minProperties": f"needs at least {want} entries",
        "maxProperties": "must be empty" if want == 0 else f"must have at most {want} entries",
        "uniqueItems": "must not repeat items",
        "not": f"{_describe(got)} is not allowed",
    }
    return bounds.get(kind)


class _Hidden:
    """Stands in for the value of a secret-named key, or for a value holding key material
    whatever its key: messages show its type only."""

    def __init__(self, value: Any, key_material: bool = False) -> None:
        self.kind = type(value).__name__
        self.why = "key material, value hidden" if key_material else "value hidden"

    def __repr__(self) -> str:
        return f"a {self.kind} ({self.why})"


def _messages(error: ValidationError, prefix: str) -> list[str]:
    path = _join(prefix, error.absolute_path)
    kind, want, got = error.validator, error.validator_value, error.instance
    key_material = holds_key_material(got)
    if key_material or is_secret_path(list(error.absolute_path)):
        got = _Hidden(got, key_material)
        fallback = f"{got!r} is not valid ({kind})"
    else:
        fallback = error.message
    if kind == "required":
        missing = [k for k in want if isinstance(got, dict) and k not in got]
        return [f"{_join(path, [k])}: is required" for k in missing]
    if kind == "additionalProperties" and want is False and isinstance(got, dict):
        known = set(error.schema.get("properties", {}))
        return [f"{_join(path, [k])}: unknown key" for k in got if k not in known]
    if "propertyNames" in error.relative_schema_path:
        # the instance is the offending key itself; the path stops at its parent
        return [f"{_join(path, [got])}: key name {_describe(got)} is not allowed"]
    return [f"{path or '(document)'}: {_what(kind, want, got) or fallback}"]


def violations(name: str, document: Any, prefix: str = "", folder: Path | None = None) -> list[str]:
    """Every violation of schema NAME in DOCUMENT, one 'path: what is wrong' line each, sorted."""
    lines: set[str] = set()
    for error in validator(name, folder).iter_errors(document):
        for leaf in _leaves(error):
            lines.update(_messages(leaf, prefix))
    return sorted(lines)
