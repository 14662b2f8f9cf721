"""Strict JSON in and out: parsing that refuses NaN/Infinity, the depth of a JSON text
measured before parsing, cutting a carried value to a depth, and the canonical bytes of
a document the daemon writes.

Invariant: pure functions of their arguments; imports nothing of the package.
"""

from __future__ import annotations

import json
import re
from typing import Any

DEPTH_CUT = "(cut: nested deeper than the request allows)"


def short(value: Any, limit: int = 80) -> str:
    """repr() of a value cut to `limit` characters, for reasons and errors."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def reject_constant(name: str) -> Any:
    # NaN/Infinity are not JSON; letting them through would make our own output invalid.
    raise ValueError(f"{name} is not valid JSON")


JSON_STRING_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
NOT_BRACKET_RE = re.compile(r"[^\[\]{}]+")


def json_depth(text: str) -> int:
    """How deeply a JSON text nests arrays and objects (brackets in strings do not count),
    without parsing it: no recursion, so any depth is measured safely."""
    brackets = NOT_BRACKET_RE.sub("", JSON_STRING_RE.sub("", text))
    level = deepest = 0
    for char in brackets:
        if char in "[{":
            level += 1
            deepest = max(deepest, level)
        else:
            level -= 1
    return deepest


def cut_depth(value: Any, levels: int) -> Any:
    """`value` with whatever lies deeper than `levels` levels of arrays/objects replaced
    by DEPTH_CUT (a carried field must not make the request too deep to write or read)."""
    if not isinstance(value, (list, dict)):
        return value
    if levels <= 0:
        return DEPTH_CUT
    if isinstance(value, list):
        return [cut_depth(v, levels - 1) for v in value]
    return {k: cut_depth(v, levels - 1) for k, v in value.items()}


def json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


# One encoder, built once: `indent` would switch json to its pure-Python encoder (about
# twice the cost of a request's whole write); without it the C encoder does the work.
_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=True, allow_nan=False)


def dump_json(obj: Any) -> bytes:
    """The canonical bytes of a document the daemon writes: one line of JSON, keys sorted,
    ", " and ": " between items, a newline at the end; ASCII so a lone surrogate from a
    record cannot break it. (`jq .` or `python3 -m json.tool` shows it indented.)"""
    return (_CANONICAL.encode(obj) + "\n").encode("ascii")
