"""Resolve a module's inputs in CONTRACT.md order, before validation.

1. manifest defaults, 2. the ``--inputs`` YAML file, 3. ``$HYOPS_INPUTS_JSON`` (a JSON
object), 4. ``$HYOPS_INPUT_<path>`` (lowercased, ``__`` between levels, value
JSON-decoded when it parses). Every layer merges the same way: mappings recursively,
lists and scalars replace, and a blank string never blanks a non-blank value.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError

ENV_JSON = "HYOPS_INPUTS_JSON"
ENV_PREFIX = "HYOPS_INPUT_"

Path_ = tuple[str, ...]


@dataclass
class ResolvedInputs:
    values: dict[str, Any]
    # Key paths whose final value came from the environment (layers 3 and 4).
    from_env: set[Path_] = field(default_factory=set)
    source: str = "defaults"


def merge(base: Any, over: Any) -> Any:
    """``over`` layered on ``base``: dicts merge, blank strings keep a non-blank base."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if over == "" and isinstance(base, str) and base != "":
        return base
    return copy.deepcopy(over)


def load_inputs_file(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(path, [f"cannot read file: {exc.strerror}"]) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(
            path, [f"not valid YAML: {where}{' '.join(str(problem).split())}"]
        ) from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise InputError(
            path, [f"inputs: top level must be a mapping of input names, got {_kind(doc)}"]
        )
    bad = [k for k in doc if not isinstance(k, str)]
    if bad:
        raise InputError(path, [f"inputs.{bad[0]!r}: input names must be strings"])
    return doc


def env_layers(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(HYOPS_INPUTS_JSON object, HYOPS_INPUT_* overrides as a nested dict)."""
    json_layer: dict[str, Any] = {}
    raw = environ.get(ENV_JSON, "")
    if raw.strip():
        try:
            json_layer = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InputError(ENV_JSON, [f"not valid JSON: {exc.msg} at char {exc.pos}"]) from None
        if not isinstance(json_layer, dict):
            raise InputError(ENV_JSON, [f"must be a JSON object, got {_kind(json_layer)}"])
    overrides: dict[str, Any] = {}
    # Sorted so that a deeper override wins over a shallower one set in the same run.
    for name in sorted(k for k in environ if k.startswith(ENV_PREFIX)):
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if not all(parts):
            raise InputError(name, ["empty path segment (use __ only between names)"])
        node = overrides
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = node[part] = {}
            node = nxt
        node[parts[-1]] = _decode(environ[name])
    return json_layer, overrides


def resolve(
    defaults: Mapping[str, Any],
    inputs_file: str | None,
    environ: Mapping[str, str] | None = None,
) -> ResolvedInputs:
    environ = os.environ if environ is None else environ
    values: Any = copy.deepcopy(dict(defaults))
    source = "defaults"
    if inputs_file:
        values = merge(values, load_inputs_file(inputs_file))
        source = inputs_file
    from_env: set[Path_] = set()
    for layer in env_layers(environ):
        if layer:
            values = merge(values, layer)
            from_env |= _leaf_paths(layer)
    return ResolvedInputs(values=values, from_env=from_env, source=source)


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _leaf_paths(doc: Any, prefix: Path_ = ()) -> set[Path_]:
    if isinstance(doc, dict) and doc:
        out: set[Path_] = set()
        for key, value in doc.items():
            out |= _leaf_paths(value, (*prefix, str(key)))
        return out
    return {prefix}


def _kind(value: Any) -> str:
    return {
        list: "a list",
        str: "a string",
        int: "a number",
        float: "a number",
        bool: "a boolean",
    }.get(type(value), type(value).__name__)
