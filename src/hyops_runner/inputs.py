"""Resolve a module's inputs in HybridOps' order (docs/RUNBOOK.md "Notes"), before validation.

1. manifest defaults, 2. the ``--inputs`` YAML file, 3. ``$HYOPS_INPUTS_JSON`` (a JSON
object), 4. ``$HYOPS_INPUT_<path>`` (lowercased, ``__`` between levels, a number indexes a list,
value JSON-decoded when it parses). Every layer merges the same way: mappings recursively,
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

from .errors import InputError
from .yamlsafe import MAX_DEPTH, TOO_DEEP, YamlRefused, load_json_text, load_yaml_text

ENV_JSON = "HYOPS_INPUTS_JSON"
ENV_PREFIX = "HYOPS_INPUT_"

Path_ = tuple[str, ...]


@dataclass
class ResolvedInputs:
    values: dict[str, Any]
    # Key paths whose final value came from the environment (layers 3 and 4).
    from_env: set[Path_] = field(default_factory=set)
    source: str = "defaults"
    # The variable each environment-given key path came from (the last one wins).
    env_vars: dict[Path_, str] = field(default_factory=dict)

    def origin(self, path: Path_) -> str | None:
        """The variable that set ``path`` (or a value around or inside it), else None."""
        for env_path, name in sorted(self.env_vars.items(), key=lambda i: -len(i[0])):
            if path and (path[: len(env_path)] == env_path or env_path[: len(path)] == path):
                return name
        return None


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
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InputError(path, [f"cannot read file: {reason}"]) from None
    try:
        doc = load_yaml_text(text)
    except YamlRefused as exc:
        raise InputError(path, [str(exc)]) from None
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


def json_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    """The ``HYOPS_INPUTS_JSON`` object ({} when unset)."""
    raw = environ.get(ENV_JSON, "")
    if not raw.strip():
        return {}
    try:
        layer = load_json_text(raw)
    except YamlRefused as exc:
        raise InputError(ENV_JSON, [str(exc)]) from None
    except json.JSONDecodeError as exc:
        raise InputError(ENV_JSON, [f"not valid JSON: {exc.msg} at char {exc.pos}"]) from None
    if not isinstance(layer, dict):
        raise InputError(ENV_JSON, [f"must be a JSON object, got {_kind(layer)}"])
    return layer


def env_overrides(environ: Mapping[str, str]) -> list[tuple[str, Path_, Any]]:
    """(variable, key path, decoded value) of each ``HYOPS_INPUT_*``, shallow ones first so
    that a deeper override set in the same run wins."""
    out = []
    for name in sorted(k for k in environ if k.startswith(ENV_PREFIX)):
        parts = tuple(name[len(ENV_PREFIX) :].lower().split("__"))
        if not all(parts):
            raise InputError(name, ["empty path segment (use __ only between names)"])
        if len(parts) > MAX_DEPTH:
            raise InputError(name, [f"the path is {TOO_DEEP}"])
        try:
            value = _decode(environ[name], len(parts))
        except YamlRefused as exc:
            raise InputError(name, [str(exc)]) from None
        out.append((name, parts, value))
    return sorted(out, key=lambda item: len(item[1]))


def set_path(values: dict[str, Any], name: str, parts: Path_, value: Any) -> None:
    """Set ``values[a][b]...`` = value; a numeric segment indexes an existing list (so a
    secret inside a list can be given back), a missing mapping level is created."""
    node: Any = values
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise InputError(
                    name, [f"inputs.{where}: no list item {part} (the list has {len(node)})"]
                )
            index = int(part)
            if last:
                node[index] = merge(node[index], value)
            else:
                node = node[index]
            continue
        if not isinstance(node, dict):
            raise InputError(
                name, [f"inputs.{'.'.join(parts[:depth])}: is {_kind(node)}, cannot hold {part}"]
            )
        if last:
            node[part] = merge(node[part], value) if part in node else copy.deepcopy(value)
        else:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]


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
    env_vars: dict[Path_, str] = {}
    layer = json_layer(environ)
    if layer:
        values = merge(values, layer)
        from_env |= _leaf_paths(layer)
        env_vars.update(dict.fromkeys(_leaf_paths(layer), ENV_JSON))
    for name, parts, value in env_overrides(environ):
        set_path(values, name, parts, value)
        from_env |= _leaf_paths(value, parts)
        env_vars.update(dict.fromkeys(_leaf_paths(value, parts), name))
    return ResolvedInputs(values=values, from_env=from_env, source=source, env_vars=env_vars)


def _decode(text: str, depth_used: int) -> Any:
    """The JSON value of ``text``, or the text itself; YamlRefused when over the budget."""
    try:
        return load_json_text(text, depth_used)
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
