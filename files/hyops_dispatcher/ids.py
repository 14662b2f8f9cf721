"""UTC time stamps and identifiers: ISO 8601 parsing, compact stamps, the decision hash and
the dispatch id derived from a decision (never from "now" or randomness).

Invariant: pure (only `now_iso` reads the clock; the bounded memos change no
answer); the same decision always gives the same dispatch id; imports nothing of the
package.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from typing import Any, Optional

# sha256 without hashlib: hashlib loads OpenSSL (about 4 MB of resident memory in a
# daemon that needs one hash); the built-in module is _sha2 from 3.12 on, _sha256 before.
try:
    from _sha2 import sha256
except ImportError:  # Python < 3.12
    try:
        from _sha256 import sha256
    except ImportError:  # a build without it
        from hashlib import sha256

DISPATCH_ID_RE = re.compile(r"^dispatch-\d{8}T\d{6}Z-[a-z0-9][a-z0-9_-]{0,62}-[0-9a-f]{8}$")
ID_TS_RE = re.compile(r"^decision-(\d{8}T\d{6}Z)-")
ISO_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?"
    r"(Z|z|[+-]\d{2}:?\d{2})?$"
)


# Small memos of the texts parsed and the epochs formatted, with their answers: a pass
# stamps every request with the same "now" (and the same expiry), and each request's
# stamps are read back for the approvals table. Bounded: emptied when MEMO_MAX is reached.
MEMO_MAX = 16
_PARSED: dict = {}
_FORMATTED: dict = {}
_COMPACT: dict = {}


def parse_iso_utc(text: Any) -> Optional[float]:
    """Epoch seconds of an ISO 8601 timestamp (naive means UTC); None when unparsable."""
    if not isinstance(text, str):
        return None
    try:
        return _PARSED[text]
    except KeyError:
        pass
    epoch = _parse_iso_utc(text)
    if len(_PARSED) >= MEMO_MAX:
        _PARSED.clear()
    _PARSED[text] = epoch
    return epoch


def _parse_iso_utc(text: str) -> Optional[float]:
    m = ISO_RE.match(text.strip())
    if not m:
        return None
    year, month, day, hour, minute, sec, frac, tz = m.groups()
    try:
        dt = datetime(int(year), int(month), int(day), int(hour), int(minute), int(sec))
    except ValueError:
        return None
    epoch = dt.replace(tzinfo=timezone.utc).timestamp()
    if frac:
        epoch += int(frac) / (10 ** len(frac))
    if tz and tz not in ("Z", "z"):
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        epoch -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    if not EPOCH_MIN <= epoch <= EPOCH_MAX:
        return None  # its offset moved it out of years 1-9999: no id can carry it
    return epoch


# The instants a dispatch id (and datetime) can name: years 1 to 9999, UTC.
EPOCH_MIN = datetime(1, 1, 1, tzinfo=timezone.utc).timestamp()
EPOCH_MAX = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp()


def compact_ts(epoch: float) -> str:
    # Not strftime: glibc's %Y does not pad years before 1000 to four digits.
    t = datetime.fromtimestamp(int(epoch), tz=timezone.utc)
    return f"{t.year:04d}{t.month:02d}{t.day:02d}T{t.hour:02d}{t.minute:02d}{t.second:02d}Z"


def iso_ts(epoch: float) -> str:
    try:
        return _FORMATTED[epoch]
    except KeyError:
        pass
    text = datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat()
    if len(_FORMATTED) >= MEMO_MAX:
        _FORMATTED.clear()
    _FORMATTED[epoch] = text
    return text


def compact_to_epoch(text: str) -> float:
    """Epoch of a compact stamp YYYYMMDDTHHMMSSZ (ValueError when it names no instant)."""
    try:
        return _COMPACT[text]
    except KeyError:
        pass
    if len(text) != 16 or text[8] != "T" or text[15] != "Z" or not text[:8].isdigit():
        raise ValueError(f"not a compact stamp: {text!r}")
    if not text[9:15].isdigit():
        raise ValueError(f"not a compact stamp: {text!r}")
    dt = datetime(
        int(text[0:4]),
        int(text[4:6]),
        int(text[6:8]),
        int(text[9:11]),
        int(text[11:13]),
        int(text[13:15]),
        tzinfo=timezone.utc,
    )
    epoch = dt.timestamp()
    if len(_COMPACT) >= MEMO_MAX:
        _COMPACT.clear()
    _COMPACT[text] = epoch
    return epoch


def dispatch_id_epoch(dispatch_id: Any) -> Optional[float]:
    """The time a dispatch id names; None when it is not a dispatch id (the pattern, and a
    real date: dispatch-20261399T... matches the pattern but names no day)."""
    if not isinstance(dispatch_id, str) or not DISPATCH_ID_RE.match(dispatch_id):
        return None
    try:
        return compact_to_epoch(dispatch_id.split("-")[1])
    except ValueError:
        return None


def decision_hash(decision_id: str) -> str:
    return sha256(decision_id.encode("utf-8")).hexdigest()[:8]


def make_dispatch_id(epoch: float, decision_type: str, decision_id: str) -> str:
    return f"dispatch-{compact_ts(epoch)}-{decision_type}-{decision_hash(decision_id)}"


def now_iso() -> str:
    # Not through iso_ts's memo: a clock reading is never asked for twice.
    return datetime.fromtimestamp(time.time(), tz=timezone.utc).isoformat()
