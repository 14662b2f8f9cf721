"""Reading a decision record: bytes to object, the fields a record must have, record names."""

from __future__ import annotations

from typing import Any

import pytest
from hyops_dispatcher.record import RecordRejected, is_record_name, parse_record, validate_record

RECORD_REJECTS = [
    (b"", "empty file", True),
    (b'{"decision_id": "a"', "invalid JSON", True),
    (b"\xff\xfe{}", "not UTF-8", True),
    (b"[1, 2]", "JSON is an array, not an object", False),
    (b'"text"', "JSON is a string", False),
    (b"42", "JSON is a number", False),
    (b"null", "JSON is null", False),
    (b'{"decision_id": NaN}', "invalid JSON", True),
    (b"[" * 100000 + b"]" * 100000, "", None),
]


@pytest.mark.parametrize(("data", "reason", "retryable"), RECORD_REJECTS)
def test_parse_record_rejects(data: bytes, reason: str, retryable: bool | None) -> None:
    with pytest.raises(RecordRejected) as err:
        parse_record(data)
    assert reason in err.value.reason
    if retryable is not None:
        assert err.value.retryable is retryable


def test_parse_record_accepts_bom_and_whitespace() -> None:
    assert parse_record(b'\xef\xbb\xbf {"a": 1}\n') == {"a": 1}


VALIDATE_REJECTS = [
    ({}, "missing decision_id"),
    ({"decision_id": 7, "decision_type": "cutover"}, "decision_id must be a string"),
    ({"decision_id": "../etc/passwd", "decision_type": "cutover"}, "unsafe decision_id"),
    ({"decision_id": "a b", "decision_type": "cutover"}, "unsafe decision_id"),
    ({"decision_id": "-rf", "decision_type": "cutover"}, "unsafe decision_id"),
    ({"decision_id": "x" * 129, "decision_type": "cutover"}, "unsafe decision_id"),
    ({"decision_id": "ok\n", "decision_type": "cutover"}, "unsafe decision_id"),
    ({"decision_id": "ok"}, "missing decision_type"),
    ({"decision_id": "ok", "decision_type": ""}, "decision_type must be a non-empty string"),
    ({"decision_id": "ok", "decision_type": ["cutover"]}, "decision_type must be"),
]


@pytest.mark.parametrize(("doc", "reason"), VALIDATE_REJECTS)
def test_validate_record_rejects(doc: dict[str, Any], reason: str) -> None:
    with pytest.raises(RecordRejected) as err:
        validate_record(doc)
    assert reason in err.value.reason
    assert not err.value.retryable


@pytest.mark.parametrize(
    ("name", "is_record"),
    [
        ("a.json", True),
        (".a.json.tmp", False),
        (".a.json", False),
        ("a.json.tmp", False),
        ("a.JSON", False),
        ("dispatch.json", True),
    ],
)
def test_record_names(name: str, is_record: bool) -> None:
    assert is_record_name(name) is is_record
