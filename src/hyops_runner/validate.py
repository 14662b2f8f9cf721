"""Check resolved inputs against the module's JSON Schemas, naming every violation by path.

The schema for a lifecycle command is ``schemas/module-inputs-<command>.schema.json``
when the module ships one (apply needs hosts and routes), else
``schemas/module-inputs.schema.json``. Every ``*.schema.json`` in the folder is
registered under its ``$id`` so relative ``$ref``s resolve offline.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

from .errors import HyopsError


@cache
def _registry(schema_dir: Path) -> tuple[Registry, dict[str, dict[str, Any]]]:
    by_name: dict[str, dict[str, Any]] = {}
    resources = []
    for path in sorted(schema_dir.glob("*.schema.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise HyopsError(f"hyops: cannot read schema {path}: {exc}") from None
        by_name[path.name] = doc
        if "$id" in doc:
            resources.append((doc["$id"], Resource.from_contents(doc)))
    return Registry().with_resources(resources), by_name


def schema_for(schema_dir: Path, name: str) -> tuple[Draft202012Validator, str]:
    registry, by_name = _registry(schema_dir.resolve())
    if name not in by_name:
        raise HyopsError(f"hyops: schema {name} missing from {schema_dir}")
    return Draft202012Validator(by_name[name], registry=registry), name


def inputs_validator(schema_dir: Path, command: str) -> Draft202012Validator | None:
    if not schema_dir.is_dir():
        return None
    for name in (f"module-inputs-{command}.schema.json", "module-inputs.schema.json"):
        if (schema_dir / name).is_file():
            return schema_for(schema_dir, name)[0]
    return None


def problems(validator: Draft202012Validator, doc: Any, root: str = "inputs") -> list[str]:
    """One ``<path>: <what is wrong>`` line per violation, sorted by path."""
    lines = {_describe(err, root) for err in _leaves(validator.iter_errors(doc))}
    return sorted(lines)


def _leaves(errors: Any) -> list[ValidationError]:
    out: list[ValidationError] = []
    for err in errors:
        # anyOf/oneOf report their alternatives in .context; the alternatives say more.
        if err.context and err.validator in ("anyOf", "oneOf"):
            out.extend(_leaves(err.context))
        else:
            out.append(err)
    return out


def _path(root: str, parts: Any) -> str:
    out = root
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(err: ValidationError, root: str) -> str:
    path = _path(root, err.absolute_path)
    kind, expected, got = err.validator, err.validator_value, err.instance
    if kind == "required":
        missing = [k for k in expected if isinstance(got, dict) and k not in got]
        return f"{_path(root, [*err.absolute_path, *missing[:1]])}: is required"
    if kind == "additionalProperties":
        extra = sorted(k for k in got if k not in err.schema.get("properties", {}))
        return f"{_path(root, [*err.absolute_path, *extra[:1]])}: unknown key (not allowed here)"
    if kind == "propertyNames":
        return f"{path}: key {_short(got)} is not a valid name ({_one(err.message)})"
    if kind == "enum":
        return f"{path}: must be one of {', '.join(map(str, expected))} (got {_short(got)})"
    if kind == "const":
        return f"{path}: must be {_short(expected)} (got {_short(got)})"
    if kind == "type":
        want = expected if isinstance(expected, str) else " or ".join(expected)
        return f"{path}: must be {_article(want)} (got {_short(got)})"
    if kind == "pattern":
        return f"{path}: {_short(got)} does not match {expected}"
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        word = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
        return f"{path}: must be {word[kind]} {expected} (got {_short(got)})"
    if kind == "minProperties" and expected == 1:
        return f"{path}: must not be empty"
    if kind == "minItems" and expected == 1:
        return f"{path}: must list at least one entry"
    if kind == "minLength" and expected == 1:
        return f"{path}: must not be blank"
    if kind == "not":
        return f"{path}: {_short(got)} is not allowed here"
    return f"{path}: {_one(err.message)}"


def _article(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _one(text: str) -> str:
    return " ".join(text.split())
