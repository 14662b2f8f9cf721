"""Time parsing and dispatch ids: derived from the decision, stable, distinct."""

from __future__ import annotations

from typing import Any

import pytest
from hyops_dispatcher.ids import DISPATCH_ID_RE, decision_hash, make_dispatch_id, parse_iso_utc
from hyops_dispatcher.record import decision_time

from .pure import NOW

ISO_CASES = [
    ("2026-03-20T10:15:00+00:00", 1774001700.0),
    ("2026-03-20T10:15:00Z", 1774001700.0),
    ("2026-03-20T10:15:00", 1774001700.0),
    ("2026-03-20T12:15:00+02:00", 1774001700.0),
    ("2026-03-20T10:15:00.5+00:00", 1774001700.5),
    ("2026-03-20T10:15:00.123456789Z", 1774001700.123456789),
    ("2026-02-30T10:15:00Z", None),
    ("yesterday", None),
    (1774001700, None),
    (None, None),
]


@pytest.mark.parametrize(("text", "epoch"), ISO_CASES)
def test_parse_iso_utc(text: Any, epoch: float | None) -> None:
    got = parse_iso_utc(text)
    if epoch is None:
        assert got is None
    else:
        assert got == pytest.approx(epoch)


DISPATCH_ID_CASES = [
    # (record, mtime, expected timestamp part, source)
    ({"timestamp_utc": "2026-03-20T10:15:00+00:00"}, NOW, "20260320T101500Z", "timestamp_utc"),
    ({}, NOW, "20260921T141320Z", "file_mtime"),
    ({"timestamp_utc": "garbage"}, NOW, "20260921T141320Z", "file_mtime"),
]


@pytest.mark.parametrize(("extra", "mtime", "ts", "source"), DISPATCH_ID_CASES)
def test_dispatch_id_derivation(extra: dict[str, Any], mtime: float, ts: str, source: str) -> None:
    rec = {"decision_id": "test-cutover-001", "decision_type": "cutover", **extra}
    epoch, src = decision_time(rec, "test-cutover-001", mtime)
    assert src == source
    dispatch_id = make_dispatch_id(epoch, "cutover", "test-cutover-001")
    assert dispatch_id == f"dispatch-{ts}-cutover-{decision_hash('test-cutover-001')}"
    assert DISPATCH_ID_RE.match(dispatch_id)


def test_dispatch_id_from_decision_id_timestamp() -> None:
    did = "decision-20260320T101500Z-cutover-0c1d2e3f"
    epoch, src = decision_time({}, did, NOW)
    assert src == "decision_id"
    assert make_dispatch_id(epoch, "cutover", did).startswith("dispatch-20260320T101500Z-cutover-")


def test_dispatch_id_is_stable_and_distinct() -> None:
    a = make_dispatch_id(NOW, "cutover", "a")
    assert a == make_dispatch_id(NOW, "cutover", "a")
    assert a != make_dispatch_id(NOW, "cutover", "b")
