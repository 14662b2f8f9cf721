"""Decision records: parsing (strict JSON, depth and size caps), validation (the fields
that can be relied on), the decision time, and the names files have in the records folder
and in the ledger.

Invariant: pure; a record is either a ValidRecord or a RecordRejected with a reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from typing import NamedTuple, Tuple

from .ids import ID_TS_RE, compact_to_epoch, parse_iso_utc
from .jsontext import json_depth, json_kind, reject_constant, short
from .states import HANDOFF_PREFIX

# decision_id ends up in logs, CLI arguments and the ledger; refuse anything a shell or a
# path could misread (separators, whitespace, control characters, leading dot or dash).
DECISION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")

# A decision may claim a time at most this far ahead of the daemon's clock (clock skew
# between hosts); later ones are refused: a 2100 dispatch id could never become stale.
FUTURE_SKEW_SECONDS = 300

# Records nested deeper than this are refused before parsing, on every Python version
# (3.9-3.11's parser gives up near 1000 levels, 3.12's writer near 1000, 3.13 far later).
RECORD_DEPTH_MAX = 256

# A request (the document, with the record's carried `checks`) is at most this deep;
# deeper parts of carried fields are replaced by DEPTH_CUT.
REQUEST_DEPTH_MAX = 64


class RecordRejected(Exception):
    """A record file cannot be a decision; `reason` is one line for a person."""

    def __init__(self, reason: str, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        # True when the file may still be being written (it is retried until it settles).
        self.retryable = retryable


def parse_record(data: bytes) -> dict:
    """Bytes of a record file -> the JSON object; RecordRejected(retryable) if not JSON."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RecordRejected(f"not UTF-8 text ({exc.reason} at byte {exc.start})", True) from None
    if not text.strip():
        raise RecordRejected("empty file", True)
    # Fewer opening brackets than the cap cannot nest deeper (the common case: no scan).
    opening = text.count("[") + text.count("{")
    depth = json_depth(text) if opening > RECORD_DEPTH_MAX else opening
    if depth > RECORD_DEPTH_MAX:
        # Refused before the parser sees it: the same verdict on every Python version.
        raise RecordRejected(f"JSON nested {depth} levels deep, over {RECORD_DEPTH_MAX}")
    try:
        obj = json.loads(text, parse_constant=reject_constant)
    except RecursionError:
        raise RecordRejected("invalid JSON: nested too deeply") from None
    except ValueError as exc:
        raise RecordRejected(f"invalid JSON: {exc}", True) from None
    if not isinstance(obj, dict):
        raise RecordRejected(f"JSON is {json_kind(obj)}, not an object")
    return obj


def validate_record(obj: dict) -> Tuple[str, str]:
    """Return (decision_id, decision_type) or raise RecordRejected."""
    if "decision_id" not in obj:
        raise RecordRejected("missing decision_id")
    decision_id = obj["decision_id"]
    if not isinstance(decision_id, str):
        raise RecordRejected(f"decision_id must be a string; got {short(decision_id)}")
    if not DECISION_ID_RE.match(decision_id):
        raise RecordRejected(
            f"unsafe decision_id {short(decision_id)}: use letters, digits and ._- "
            "(first a letter or digit, at most 128 characters)"
        )
    if "decision_type" not in obj:
        raise RecordRejected("missing decision_type")
    decision_type = obj["decision_type"]
    if not isinstance(decision_type, str) or not decision_type:
        raise RecordRejected(
            f"decision_type must be a non-empty string; got {short(decision_type)}"
        )
    return decision_id, decision_type


def decision_time(record: dict, decision_id: str, mtime: float) -> Tuple[float, str]:
    """When the decision was made, and where that came from (timestamp_utc, id, mtime)."""
    epoch = parse_iso_utc(record.get("timestamp_utc"))
    if epoch is not None:
        return epoch, "timestamp_utc"
    m = ID_TS_RE.match(decision_id)
    if m:
        with contextlib.suppress(ValueError):
            return compact_to_epoch(m.group(1)), "decision_id"
    return mtime, "file_mtime"


class ValidRecord(NamedTuple):
    """A record file's JSON object that passed validate_record (done once per read)."""

    doc: dict
    decision_id: str
    decision_type: str


def read_valid_record(data: bytes) -> ValidRecord:
    """Bytes of a record file -> a ValidRecord, or RecordRejected (parse, then validate)."""
    doc = parse_record(data)
    decision_id, decision_type = validate_record(doc)
    return ValidRecord(doc, decision_id, decision_type)


def is_handoff(decision_id: str) -> bool:
    return decision_id.startswith(HANDOFF_PREFIX)


def ledger_name(name: str) -> str:
    """The file name as the ledger stores it: names that are not valid UTF-8 (surrogate
    escapes from os.fsdecode) are kept with backslash escapes instead of failing."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return name


def folder_name(spelled: str) -> str:
    """The name in the folder for a name as the ledger spells it (ledger_name undone)."""
    if "\\x" not in spelled:
        return spelled
    raw = re.sub(
        rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m.group(1), 16)]), spelled.encode("utf-8")
    )
    return os.fsdecode(raw)


def is_record_name(name: str) -> bool:
    # Dot files are writers' temp files by convention (ours and the decision service's).
    return name.endswith(".json") and not name.startswith(".")
