"""JSON text helpers: depth without parsing, dumps that survive lone surrogates."""

from __future__ import annotations

import json

import pytest
from hyops_dispatcher.jsontext import dump_json, json_depth


@pytest.mark.parametrize(
    ("text", "depth"),
    [("{}", 1), ('{"a": "[[[{{{"}', 1), ('[[], [[["\\"]]]]', 4), ('"]]"', 0), ("1", 0)],
)
def test_json_depth_ignores_brackets_in_strings(text: str, depth: int) -> None:
    assert json_depth(text) == depth


def test_dump_json_survives_lone_surrogates_and_refuses_nan() -> None:
    out = dump_json({"rationale": "\ud800"})
    assert json.loads(out) == {"rationale": "\ud800"}
    with pytest.raises(ValueError):
        dump_json({"x": float("nan")})
