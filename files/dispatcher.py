#!/usr/bin/env python3
"""hyops decision dispatcher: turns decision records into approval-gated dispatch requests.

It reads `<records_dir>/*.json` (written by the decision service) and writes one request
file per decision into `<root>/state/requests/`. It never executes anything
(execution_mode is always `record-only`).

Invariants (the reasons behind most of the code below):
- Exactly once per decision_id. The dispatch id is derived from the record, never from
  "now" or randomness; a request file is written temp + fsync + rename + folder fsync
  BEFORE the ledger row that says it was handled, and on start the requests folder is
  reconciled into the ledger, so a crash at any point can neither lose nor duplicate.
- Never silent, never stuck: every `*.json` file in the records folder gets an outcome
  (emitted, coalesced, stale, skipped, duplicate, unrouted, rejected, pending) with a
  reason, in the ledger, the log, the counters and `list`. Bad input never stops the loop;
  a rejected or pending file is looked at again when it changes.
- Bounded cost: an idle pass only stats the records folder (and the few files still
  pending or rejected); already handled files are never re-read. state.json is small.

Parts, in file order (each section is headed by a ==== banner):
- Pure core, no I/O: config parsing (the bounds of schemas/dispatcher-config.schema.json),
  record parsing and validation (ValidRecord), routing, dispatch ids, `decide`, the
  request document; then the file verdicts: FileSig, KnownFile, Outcome, `judge_file`
  (stat alone), `judge_unreadable` (pending or rejected), `judge_prior` (already handled,
  duplicate), `judge_collision` (dispatch id taken), `judge_replay`.
- Shell: durable writes (StagedWrites: close before rename), JsonLog, Ledger (SQLite:
  the decisions AND the index of handled files), Inotify, Notifier (sd_notify), lock.
- The daemon, one class per job: `judge_record_file` (read -> judge -> decide, shared by
  the daemon and `explain`), FileIndex (what is known per file, kept in the ledger),
  Watcher (which names need a look), Batch (the one write path: requests, then ledger;
  and adopting requests the ledger lacks after a crash),
  `judge_health` and StateReport (counters, log, state.json), ReplayInbox (operator
  replays asked of the running daemon), Daemon (the loop that wires them).
- CLI: run, once, check-config, status, list, explain, replay, validate-handoff.
Python 3.9+ standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import json
import os
import re
import select
import signal
import socket
import sqlite3
import stat
import struct
import sys
import time
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple

# sha256 without hashlib: hashlib loads OpenSSL (about 4 MB of resident memory in a
# daemon that needs one hash); the built-in module is _sha2 from 3.12 on, _sha256 before.
try:
    from _sha2 import sha256
except ImportError:  # Python < 3.12
    try:
        from _sha256 import sha256
    except ImportError:  # a build without it
        from hashlib import sha256

# --------------------------------------------------------------------------------------
# Exit codes (docs/INTERFACES.md). The unit has RestartPreventExitStatus=3.
EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_LOCKED = 4
EXIT_HANDOFF = 5

DEFAULT_CONFIG_PATH = "/opt/hybridops/decision-dispatcher/config/config.json"
# The decision consumer's approval markers, <dispatch_id>.approved.json (CONTRACT.md 3).
DEFAULT_APPROVALS_DIR = "/opt/hybridops/decision-consumer/state/approvals"
EXECUTION_MODE = "record-only"
SCHEMA_VERSION = 1
VERSION = "0.1.0"

OUTCOMES = (
    "emitted",
    "coalesced",
    "stale",
    "skipped",
    "duplicate",
    "unrouted",
    "rejected",
    "pending",
)
# Outcomes whose decision already owns a request: a second file with the same
# decision_id must never produce another one.
DISPATCHED_OUTCOMES = ("emitted", "coalesced")
# Files with these outcomes are re-stat'ed on every pass so a change is noticed even
# without inotify.
WATCHED_OUTCOMES = ("pending", "rejected")

EXECUTION_PLANES = (
    "runner-local",
    "private-overlay",
    "bastion-explicit",
    "gcp-iap",
    "public-ephemeral",
    "workstation-direct",
)
TARGET_KINDS = ("blueprint", "module")
LOG_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40}
TYPE_TOKEN_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}\Z")
TARGET_REF_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._/@-]*[a-z0-9])?\Z")
# decision_id ends up in logs, CLI arguments and the ledger; refuse anything a shell or a
# path could misread (separators, whitespace, control characters, leading dot or dash).
DECISION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
TARGET_ENV_RE = re.compile(r"^\S(?:.*\S)?\Z")
DISPATCH_ID_RE = re.compile(r"^dispatch-\d{8}T\d{6}Z-[a-z0-9][a-z0-9_-]{0,62}-[0-9a-f]{8}$")
ID_TS_RE = re.compile(r"^decision-(\d{8}T\d{6}Z)-")
ISO_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?"
    r"(Z|z|[+-]\d{2}:?\d{2})?$"
)
HANDOFF_PREFIX = "handoff-check-"
# Full stat scan of the records folder as a belt-and-braces check for in-place edits of
# already handled files that no inotify event reported.
FULL_SCAN_SECONDS = 3600.0
# A ledger that is locked or cannot be opened (not corrupt) is tried again for this long
# (pauses 0.25 s doubling to 4 s, the watchdog fed) before the start fails.
LEDGER_OPEN_WAIT = 15.0
# After a failed write (disk full...) the daemon retries in-process, pausing up to this.
WRITE_RETRY_MAX = 60.0
# Ledger rows are committed at least every this many records during a burst.
BATCH_MAX = 1024
# From this many staged requests on, one syncfs() replaces the per-file fsyncs.
SYNCFS_MIN_BATCH = 8
# inotify: after a wake-up keep collecting events while they keep coming (a burst
# becomes one batch), for at most this long.
EVENT_GATHER_GAP = 0.002
EVENT_GATHER_MAX = 0.1
# state.json is rewritten at most this often while records keep arriving.
STATE_MIN_INTERVAL = 0.5
# A decision may claim a time at most this far ahead of the daemon's clock (clock skew
# between hosts); later ones are refused: a 2100 dispatch id could never become stale.
FUTURE_SKEW_SECONDS = 300
# Records nested deeper than this are refused before parsing, on every Python version
# (3.9-3.11's parser gives up near 1000 levels, 3.12's writer near 1000, 3.13 far later).
RECORD_DEPTH_MAX = 256
# A request (the document, with the record's carried `checks`) is at most this deep;
# deeper parts of carried fields are replaced by DEPTH_CUT.
REQUEST_DEPTH_MAX = 64
DEPTH_CUT = "(cut: nested deeper than the request allows)"
# Config path keys (schemas/common.schema.json safe_path): safe in a unit file, an INI
# inventory and a shell line.
SAFE_PATH_RE = re.compile(r"^/[A-Za-z0-9._/@+-]+\Z")

CONFIG_KEYS = {
    "schema_version",
    "root",
    "decision_records_dir",
    "execution_mode",
    "require_approval",
    "poll_seconds",
    "heartbeat_seconds",
    "log_level",
    "max_record_age_seconds",
    "max_record_bytes",
    "settle_seconds",
    "ledger_retention_seconds",
    "log_max_bytes",
    "log_backup_count",
    "routes",
    "requests_dir",
    "state_file",
    "ledger_file",
    "log_file",
    "approvals_dir",
    "metrics_textfile",
}
# Required as in schemas/dispatcher-config.schema.json, except `root`: without it the root
# is the folder above config/.
CONFIG_REQUIRED = (
    "schema_version",
    "decision_records_dir",
    "execution_mode",
    "require_approval",
    "poll_seconds",
    "routes",
)
ROUTE_KEYS = {
    "target_kind",
    "target_ref",
    "target_env",
    "execution_plane",
    "requires_approval",
    "coalesce_seconds",
    "approval_ttl_seconds",
}


# ======================================================================================
# Pure core: no I/O below this line until the shell section.
# ======================================================================================


class ConfigError(Exception):
    """The config is unusable; the message names the file and key."""


class RecordRejected(Exception):
    """A record file cannot be a decision; `reason` is one line for a person."""

    def __init__(self, reason: str, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        # True when the file may still be being written (it is retried until it settles).
        self.retryable = retryable


class Route(NamedTuple):
    key: str
    target_kind: str
    target_ref: str
    target_env: str
    execution_plane: str
    requires_approval: Optional[bool] = None
    coalesce_seconds: int = 0
    approval_ttl_seconds: Optional[int] = None


class Config(NamedTuple):
    path: str
    digest: str
    root: str
    records_dir: str
    requests_dir: str
    state_file: str
    ledger_file: str
    log_file: str
    lock_file: str
    require_approval: bool
    poll_seconds: float
    heartbeat_seconds: float
    log_level: str
    max_record_age_seconds: float
    max_record_bytes: int
    settle_seconds: float
    ledger_retention_seconds: float
    log_max_bytes: int
    log_backup_count: int
    routes: Dict[str, Route]
    # The consumer's approval markers (read only) and the Prometheus textfile (issue 10).
    approvals_dir: str
    metrics_textfile: str

    def paths(self) -> Tuple[str, ...]:
        return (
            self.root,
            self.records_dir,
            self.requests_dir,
            self.state_file,
            self.ledger_file,
            self.log_file,
        )


def short(value: Any, limit: int = 80) -> str:
    """repr() of a value cut to `limit` characters, for reasons and errors."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _integer(
    obj: dict, key: str, default: Optional[int], minimum: int, maximum: Optional[int] = None
) -> int:
    """An integer key within [minimum, maximum] (the bounds of dispatcher-config.schema.json;
    tests/daemon/test_config_schema.py proves they agree). `default` None: required."""
    value = obj[key] if default is None else obj.get(key, default)
    bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
    if not _is_int(value) or value < minimum or (maximum is not None and value > maximum):
        raise ConfigError(f"{key}: must be an integer {bounds}; got {short(value)}")
    return value


def _path(obj: dict, key: str, default: Optional[str]) -> str:
    value = obj[key] if default is None else obj.get(key, default)
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigError(f"{key}: must be an absolute path; got {short(value)}")
    if not SAFE_PATH_RE.match(value):
        raise ConfigError(
            f"{key}: must be an absolute path of letters, digits and ._/@+- only "
            f"(no space, quote, '%' or '$'); got {short(value)}"
        )
    return os.path.normpath(value)


def _inside(path: str, folder: str) -> bool:
    """`path` is `folder` or anything below it (both normalised absolute paths)."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def parse_route(key: Any, value: Any) -> Route:
    where = f"routes.{key}"
    if not isinstance(key, str) or not TYPE_TOKEN_RE.match(key):
        raise ConfigError(
            f"routes: key {short(key)} must be a decision type token like 'cutover' "
            "(lowercase a-z0-9, '_' or '-', at most 63 characters)"
        )
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be an object; got {short(value)}")
    unknown = sorted(set(value) - ROUTE_KEYS)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (allowed: {sorted(ROUTE_KEYS)})")
    for name in ("target_kind", "target_ref", "target_env", "execution_plane"):
        if name not in value:
            raise ConfigError(f"{where}.{name}: required")
        if not isinstance(value[name], str) or not value[name]:
            raise ConfigError(f"{where}.{name}: must be a non-empty string")
    if value["target_kind"] not in TARGET_KINDS:
        raise ConfigError(
            f"{where}.target_kind: must be one of {list(TARGET_KINDS)}; "
            f"got {short(value['target_kind'])}"
        )
    if not TARGET_REF_RE.match(value["target_ref"]) or len(value["target_ref"]) > 200:
        raise ConfigError(
            f"{where}.target_ref: must be lowercase, [a-z0-9] at both ends and "
            f"[a-z0-9._/@-] inside; got {short(value['target_ref'])}"
        )
    if not TARGET_ENV_RE.match(value["target_env"]):
        raise ConfigError(
            f"{where}.target_env: must be one line without surrounding blanks; "
            f"got {short(value['target_env'])}"
        )
    if value["execution_plane"] not in EXECUTION_PLANES:
        raise ConfigError(
            f"{where}.execution_plane: must be one of {list(EXECUTION_PLANES)}; "
            f"got {short(value['execution_plane'])}"
        )
    requires = value.get("requires_approval")
    if "requires_approval" in value and not isinstance(requires, bool):
        # null or "false" must never silently mean "no approval" (CONTRACT.md 5).
        raise ConfigError(
            f"{where}.requires_approval: must be true or false; got {short(requires)}"
        )
    coalesce = value.get("coalesce_seconds", 0)
    if not _is_int(coalesce) or not 0 <= coalesce <= 604800:
        raise ConfigError(
            f"{where}.coalesce_seconds: must be an integer from 0 to 604800; got {short(coalesce)}"
        )
    ttl = value.get("approval_ttl_seconds")
    if "approval_ttl_seconds" in value and (not _is_int(ttl) or not 60 <= ttl <= 2592000):
        raise ConfigError(
            f"{where}.approval_ttl_seconds: must be an integer from 60 to 2592000; got {short(ttl)}"
        )
    return Route(
        key=key,
        target_kind=value["target_kind"],
        target_ref=value["target_ref"],
        target_env=value["target_env"],
        execution_plane=value["execution_plane"],
        requires_approval=requires,
        coalesce_seconds=coalesce,
        approval_ttl_seconds=ttl,
    )


def parse_config(raw: bytes, config_path: str) -> Config:
    """Validate config bytes; raise ConfigError naming the key. No I/O."""
    config_path = os.path.abspath(config_path)
    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"must be a JSON object; got {type(obj).__name__}")
    unknown = sorted(set(obj) - CONFIG_KEYS)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown key")
    for key in CONFIG_REQUIRED:
        if key not in obj:
            raise ConfigError(f"{key}: required")
    # Required keys are checked above: no defaults for them below.
    if obj["schema_version"] != SCHEMA_VERSION:
        raise ConfigError(
            f"schema_version: must be {SCHEMA_VERSION}; got {short(obj['schema_version'])}"
        )
    mode = obj["execution_mode"]
    if mode != EXECUTION_MODE:
        raise ConfigError(f"execution_mode: only 'record-only' is supported; got {short(mode)}")
    require = obj["require_approval"]
    if not isinstance(require, bool):
        raise ConfigError(f"require_approval: must be true or false; got {short(require)}")
    level = obj.get("log_level", "INFO")
    if not isinstance(level, str) or level not in LOG_LEVELS:
        raise ConfigError(f"log_level: must be one of {list(LOG_LEVELS)}; got {short(level)}")
    routes_obj = obj["routes"]
    if not isinstance(routes_obj, dict):
        raise ConfigError(f"routes: must be an object; got {short(routes_obj)}")
    if not routes_obj:
        raise ConfigError("routes: needs at least one route (decision type -> target)")
    routes = {}
    for key, value in routes_obj.items():
        routes[key] = parse_route(key, value)

    # The root is the folder above config/ unless the config names it.
    default_root = os.path.dirname(os.path.dirname(config_path))
    root = _path(obj, "root", default_root)
    records_dir = _path(obj, "decision_records_dir", None)
    requests_dir = _path(obj, "requests_dir", os.path.join(root, "state", "requests"))
    state_file = _path(obj, "state_file", os.path.join(root, "state", "state.json"))
    ledger_file = _path(obj, "ledger_file", os.path.join(root, "state", "ledger.sqlite3"))
    log_file = _path(obj, "log_file", os.path.join(root, "logs", "dispatcher.log"))
    approvals_dir = _path(obj, "approvals_dir", DEFAULT_APPROVALS_DIR)
    metrics_textfile = _path(obj, "metrics_textfile", os.path.join(root, "state", "metrics.prom"))
    if not metrics_textfile.endswith(".prom"):
        # node_exporter's textfile collector reads *.prom only: any other name is never seen.
        raise ConfigError(f"metrics_textfile: must end in .prom; got {short(metrics_textfile)}")
    if os.path.normpath(records_dir) == os.path.normpath(requests_dir):
        raise ConfigError("requests_dir: must differ from decision_records_dir")
    # The daemon's own files never in a data folder: a consumer would take them for
    # requests, or the daemon would judge them as records.
    for key, own in (
        ("state_file", state_file),
        ("log_file", log_file),
        ("ledger_file", ledger_file),
    ):
        for folder_key, folder in (
            ("requests_dir", requests_dir),
            ("decision_records_dir", records_dir),
        ):
            if _inside(own, folder):
                raise ConfigError(f"{key}: must not be inside {folder_key} {folder}; got {own}")
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return Config(
        path=config_path,
        digest=sha256(canonical).hexdigest()[:16],
        root=root,
        records_dir=records_dir,
        requests_dir=requests_dir,
        state_file=state_file,
        ledger_file=ledger_file,
        log_file=log_file,
        lock_file=os.path.join(os.path.dirname(state_file), "dispatcher.lock"),
        require_approval=require,
        poll_seconds=_integer(obj, "poll_seconds", None, 5, 3600),
        heartbeat_seconds=_integer(obj, "heartbeat_seconds", 60, 5, 3600),
        log_level=level,
        max_record_age_seconds=_integer(obj, "max_record_age_seconds", 86400, 60),
        max_record_bytes=_integer(obj, "max_record_bytes", 1048576, 1024, 67108864),
        settle_seconds=_integer(obj, "settle_seconds", 2, 0, 300),
        ledger_retention_seconds=_integer(obj, "ledger_retention_seconds", 2592000, 0),
        log_max_bytes=_integer(obj, "log_max_bytes", 10485760, 65536),
        log_backup_count=_integer(obj, "log_backup_count", 5, 1, 100),
        routes=routes,
        approvals_dir=approvals_dir,
        metrics_textfile=metrics_textfile,
    )


def _reject_constant(name: str) -> Any:
    # NaN/Infinity are not JSON; letting them through would make our own output invalid.
    raise ValueError(f"{name} is not valid JSON")


def parse_iso_utc(text: Any) -> Optional[float]:
    """Epoch seconds of an ISO 8601 timestamp (naive means UTC); None when unparsable."""
    if not isinstance(text, str):
        return None
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
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat()


def compact_to_epoch(text: str) -> float:
    dt = datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    return dt.timestamp()


def decision_hash(decision_id: str) -> str:
    return sha256(decision_id.encode("utf-8")).hexdigest()[:8]


def parse_record(data: bytes) -> dict:
    """Bytes of a record file -> the JSON object; RecordRejected(retryable) if not JSON."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RecordRejected(f"not UTF-8 text ({exc.reason} at byte {exc.start})", True) from None
    if not text.strip():
        raise RecordRejected("empty file", True)
    depth = json_depth(text)
    if depth > RECORD_DEPTH_MAX:
        # Refused before the parser sees it: the same verdict on every Python version.
        raise RecordRejected(f"JSON nested {depth} levels deep, over {RECORD_DEPTH_MAX}")
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise RecordRejected("invalid JSON: nested too deeply") from None
    except ValueError as exc:
        raise RecordRejected(f"invalid JSON: {exc}", True) from None
    if not isinstance(obj, dict):
        raise RecordRejected(f"JSON is {_json_kind(obj)}, not an object")
    return obj


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


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


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


def make_dispatch_id(epoch: float, decision_type: str, decision_id: str) -> str:
    return f"dispatch-{compact_ts(epoch)}-{decision_type}-{decision_hash(decision_id)}"


def find_route(config: Config, decision_type: str) -> Tuple[Optional[Route], str]:
    """Exact, case-sensitive match; the reason names a near match (case) when there is one."""
    route = config.routes.get(decision_type)
    if route is not None:
        return route, ""
    near = [k for k in config.routes if k.lower() == decision_type.lower()]
    hint = f" (route {near[0]!r} differs only by case; matching is exact)" if near else ""
    known = ", ".join(sorted(config.routes)) or "none"
    return None, f"no route for decision_type {short(decision_type, 60)}{hint}; routes: {known}"


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


class LastEmit(NamedTuple):
    """A route's latest request, for coalescing and episodes."""

    epoch: float  # the decision's time
    dispatch_id: str


def episode_open(route: str, last_emit: Dict[str, LastEmit]) -> Optional[LastEmit]:
    """The request of the DR episode still open on `route`: its latest request, unless a
    request on any other route came at or after it (a failback after a cutover ends the
    outage). None: the next decision on `route` starts a new episode."""
    last = last_emit.get(route)
    if last is None:
        return None
    for other, emit in last_emit.items():
        if other != route and emit.epoch >= last.epoch:
            return None
    return last


def latest_other(route: str, last_emit: Dict[str, LastEmit]) -> Optional[LastEmit]:
    """The latest request on any route but `route` (the one a new request may supersede)."""
    others = [emit for other, emit in last_emit.items() if other != route]
    return max(others, default=None, key=lambda emit: emit.epoch)


class Decision(NamedTuple):
    """What the core decided about one valid record."""

    outcome: str
    reason: str
    decision_id: str
    decision_type: str
    decision_epoch: float
    route: Optional[str] = None
    dispatch_id: Optional[str] = None
    request: Optional[dict] = None


def is_handoff(decision_id: str) -> bool:
    return decision_id.startswith(HANDOFF_PREFIX)


def decide(
    record: Any,
    *,
    record_path: str,
    mtime: float,
    config: Config,
    now: float,
    last_emit: Dict[str, LastEmit],
    force: bool = False,
    awaits_approval: Optional[Callable[[str], bool]] = None,
) -> Decision:
    """Route one valid record (a ValidRecord, or a dict that is validated here). `last_emit`
    maps route -> LastEmit (each route's latest request), for coalescing within a DR
    episode. `awaits_approval(dispatch_id)` says whether an earlier request still waits
    for its approval (the new one then names it in `supersedes`). `force` (replay) skips
    the stale, skipped and coalesce rules but never the route or the future rule."""
    valid = (
        record if isinstance(record, ValidRecord) else ValidRecord(record, *validate_record(record))
    )
    doc, decision_id, decision_type = valid.doc, valid.decision_id, valid.decision_type
    epoch, source = decision_time(doc, decision_id, mtime)
    base = Decision("", "", decision_id, decision_type, epoch)
    ahead = epoch - now
    if source != "file_mtime" and ahead > FUTURE_SKEW_SECONDS:
        # A claimed time far ahead would give an id that never becomes stale.
        return base._replace(
            outcome="rejected",
            reason=f"decision time from {source} is {int(ahead)} s in the future "
            f"(more than the {FUTURE_SKEW_SECONDS} s clock skew allowed)",
        )
    status = doc.get("status")
    if not force and status == "queued-local-exec":
        return base._replace(
            outcome="skipped",
            reason="record status is queued-local-exec: the decision service already ran it",
        )
    route, why = find_route(config, decision_type)
    if route is None:
        return base._replace(outcome="unrouted", reason=why)
    base = base._replace(route=route.key)
    dispatch_id = make_dispatch_id(epoch, decision_type, decision_id)
    age = now - epoch
    if not force and config.max_record_age_seconds > 0 and age > config.max_record_age_seconds:
        return base._replace(
            outcome="stale",
            reason=f"decision is {int(age)} s old, over max_record_age_seconds "
            f"{config.max_record_age_seconds:g}; use 'replay {decision_id}' to dispatch it",
        )
    # Coalescing folds re-emissions of ONE outage; never into an earlier episode's request.
    last = episode_open(route.key, last_emit)
    if (
        not force
        and route.coalesce_seconds > 0
        and last is not None
        and not is_handoff(decision_id)
        and abs(epoch - last.epoch) < route.coalesce_seconds
    ):
        return base._replace(
            outcome="coalesced",
            dispatch_id=last.dispatch_id,
            reason=f"within coalesce_seconds {route.coalesce_seconds} of {last.dispatch_id} "
            f"(route {route.key})",
        )
    older = None if force or is_handoff(decision_id) else latest_other(route.key, last_emit)
    supersedes = None
    if older is not None and awaits_approval is not None and awaits_approval(older.dispatch_id):
        supersedes = older.dispatch_id
    request = build_request(
        doc,
        decision_id=decision_id,
        decision_type=decision_type,
        dispatch_id=dispatch_id,
        record_path=record_path,
        route=route,
        config=config,
        now=now,
        supersedes=supersedes,
    )
    return base._replace(
        outcome="emitted",
        dispatch_id=dispatch_id,
        request=request,
        reason="replayed by operator" if force else "",
    )


# --------------------------------------------------------------------------------------
# File verdicts: everything the daemon decides about a record file, without I/O. The
# shell stats and reads; these say what that means (docs/DAEMON.md "How a record becomes
# a request"). tests/daemon/test_verdicts.py has a table row per outcome.


class FileSig(NamedTuple):
    """A file as stat() saw it. The first four fields are what the ledger keeps: a change
    in any of them means "look again" (an in-place edit, a chmod, a replaced file)."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    mode: int = 0  # file type bits (not kept in the ledger)

    @classmethod
    def of(cls, st: os.stat_result) -> FileSig:
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode)

    def key(self) -> Tuple[int, int, int, int]:
        return (self.size, self.mtime_ns, self.ctime_ns, self.inode)

    @property
    def mtime(self) -> float:
        return self.mtime_ns / 1e9


NO_SIG = FileSig(0, 0, 0, 0)


class KnownFile(NamedTuple):
    """What the index (the ledger) knows about one record file name."""

    sig: FileSig
    outcome: str
    decision_id: Optional[str] = None
    gone: bool = False  # the name went away once; a file under it now is new
    retry_at: float = 0.0  # pending: when to read it again


# The reason of a decision row adopted from the requests folder (not yet counted).
ADOPTED_REASON = "adopted from the requests folder"
COUNTED_REASON = "request found in the requests folder (recovered after a restart)"


class PriorDecision(NamedTuple):
    """The ledger's row for a decision_id (what happened to it before)."""

    decision_id: str
    outcome: str
    dispatch_id: Optional[str]
    route: Optional[str]
    decision_epoch: Optional[float]
    file: Optional[str]
    reason: Optional[str]
    handled_at: float


class Outcome(NamedTuple):
    """The verdict on one record file: what the ledger, log and counters get.

    `decision` is set when the decision row is (re)written too; `write` when its request
    file is still to be written. `log` False: seen before, nothing new to say."""

    outcome: str
    reason: str = ""
    decision_id: Optional[str] = None
    dispatch_id: Optional[str] = None
    route: Optional[str] = None
    decision: Optional[Decision] = None
    write: bool = False
    log: bool = True
    retry_at: float = 0.0
    source: str = "file"  # which rule decided: file, read, prior, decide, collision

    @classmethod
    def of_decision(cls, decision: Decision) -> Outcome:
        return cls(
            decision.outcome,
            decision.reason,
            decision.decision_id,
            decision.dispatch_id,
            decision.route,
            decision=decision,
            write=decision.outcome == "emitted",
            source="decide",
        )


SKIP = "skip"  # unchanged since it was handled: nothing to do
READ = "read"  # read the file, then judge what it holds
DECIDED = "decided"  # the stat alone decides (the outcome is in the verdict)


class FileVerdict(NamedTuple):
    action: str  # SKIP, READ or DECIDED
    outcome: Optional[Outcome] = None


def judge_file(
    sig: FileSig,
    name: str,
    config: Config,
    known: Optional[KnownFile],
    now: float,
    look_again: bool = False,
) -> FileVerdict:
    """What to do with a record file from its stat alone. `look_again` (explain) ignores
    that the file was handled before."""
    unchanged = known is not None and not known.gone and known.sig.key() == sig.key()
    # A pending file waits for its deadline, but never longer than a settle wait from now:
    # a deadline further away means the wall clock stepped back.
    waiting = known is not None and now < known.retry_at <= now + config.settle_seconds + 1
    if unchanged and not look_again and (known.outcome != "pending" or waiting):
        return FileVerdict(SKIP)
    if ledger_name(name) != name:
        return FileVerdict(DECIDED, Outcome("rejected", "file name is not valid UTF-8"))
    if stat.S_ISLNK(sig.mode):
        return FileVerdict(DECIDED, Outcome("rejected", "symlink (never followed)"))
    if not stat.S_ISREG(sig.mode):
        return FileVerdict(DECIDED, Outcome("rejected", "not a regular file"))
    if sig.size > config.max_record_bytes:
        reason = f"file is {sig.size} bytes, over max_record_bytes {config.max_record_bytes}"
        return FileVerdict(DECIDED, Outcome("rejected", reason))
    return FileVerdict(READ)


def judge_unreadable(
    problem: RecordRejected, sig: FileSig, known: Optional[KnownFile], config: Config, now: float
) -> Outcome:
    """A file that could not be read or is not a valid record: pending while it may still
    be being written (until settle_seconds after its last change), else rejected (a later
    change re-opens it)."""
    if known is not None and known.outcome == "pending" and known.sig.key() == sig.key():
        # Unchanged since: keep the first deadline (bounded, should the clock step back).
        settle_until = min(known.retry_at - 0.05, now + config.settle_seconds)
    else:
        # min(): a file stamped in the future (clock skew) must not stay pending forever.
        settle_until = min(sig.mtime, now) + config.settle_seconds
    if problem.retryable and now < settle_until:
        first = known is None or known.outcome != "pending"  # one line per file, not per write
        return Outcome(
            "pending",
            f"{problem.reason}; retrying until it settles",
            log=first,
            retry_at=settle_until + 0.05,
            source="read",
        )
    return Outcome("rejected", problem.reason, source="read")


def judge_prior(
    name: str, decision_id: str, prior: Optional[PriorDecision], known: Optional[KnownFile]
) -> Optional[Outcome]:
    """The prior-decision check: a decision that already owns a request never gets a
    second one. None: no prior request, go on to decide()."""
    if prior is None or prior.outcome not in DISPATCHED_OUTCOMES:
        return None
    if prior.file in (None, name):
        # Same file seen again: it keeps the decision's outcome. When the file row is
        # missing the request was adopted after a crash (or a lost ledger) and this is the
        # first time it is counted; when the row is there the file was only touched.
        # Counted once: when the decision row came from a request adopted after a crash,
        # this file is counted now (and the row says so, see Daemon.apply); otherwise it
        # was counted when it was decided, however often the file was rewritten since.
        touched = (known is not None and known.decision_id == decision_id) or (
            prior.reason != ADOPTED_REASON
        )
        reason = (
            f"already handled: {prior.outcome} as {prior.dispatch_id}"
            if touched
            else COUNTED_REASON
        )
        return Outcome(
            prior.outcome, reason, decision_id, prior.dispatch_id, log=not touched, source="prior"
        )
    return Outcome(
        "duplicate",
        f"decision_id already {prior.outcome} as {prior.dispatch_id} from {prior.file}; "
        "no new request",
        decision_id,
        prior.dispatch_id,
        source="prior",
    )


def seen_before(known: Optional[KnownFile], sig: FileSig, outcome: Outcome) -> Outcome:
    """The very same file (size, mtime, ctime, inode) back under its name after it was
    seen gone (a records folder moved away and back) with the outcome it had: not a new
    outcome to count or log."""
    same = known is not None and known.gone and known.sig.key() == sig.key()
    if same and known is not None and known.outcome == outcome.outcome and not outcome.write:
        return outcome._replace(log=False)
    return outcome


IN_THIS_BATCH = {"source_decision_id": "(a decision in the same batch)"}


def judge_collision(decision: Decision, existing: Optional[dict]) -> Outcome:
    """An emitted decision against the request file already at its dispatch id (None:
    the slot is free). Never overwrite a request: it may be another decision's, or being
    processed by the consumer."""
    outcome = Outcome.of_decision(decision)
    if existing is None:
        return outcome
    owner = existing.get("source_decision_id")
    if owner != decision.decision_id:
        return Outcome(
            "rejected",
            f"dispatch id {decision.dispatch_id} already used by decision {short(owner)}",
            source="collision",
        )
    return outcome._replace(
        reason="request already in the requests folder (recovered)",
        write=False,
        source="collision",
    )


def judge_replay(
    asked: str, prior: Optional[PriorDecision], held: Optional[str], existing: Optional[dict]
) -> Optional[str]:
    """Why `replay asked` must not write (None: it may). `held` is the decision_id the
    ledger's record file holds now (None: not read yet); `existing` the request file at the
    replayed dispatch id."""
    if prior is None:
        return f"decision_id {asked!r} is not in the ledger (not seen, or pruned); see 'list'"
    if prior.outcome == "emitted":
        return (
            f"decision {asked} was already dispatched as {prior.dispatch_id}; approve that "
            "request instead (a new one would need a second approval)"
        )
    if held is not None and held != asked:
        return (
            f"record file {prior.file} now holds decision {held}, not {asked}; nothing "
            "written (replay that one by its own id if it is meant)"
        )
    if existing is not None:
        owner = existing.get("source_decision_id")
        if owner == asked:
            return (
                f"decision {asked} already has a request in the requests folder "
                f"({existing.get('dispatch_id')}); approve that request instead"
            )
        return f"its dispatch id is already used by decision {short(owner)}; nothing written"
    return None


def approval_for(route: Route, config: Config) -> Tuple[bool, str]:
    """Whether a request on this route waits for approval, and where that came from: the
    route's requires_approval when set, else the global require_approval."""
    if route.requires_approval is not None:
        return route.requires_approval, "route"
    return config.require_approval, "global"


def build_request(
    record: dict,
    *,
    decision_id: str,
    decision_type: str,
    dispatch_id: str,
    record_path: str,
    route: Route,
    config: Config,
    now: float,
    supersedes: Optional[str] = None,
) -> dict:
    """The request document (CONTRACT.md 3 plus schema_version, route, approval source).
    A synthetic handoff check always waits for approval, whatever the route says: a
    consumer must never find a synthetic request it would run."""
    requires, source = approval_for(route, config)
    synthetic = is_handoff(decision_id)
    if synthetic:
        requires, source = True, "synthetic"
    rationale = record.get("rationale")
    checks = record.get("checks")
    ts = record.get("timestamp_utc")
    status = record.get("status")
    request = {
        "schema_version": SCHEMA_VERSION,
        "dispatch_id": dispatch_id,
        "timestamp_utc": iso_ts(now),
        "status": "awaiting-approval" if requires else "queued",
        "execution_mode": EXECUTION_MODE,
        "source_decision_id": decision_id,
        "source_decision_file": record_path,
        "decision_type": decision_type,
        "route": route.key,
        "execution_plane": route.execution_plane,
        "target_kind": route.target_kind,
        "target_ref": route.target_ref,
        "target_env": route.target_env,
        "requires_approval": bool(requires),
        "approval_source": source,
        "rationale": rationale if isinstance(rationale, str) else None,
        # The document is 1 level, `checks` 2: deeper carried parts are cut.
        "checks": cut_depth(checks, REQUEST_DEPTH_MAX - 1) if isinstance(checks, list) else [],
        "decision_timestamp_utc": ts if isinstance(ts, str) else None,
        "decision_status": status if isinstance(status, str) else None,
    }
    if route.approval_ttl_seconds:
        request["expires_at"] = iso_ts(now + route.approval_ttl_seconds)
    if supersedes:
        request["supersedes"] = supersedes
    if synthetic:
        request["synthetic"] = True
    return request


def dump_json(obj: Any) -> bytes:
    """Canonical pretty JSON; ASCII so a lone surrogate from a record cannot break it."""
    return (
        json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=True, allow_nan=False) + "\n"
    ).encode()


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


# --------------------------------------------------------------------------------------
# Approval states and the metrics text (issue 10): pure, no I/O. The daemon's ApprovalBook
# and MetricsReport, and `list`, feed them. Names and meanings: docs/INTERFACES.md "Metrics".

APPROVAL_STATES = ("awaiting", "approved", "expired", "superseded", "not-required")
METRIC_PREFIX = "hyops_decision_dispatcher_"
# Requests listed one by one in state.json (the newest still open); the counts cover all.
OPEN_LISTED = 10


class RequestFacts(NamedTuple):
    """What the approval state of one request file depends on, read once."""

    dispatch_id: str
    route: str
    needs_approval: bool  # false: status `queued` (not-required)
    issued_at: float
    expires_at: Optional[float]
    supersedes: Optional[str]
    synthetic: bool  # validate-handoff's request: never counted in status or metrics


def request_facts(doc: Any) -> Optional[RequestFacts]:
    """The approval-relevant fields of a request document; None when it is not one."""
    if not isinstance(doc, dict):
        return None
    dispatch_id = doc.get("dispatch_id")
    if not isinstance(dispatch_id, str) or not DISPATCH_ID_RE.match(dispatch_id):
        return None
    route = doc.get("route") or doc.get("decision_type")
    issued = parse_iso_utc(doc.get("timestamp_utc"))
    if issued is None:
        issued = compact_to_epoch(dispatch_id.split("-")[1])
    supersedes = doc.get("supersedes")
    source = doc.get("source_decision_id")
    return RequestFacts(
        dispatch_id=dispatch_id,
        route=route if isinstance(route, str) else "",
        needs_approval=doc.get("status") != "queued",
        issued_at=issued,
        expires_at=parse_iso_utc(doc.get("expires_at")),
        supersedes=supersedes if isinstance(supersedes, str) else None,
        synthetic=doc.get("synthetic") is True or (isinstance(source, str) and is_handoff(source)),
    )


def approval_state(facts: RequestFacts, approved: bool, superseded: bool, now: float) -> str:
    """THE approval rule, first match wins: not-required, approved, superseded, expired,
    awaiting. An unreadable approvals folder means `approved` False (a missed page is
    worse than a false one)."""
    if not facts.needs_approval:
        return "not-required"
    if approved:
        return "approved"
    if superseded:
        return "superseded"
    if facts.expires_at is not None and facts.expires_at <= now:
        return "expired"
    return "awaiting"


class MetricsSnapshot(NamedTuple):
    """Every value of the metrics file. `last_pass` and `oldest_awaiting_s` change with
    time alone: they never cause a rewrite between heartbeats (MetricsReport.changed)."""

    version: str
    watcher: str
    healthy: bool
    heartbeat_seconds: float
    records_total: Tuple[Tuple[str, int], ...]  # (outcome, count), every outcome
    requests_total: Tuple[Tuple[str, int], ...]  # (route, count), every route
    awaiting: Tuple[Tuple[str, int], ...]
    expired: Tuple[Tuple[str, int], ...]
    approvals_dir_readable: bool
    last_pass: float = 0.0
    oldest_awaiting_s: float = 0.0

    def timeless(self) -> MetricsSnapshot:
        return self._replace(last_pass=0.0, oldest_awaiting_s=0.0)


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _sample_value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if float(value).is_integer():
        return str(int(value))
    return repr(round(float(value), 3))


def render_metrics(snap: MetricsSnapshot) -> str:
    """The Prometheus text format (node_exporter textfile collector): HELP and TYPE for
    every family, no sample timestamps, label values escaped."""
    lines: List[str] = []

    def family(name: str, kind: str, help_text: str, samples: Iterable[Tuple[str, Any]]) -> None:
        full = METRIC_PREFIX + name
        lines.append(f"# HELP {full} {help_text}")
        lines.append(f"# TYPE {full} {kind}")
        for labels, value in samples:
            lines.append(f"{full}{labels} {_sample_value(value)}")

    def by(label: str, pairs: Iterable[Tuple[str, int]]) -> List[Tuple[str, int]]:
        return [(f'{{{label}="{_label_value(k)}"}}', v) for k, v in pairs]

    info = (
        f'{{execution_mode="{EXECUTION_MODE}",version="{_label_value(snap.version)}",'
        f'watcher="{_label_value(snap.watcher)}"}}'
    )
    family(
        "info",
        "gauge",
        "The running dispatcher: version, execution mode and how it watches the records "
        "folder; always 1.",
        [(info, 1)],
    )
    family(
        "healthy",
        "gauge",
        "1 when healthy by the rule of `dispatcher.py status` (running, status running, "
        "fresh state), else 0.",
        [("", snap.healthy)],
    )
    family(
        "last_pass_timestamp_seconds",
        "gauge",
        "Unix time at the end of the last loop pass over the records folder.",
        [("", snap.last_pass)],
    )
    family(
        "heartbeat_seconds",
        "gauge",
        "Configured heartbeat: this file is rewritten at least this often while the daemon runs.",
        [("", snap.heartbeat_seconds)],
    )
    family(
        "records_total",
        "counter",
        "Decision record files handled, by outcome (the ledger's counters).",
        by("outcome", snap.records_total),
    )
    family(
        "requests_total",
        "counter",
        "Dispatch requests written, by route (synthetic handoff checks excluded).",
        by("route", snap.requests_total),
    )
    family(
        "requests_awaiting_approval",
        "gauge",
        "Requests in the requests folder awaiting approval now (no marker, not expired, "
        "not superseded), by route.",
        by("route", snap.awaiting),
    )
    family(
        "oldest_awaiting_approval_seconds",
        "gauge",
        "Age in seconds of the oldest request awaiting approval; 0 when none.",
        [("", snap.oldest_awaiting_s)],
    )
    family(
        "requests_expired",
        "gauge",
        "Requests in the requests folder whose expires_at passed without an approval "
        "marker, by route.",
        by("route", snap.expired),
    )
    family(
        "approvals_dir_readable",
        "gauge",
        "1 when the approvals folder (config approvals_dir) could be listed at the last "
        "check, else 0.",
        [("", snap.approvals_dir_readable)],
    )
    return "\n".join(lines) + "\n"


# ======================================================================================
# Shell: files, ledger, log, inotify, sd_notify, signals.
# ======================================================================================


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_durably(
    path: str,
    data: bytes,
    mode: int = 0o644,
    sync_dir: bool = True,
    owner: Optional[Tuple[int, int]] = None,
) -> None:
    """Temp file in the same folder (name not ending in .json), fsync, rename, fsync folder."""
    folder = os.path.dirname(path)
    fd, tmp = write_temp(path, data, mode)
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    if sync_dir:
        fsync_dir(folder)


def write_temp(path: str, data: bytes, mode: int) -> Tuple[int, str]:
    """Write `data` to our temp file beside `path` (a dot name ending in .tmp-<pid>, never
    .json); return (open descriptor, temp path). On an error the temp file is removed."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}")
    # O_NONBLOCK: a FIFO planted at the temp name fails (ENXIO) instead of blocking;
    # regular files ignore it.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    fd = os.open(tmp, flags, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return fd, tmp


def remove_stale_temps(folder: str) -> int:
    """Our own temp files left by a crash (never anything ending in .json)."""
    removed = 0
    pid_suffix = re.compile(r"\.tmp-\d+$")
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if entry.name.startswith(".") and pid_suffix.search(entry.name):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


_LIBC: Optional[ctypes.CDLL] = None


def libc() -> ctypes.CDLL:
    """The C library the interpreter already uses (no ldconfig/gcc lookup at start, which
    a sandboxed unit may not allow)."""
    global _LIBC
    if _LIBC is None:
        try:
            lib = ctypes.CDLL(None, use_errno=True)
            lib.inotify_init1  # noqa: B018 (probe: a static build may not export it)
        except (OSError, AttributeError):
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _LIBC = lib
    return _LIBC


def release_free_memory() -> None:
    """Give memory freed by a big pass (and by compiling this file at start) back to the
    OS: glibc keeps freed heap otherwise, and RSS would stay at the high-water mark."""
    with contextlib.suppress(OSError, AttributeError):
        libc().malloc_trim(0)


class StagedWrites:
    """Request files written as a batch, durably: every temp file is written, then all are
    flushed at once (one syncfs() for a burst instead of an fsync per file) and closed,
    then renamed, then the folder is fsynced. Only after commit() may the ledger say they
    exist. Each descriptor is closed BEFORE its rename: a reader watching the requests
    folder with inotify then sees one event per request (IN_MOVED_TO), never a late
    IN_CLOSE_WRITE under the final name."""

    def __init__(self, folder: str, owner: Optional[Tuple[int, int]] = None) -> None:
        self.folder = folder
        self.owner = owner  # (uid, gid) when an operator command runs as root
        self.staged: List[Tuple[int, str, str]] = []  # (fd or -1, temp path, target path)
        self.targets: set = set()
        self._syncfs: Optional[Callable[[int], int]] = None
        with contextlib.suppress(OSError, AttributeError):
            self._syncfs = libc().syncfs

    def __len__(self) -> int:
        return len(self.staged)

    def stage(self, target: str, data: bytes) -> None:
        fd, tmp = write_temp(target, data, 0o644)
        try:
            if self.owner is not None:
                os.fchown(fd, *self.owner)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if len(self.staged) >= SYNCFS_MIN_BATCH:
            # A burst: syncfs() will flush it; do not hold a descriptor per file.
            os.close(fd)
            fd = -1
        self.staged.append((fd, tmp, target))
        self.targets.add(target)

    def commit(self) -> int:
        """Flush every staged file and close it, rename them all, fsync the folder. On an
        error the temp files not yet renamed are removed and the error is raised."""
        staged, self.staged, self.targets = self.staged, [], set()
        if not staged:
            return 0
        done = 0
        open_fds = [fd for fd, _tmp, _target in staged if fd >= 0]
        try:
            synced = False
            if len(staged) >= SYNCFS_MIN_BATCH and self._syncfs is not None:
                dfd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    synced = self._syncfs(dfd) == 0
                finally:
                    os.close(dfd)
            if not synced:
                for fd, tmp, _target in staged:
                    sfd = fd if fd >= 0 else os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        os.fsync(sfd)
                    finally:
                        if sfd != fd:
                            os.close(sfd)
            while open_fds:
                os.close(open_fds.pop())
            for _fd, tmp, target in staged:
                os.replace(tmp, target)
                done += 1
            fsync_dir(self.folder)
            return done
        finally:
            for fd in open_fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            for _fd, tmp, _target in staged[done:]:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def abort(self) -> None:
        """Drop staged files that were never committed."""
        staged, self.staged, self.targets = self.staged, [], set()
        for fd, tmp, _target in staged:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def now_iso() -> str:
    return iso_ts(time.time())


class JsonLog:
    """One JSON line per event to the log file (rotated by size) and to stderr."""

    def __init__(
        self, path: Optional[str], level: str, max_bytes: int, backups: int, to_stderr: bool = True
    ) -> None:
        self.path = path
        self.level = LOG_LEVELS.get(level, 20)
        self.max_bytes = max_bytes
        self.backups = backups
        self.to_stderr = to_stderr
        self.fd: Optional[int] = None
        self.size = 0
        if path:
            self._open()

    def _open(self) -> None:
        assert self.path
        self.fd = open_own_file(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        self.size = os.fstat(self.fd).st_size

    def reconfigure(self, level: str, max_bytes: int, backups: int) -> None:
        self.level = LOG_LEVELS.get(level, 20)
        self.max_bytes = max_bytes
        self.backups = backups

    def _rotate(self) -> None:
        assert self.path and self.fd is not None
        os.close(self.fd)
        self.fd = None
        if self.backups <= 0:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        else:
            for i in range(self.backups - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{self.path}.{i}", f"{self.path}.{i + 1}")
            os.replace(self.path, f"{self.path}.1")
        self._open()

    def event(self, event: str, level: str = "INFO", **fields: Any) -> None:
        if LOG_LEVELS.get(level, 20) < self.level:
            return
        doc = {"ts": now_iso(), "level": level, "event": event}
        doc.update({k: v for k, v in fields.items() if v is not None})
        line = (json.dumps(doc, ensure_ascii=True, default=str) + "\n").encode()
        if self.fd is not None:
            try:
                if self.size + len(line) > self.max_bytes and self.size > 0:
                    self._rotate()
                os.write(self.fd, line)
                self.size += len(line)
            except OSError as exc:
                # The log must never stop the daemon; the journal still gets the line.
                self._stderr(
                    json.dumps(
                        {
                            "ts": now_iso(),
                            "level": "ERROR",
                            "event": "error",
                            "reason": f"log write failed: {exc}",
                        }
                    )
                    + "\n"
                )
        if self.to_stderr:
            self._stderr(line.decode())

    @staticmethod
    def _stderr(text: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            os.write(2, text.encode())

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    name TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    decision_id TEXT,
    dispatch_id TEXT,
    reason TEXT,
    handled_at REAL NOT NULL,
    gone_at REAL
);
CREATE INDEX IF NOT EXISTS files_decision ON files(decision_id);
CREATE INDEX IF NOT EXISTS files_watched ON files(outcome)
    WHERE outcome IN ('pending', 'rejected') AND gone_at IS NULL;
-- The listing compares every name in the folder with this (a covering index: a lookup
-- never reads the wide rows).
CREATE INDEX IF NOT EXISTS files_live ON files(name, size, mtime_ns, ctime_ns, inode)
    WHERE gone_at IS NULL;
CREATE TABLE IF NOT EXISTS decisions (
    decision_id TEXT PRIMARY KEY,
    outcome TEXT NOT NULL,
    dispatch_id TEXT,
    route TEXT,
    decision_epoch REAL,
    file TEXT,
    reason TEXT,
    handled_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_dispatch ON decisions(dispatch_id);
CREATE INDEX IF NOT EXISTS decisions_emitted ON decisions(route, decision_epoch)
    WHERE outcome = 'emitted';
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# SQLite's busy wait for a lock another process holds (a reader, a backup): well under
# WatchdogSec; a write that still finds it locked fails and is retried (degraded).
LEDGER_BUSY_SECONDS = 5.0
# Ledger meta key: "1" when the daemon last stopped cleanly (nothing to reconcile).
CLEAN_STOP = "clean_stop"
# SQLite page cache per connection, in KiB (negative PRAGMA value): the index of every
# handled file lives in the ledger, so this bounds what history costs in memory.
LEDGER_CACHE_KIB = 2048
# Names looked up per query when a listing is compared with the ledger.
LOOKUP_CHUNK = 500


class LedgerCorrupt(sqlite3.DatabaseError):
    """PRAGMA quick_check did not answer ok."""


class LedgerUnusable(sqlite3.OperationalError):
    """The ledger stayed locked or unopenable for the whole wait (not corrupt)."""


# SQLite's primary result codes that mean the file itself is damaged; anything else
# (busy, locked, cannot open, read-only, I/O error, full) leaves the ledger alone.
SQLITE_CORRUPT_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB
SQLITE_CORRUPT_TEXTS = ("file is not a database", "database disk image is malformed")


def is_corrupt(exc: BaseException) -> bool:
    if isinstance(exc, LedgerCorrupt):
        return True
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(code, int):
        return code & 0xFF in SQLITE_CORRUPT_CODES
    return any(text in str(exc) for text in SQLITE_CORRUPT_TEXTS)


class Ledger:
    """Durable record of handled files and decisions (SQLite, rollback journal,
    synchronous=FULL: a commit is on disk when it returns). A rollback journal rather than
    WAL so that an operator command run as root never leaves -wal/-shm files the service
    user cannot open. It is also the daemon's index of handled files (FileIndex)."""

    def __init__(
        self, path: str, readonly: bool = False, busy_timeout: float = LEDGER_BUSY_SECONDS
    ) -> None:
        self.path = path
        # SQLite follows symlinks and would make any empty file a ledger: the file (made
        # here, ours, when missing) and its journal are checked first; SQLite then opens
        # them by name, in a folder only the service user (and root) can change.
        if readonly:
            os.close(open_own_file(path, os.O_RDONLY, owned=False))
        else:
            os.close(open_own_file(path, os.O_RDWR | os.O_CREAT))
            check_own_path(path + "-journal")
        # SQLite URI: only %, ? and # need escaping in the path part.
        escaped = path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")
        if readonly:
            uri = f"file:{escaped}?mode=ro"
            self.db = sqlite3.connect(
                uri, uri=True, isolation_level=None, timeout=LEDGER_BUSY_SECONDS
            )
        else:
            uri = f"file:{escaped}?mode=rw"
            self.db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=busy_timeout)
            self.db.execute("PRAGMA journal_mode=DELETE")
            self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(f"PRAGMA cache_size=-{LEDGER_CACHE_KIB}")
        if not readonly:
            self.db.executescript(LEDGER_SCHEMA)
        self.in_tx = False

    @classmethod
    def open_or_recover(
        cls,
        path: str,
        log: JsonLog,
        wait: Callable[[float], None],
        budget: float,
        busy: float = LEDGER_BUSY_SECONDS,
    ) -> Tuple[Ledger, bool]:
        """Open the ledger; only a corrupt one (SQLite says so) is moved aside and a new
        one started (the requests folder then rebuilds it). A locked ledger, or one we
        may not open (permissions, I/O error), is not corrupt: it is tried again with a
        growing pause (`wait` sleeps and keeps the watchdog fed; SQLite's own busy wait,
        `busy`, is shorter than a ping interval) for up to `budget` seconds, then the
        error is raised and the file left exactly as it is: moving it aside would forget
        which decisions already had a request. Returns (ledger, rebuilt)."""
        existed = os.path.exists(path)
        deadline = time.monotonic() + budget
        pause = 0.25
        while True:
            try:
                ledger = cls(path, busy_timeout=busy)
                try:
                    row = ledger.db.execute("PRAGMA quick_check").fetchone()
                    if row is None or row[0] != "ok":
                        raise LedgerCorrupt(f"quick_check: {row[0] if row else 'no answer'}")
                    # A write lock now: a ledger we can read but not write fails here.
                    ledger.begin()
                    ledger.commit()
                except BaseException:
                    ledger.db.close()
                    raise
                return ledger, not existed
            except UnsafeFile:
                raise  # a symlink or another user's file: waiting does not change it
            except (sqlite3.Error, OSError) as exc:
                if not is_corrupt(exc):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise LedgerUnusable(f"ledger {path}: {exc}; left as it is") from None
                    log.event(
                        "error",
                        level="WARNING",
                        file=path,
                        reason=f"ledger not usable ({exc}); not corrupt, trying again "
                        f"in {min(pause, left):g} s",
                    )
                    wait(min(pause, left))
                    pause = min(pause * 2, 4.0)
                    continue
                problem = exc
            aside = f"{path}.corrupt-{compact_ts(time.time())}"
            with contextlib.suppress(OSError):
                os.replace(path, aside)
            with contextlib.suppress(OSError):
                os.replace(path + "-journal", aside + "-journal")
            log.event(
                "error",
                level="ERROR",
                file=path,
                reason=f"ledger corrupt ({problem}); moved to {aside}, rebuilding from "
                "the requests folder",
            )
            return cls(path, busy_timeout=busy), True

    def begin(self) -> None:
        if not self.in_tx:
            self.db.execute("BEGIN IMMEDIATE")
            self.in_tx = True

    def commit(self) -> None:
        if self.in_tx:
            try:
                self.db.execute("COMMIT")
            finally:
                # A failed COMMIT (disk full) may leave the transaction open or already
                # rolled back by SQLite: either way it is over, and the caller gets the
                # real error, never a later "cannot commit - no transaction is active".
                self.in_tx = False
                if self.db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self.db.execute("ROLLBACK")

    def rollback(self) -> None:
        if self.in_tx or self.db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
            self.in_tx = False

    def close(self) -> None:
        self.rollback()
        self.db.close()

    # --- reads: files (the index)
    _KNOWN = (
        "SELECT name, size, mtime_ns, ctime_ns, inode, outcome, decision_id, gone_at FROM files"
    )

    @staticmethod
    def _known(row: tuple) -> KnownFile:
        _name, size, mtime_ns, ctime_ns, inode, outcome, decision_id, gone_at = row
        return KnownFile(
            FileSig(size, mtime_ns, ctime_ns, inode), outcome, decision_id, gone_at is not None
        )

    def known_file(self, name: str) -> Optional[KnownFile]:
        """The row for one file name, also when the file went away (gone=True)."""
        row = self.db.execute(f"{self._KNOWN} WHERE name = ?", (ledger_name(name),)).fetchone()
        return None if row is None else self._known(row)

    def inodes_of(self, names: List[str]) -> Dict[str, int]:
        """name -> inode of files still present, for up to LOOKUP_CHUNK ledger names."""
        marks = ",".join("?" * len(names))
        rows = self.db.execute(
            f"SELECT name, inode FROM files INDEXED BY files_live "
            f"WHERE gone_at IS NULL AND name IN ({marks})",
            names,
        )
        return dict(rows.fetchall())

    def sigs_of(self, names: List[str]) -> Dict[str, Tuple[int, int, int, int]]:
        """name -> FileSig.key() of files still present, for up to LOOKUP_CHUNK names."""
        marks = ",".join("?" * len(names))
        rows = self.db.execute(
            f"SELECT name, size, mtime_ns, ctime_ns, inode FROM files INDEXED BY files_live "
            f"WHERE gone_at IS NULL AND name IN ({marks})",
            names,
        )
        return {row[0]: row[1:] for row in rows}

    def watched_files(self) -> List[Tuple[str, KnownFile]]:
        rows = self.db.execute(
            f"{self._KNOWN} WHERE outcome IN ('pending', 'rejected') AND gone_at IS NULL"
        ).fetchall()
        return [(row[0], self._known(row)) for row in rows]

    def live_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM files WHERE gone_at IS NULL").fetchone()[0]

    def live_names_after(self, after: str, limit: int = LOOKUP_CHUNK) -> List[str]:
        rows = self.db.execute(
            "SELECT name FROM files WHERE gone_at IS NULL AND name > ? ORDER BY name LIMIT ?",
            (after, limit),
        )
        return [r[0] for r in rows]

    def get_file(self, name: str) -> Optional[dict]:
        row = self.db.execute(
            "SELECT name, outcome, decision_id, dispatch_id, reason, handled_at, gone_at "
            "FROM files WHERE name = ?",
            (ledger_name(name),),
        ).fetchone()
        if row is None:
            return None
        keys = ("file", "outcome", "decision_id", "dispatch_id", "reason", "handled_at", "gone_at")
        return dict(zip(keys, row))

    # --- reads: decisions
    def prior(self, decision_id: str) -> Optional[PriorDecision]:
        row = self.db.execute(
            "SELECT decision_id, outcome, dispatch_id, route, decision_epoch, file, reason, "
            "handled_at FROM decisions WHERE decision_id = ?",
            (decision_id,),
        ).fetchone()
        return None if row is None else PriorDecision(*row)

    def get_decision(self, decision_id: str) -> Optional[dict]:
        prior = self.prior(decision_id)
        return None if prior is None else prior._asdict()

    def emitted_among(self, dispatch_ids: List[str]) -> set:
        """Which of up to LOOKUP_CHUNK dispatch ids the ledger has as emitted."""
        marks = ",".join("?" * len(dispatch_ids))
        rows = self.db.execute(
            f"SELECT dispatch_id FROM decisions WHERE outcome = 'emitted' "
            f"AND dispatch_id IN ({marks})",
            dispatch_ids,
        )
        return {r[0] for r in rows}

    def last_emits(self) -> Dict[str, LastEmit]:
        """route -> LastEmit, its latest request, for every route that has one in the
        ledger (a route since removed from the config still ends an episode); for
        coalescing and episodes. Synthetic handoff checks never count."""
        result: Dict[str, LastEmit] = {}
        routes = [
            r[0]
            for r in self.db.execute(
                "SELECT DISTINCT route FROM decisions WHERE outcome = 'emitted' "
                "AND route IS NOT NULL"
            )
        ]
        for route in routes:
            row = self.db.execute(
                "SELECT decision_epoch, dispatch_id FROM decisions "
                "WHERE outcome = 'emitted' AND route = ? AND decision_epoch IS NOT NULL "
                "AND decision_id NOT LIKE ? ORDER BY decision_epoch DESC LIMIT 1",
                (route, HANDOFF_PREFIX + "%"),
            ).fetchone()
            if row is not None:
                result[route] = LastEmit(*row)
        return result

    def counts(self) -> Dict[str, int]:
        rows = self.db.execute(
            "SELECT outcome, count(*) FROM files WHERE gone_at IS NULL GROUP BY outcome"
        )
        return {r[0]: r[1] for r in rows}

    def meta_get(self, key: str) -> Optional[str]:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def listing(self, outcomes: Tuple[str, ...], limit: int = 1000) -> List[dict]:
        marks = ",".join("?" * len(outcomes))
        rows = self.db.execute(
            f"SELECT name, outcome, decision_id, dispatch_id, reason, handled_at FROM files "
            f"WHERE gone_at IS NULL AND outcome IN ({marks}) ORDER BY handled_at DESC LIMIT ?",
            (*outcomes, limit),
        )
        keys = ("file", "outcome", "decision_id", "dispatch_id", "reason", "handled_at")
        return [dict(zip(keys, r)) for r in rows]

    # --- writes (inside begin()/commit())
    def put_file(
        self,
        name: str,
        sig: FileSig,
        outcome: str,
        decision_id: Optional[str],
        dispatch_id: Optional[str],
        reason: str,
        now: float,
    ) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO files (name, size, mtime_ns, ctime_ns, inode, outcome, "
            "decision_id, dispatch_id, reason, handled_at, gone_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,NULL)",
            (ledger_name(name), *sig.key(), outcome, decision_id, dispatch_id, reason, now),
        )

    def put_decision(
        self,
        decision_id: str,
        outcome: str,
        dispatch_id: Optional[str],
        route: Optional[str],
        epoch: Optional[float],
        file: Optional[str],
        reason: str,
        now: float,
    ) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO decisions (decision_id, outcome, dispatch_id, route, "
            "decision_epoch, file, reason, handled_at) VALUES (?,?,?,?,?,?,?,?)",
            (decision_id, outcome, dispatch_id, route, epoch, file, reason, now),
        )

    def settle_adopted(self, decision_id: str, reason: str) -> None:
        self.db.execute(
            "UPDATE decisions SET reason = ? WHERE decision_id = ? AND reason = ?",
            (reason, decision_id, ADOPTED_REASON),
        )

    def mark_gone(self, name: str, now: float) -> bool:
        cur = self.db.execute(
            "UPDATE files SET gone_at = ? WHERE name = ? AND gone_at IS NULL",
            (now, ledger_name(name)),
        )
        return cur.rowcount > 0

    def meta_set(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def prune(self, now: float, retention: float) -> int:
        """Forget files that are gone and older than the retention, then decisions no file
        refers to any more (a re-dropped record keeps its decision alive)."""
        cutoff = now - retention
        cur = self.db.execute(
            "DELETE FROM files WHERE gone_at IS NOT NULL AND gone_at < ? AND handled_at < ?",
            (cutoff, cutoff),
        )
        removed = cur.rowcount
        cur = self.db.execute(
            "DELETE FROM decisions WHERE handled_at < ? AND NOT EXISTS "
            "(SELECT 1 FROM files WHERE files.decision_id = decisions.decision_id)",
            (cutoff,),
        )
        return removed + cur.rowcount


class Inotify:
    """Minimal inotify over ctypes: which names in one folder changed."""

    IN_MODIFY = 0x00000002
    IN_ATTRIB = 0x00000004
    IN_CLOSE_WRITE = 0x00000008
    IN_MOVED_FROM = 0x00000040
    IN_MOVED_TO = 0x00000080
    IN_CREATE = 0x00000100
    IN_DELETE = 0x00000200
    IN_DELETE_SELF = 0x00000400
    IN_MOVE_SELF = 0x00000800
    IN_Q_OVERFLOW = 0x00004000
    IN_IGNORED = 0x00008000
    IN_ONLYDIR = 0x01000000
    IN_NONBLOCK = 0o4000
    IN_CLOEXEC = 0o2000000
    MASK = (
        IN_MODIFY
        | IN_ATTRIB
        | IN_CLOSE_WRITE
        | IN_MOVED_FROM
        | IN_MOVED_TO
        | IN_CREATE
        | IN_DELETE
        | IN_DELETE_SELF
        | IN_MOVE_SELF
        | IN_ONLYDIR
    )
    HEADER = struct.Struct("iIII")

    def __init__(self, path: str) -> None:
        lib = libc()
        self._init1 = lib.inotify_init1
        self._add = lib.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        fd = self._init1(self.IN_NONBLOCK | self.IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.fd = fd
        wd = self._add(fd, os.fsencode(path), self.MASK)
        if wd < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"inotify_add_watch {path}: {os.strerror(err)}")
        self.lost = False  # the watched folder went away: caller falls back to polling

    def read(self) -> Tuple[set, bool]:
        """Drain events: (changed names, overflow)."""
        names: set = set()
        overflow = False
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            if not buf:
                break
            pos = 0
            while pos + self.HEADER.size <= len(buf):
                _wd, mask, _cookie, length = self.HEADER.unpack_from(buf, pos)
                pos += self.HEADER.size
                raw = buf[pos : pos + length].split(b"\0", 1)[0]
                pos += length
                if mask & self.IN_Q_OVERFLOW:
                    overflow = True
                if mask & (self.IN_DELETE_SELF | self.IN_MOVE_SELF | self.IN_IGNORED):
                    self.lost = True
                    overflow = True
                if raw:
                    names.add(os.fsdecode(raw))
        return names, overflow

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class Notifier:
    """sd_notify over NOTIFY_SOCKET (a datagram socket; '@' means the abstract namespace)."""

    def __init__(self) -> None:
        self.addr = os.environ.get("NOTIFY_SOCKET") or None
        self.watchdog_s: Optional[float] = None
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if usec and usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6
        self.last_ping = 0.0

    def send(self, message: str) -> None:
        if not self.addr:
            return
        addr = "\0" + self.addr[1:] if self.addr.startswith("@") else self.addr
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # Never block the loop on a receiver that is slow to read (a full queue
                # drops this message; the next ping follows within half WatchdogSec).
                sock.sendto(message.encode(), socket.MSG_DONTWAIT, addr)
        except OSError:
            pass  # systemd gone, not listening or busy: nothing useful to do

    # `now` here is time.monotonic(): a wall-clock step must not stop the pings.
    def ping_due(self) -> Optional[float]:
        if self.watchdog_s is None:
            return None
        return self.last_ping + self.watchdog_s / 2

    def ping(self, now: float, force: bool = False) -> None:
        due = self.ping_due()
        if due is not None and (force or now >= due):
            self.send("WATCHDOG=1")
            self.last_ping = now


def load_config(path: str) -> Config:
    """Read and validate; ConfigError message starts with the file name."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(1 << 20)
    except OSError as exc:
        raise ConfigError(f"config {path}: cannot read ({exc.strerror})") from None
    try:
        return parse_config(raw, path)
    except ConfigError as exc:
        raise ConfigError(f"config {path}: {exc}") from None


class UnsafeFile(OSError):
    """A file of ours (lock, log, ledger, state) is a symlink, a FIFO or another kind of
    non-regular file, or belongs to another user: never followed, read or written."""


def open_own_file(path: str, flags: int, mode: int = 0o640, owned: bool = True) -> int:
    """Open one of the daemon's own files under state/ or logs/ without following a
    symlink or blocking on a FIFO (the folders belong to the service user, and operator
    commands may run as root): O_NOFOLLOW|O_NONBLOCK, then it must be a regular file and,
    when `owned` (we write to it), ours. O_NONBLOCK is cleared again before returning."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile(errno.ELOOP, f"{path} is a symlink (never followed)") from None
        if exc.errno == errno.ENXIO:  # a FIFO nobody reads, opened for writing
            raise UnsafeFile(errno.ENXIO, f"{path} is not a regular file") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(errno.EINVAL, f"{path} is not a regular file; remove it")
        if owned and st.st_uid != os.geteuid():
            raise UnsafeFile(
                errno.EPERM,
                f"{path} belongs to uid {st.st_uid}, not to uid {os.geteuid()} that runs "
                "this; give it back (chown) or remove it",
            )
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_own_path(path: str) -> None:
    """For files SQLite or a rename opens by name: refuse a symlink, a FIFO or another
    user's file already at `path` (a missing one is fine)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeFile(errno.ELOOP, f"{path} is a symlink (never followed)")
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFile(errno.EINVAL, f"{path} is not a regular file; remove it")
    if st.st_uid != os.geteuid():
        raise UnsafeFile(
            errno.EPERM,
            f"{path} belongs to uid {st.st_uid}, not to uid {os.geteuid()} that runs this; "
            "give it back (chown) or remove it",
        )


def lock_holder_running(lock_file: str) -> bool:
    """True when some process holds the instance lock (i.e. a daemon runs on this root)."""
    try:
        fd = open_own_file(lock_file, os.O_RDONLY, owned=False)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


class Locked(Exception):
    pass


def acquire_lock(lock_file: str) -> int:
    fd = open_own_file(lock_file, os.O_RDWR | os.O_CREAT)
    # `status` and `validate-handoff` probe the lock with a shared flock held for
    # microseconds: retry briefly so a probe never makes a starting daemon give up.
    deadline = time.monotonic() + 1.0
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as exc:
            busy = exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
            if busy and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            os.close(fd)
            if busy:
                raise Locked(lock_file) from None
            raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def read_record_bytes(path: str, cap: int) -> Tuple[bytes, FileSig]:
    """Read a record without following symlinks or blocking on a FIFO; the signature is of
    the open file, and a file that changes while being read counts as still being written."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RecordRejected("symlink (never followed)") from None
        if exc.errno == errno.ENOENT:
            raise RecordRejected("file vanished while being read", True) from None
        raise RecordRejected(f"unreadable: {exc.strerror}") from None
    try:
        before = FileSig.of(os.fstat(fd))
        if not stat.S_ISREG(before.mode):
            raise RecordRejected("not a regular file")
        chunks = []
        total = 0
        while total <= cap:
            try:
                chunk = os.read(fd, min(1 << 20, cap + 1 - total))
            except OSError as exc:
                raise RecordRejected(f"unreadable: {exc.strerror}") from None
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > cap:
            raise RecordRejected(f"file is over max_record_bytes {cap}")
        after = FileSig.of(os.fstat(fd))
        if after.key() != before.key():
            raise RecordRejected("file changed while being read", True)
        return b"".join(chunks), after
    finally:
        os.close(fd)


def read_json_quiet(path: str) -> Optional[dict]:
    """A small JSON document (state, request, replay answer), or None. Never follows a
    symlink nor blocks on a FIFO someone put in its place."""
    try:
        with os.fdopen(open_own_file(path, os.O_RDONLY, owned=False), "rb") as fh:
            doc = json.loads(fh.read(4 << 20))
    except (OSError, ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def approval_marker(config: Config, dispatch_id: str) -> str:
    """The consumer's approval of a request (CONTRACT.md 3): its existence is approval."""
    return os.path.join(config.approvals_dir, dispatch_id + ".approved.json")


def awaits_approval(config: Config, dispatch_id: str, now: float) -> bool:
    """A request still waits for its approval: it is in the requests folder as
    `awaiting-approval`, has no approval marker and has not expired (`expires_at`). A
    request the consumer has taken away is no longer waiting."""
    doc = read_json_quiet(os.path.join(config.requests_dir, dispatch_id + ".json"))
    if doc is None or doc.get("status") != "awaiting-approval":
        return False
    if os.path.lexists(approval_marker(config, dispatch_id)):
        return False
    expires = parse_iso_utc(doc.get("expires_at"))
    return expires is None or now < expires


# ======================================================================================
# The daemon, one class per job:
#   FileIndex    what is known about each record file (in the ledger, not in memory)
#   Watcher      which names need a look (inotify, folder listing, hourly stat scan)
#   Batch        the one write path: request files durable first, then the ledger rows
#   StateReport  counters, last ids, log line per outcome, state.json
#   ReplayInbox  operator replays asked of the running daemon
#   Daemon       the loop that wires them: read -> judge -> decide -> apply
# ======================================================================================


class Judged(NamedTuple):
    """judge_record_file's answer: the outcome and the signature of the file as read."""

    outcome: Outcome
    sig: FileSig


def judge_record_file(
    config: Config,
    name: str,
    sig: FileSig,
    known: Optional[KnownFile],
    now: float,
    *,
    prior_of: Callable[[str], Optional[PriorDecision]],
    existing: Callable[[str], Optional[dict]],
    last_emit: Dict[str, LastEmit],
    look_again: bool = False,
    awaits_approval: Optional[Callable[[str], bool]] = None,
) -> Optional[Judged]:
    """read -> judge -> decide for one record file: the daemon and `explain` both call
    this. `prior_of` looks a decision up in the ledger, `existing` the request file at a
    dispatch id, `awaits_approval` whether a request still waits for approval. None:
    unchanged since it was handled (nothing to do)."""
    verdict = judge_file(sig, name, config, known, now, look_again)
    if verdict.action == SKIP:
        return None
    outcome = verdict.outcome
    if verdict.action == READ:
        path = os.path.join(config.records_dir, name)
        try:
            data, sig = read_record_bytes(path, config.max_record_bytes)
            valid = read_valid_record(data)
        except RecordRejected as problem:
            outcome = judge_unreadable(problem, sig, known, config, now)
        else:
            outcome = judge_prior(name, valid.decision_id, prior_of(valid.decision_id), known)
            if outcome is None:
                decision = decide(
                    valid,
                    record_path=path,
                    mtime=sig.mtime,
                    config=config,
                    now=now,
                    last_emit=last_emit,
                    awaits_approval=awaits_approval,
                )
                outcome = Outcome.of_decision(decision)
                if decision.outcome == "emitted":
                    assert decision.dispatch_id is not None
                    outcome = judge_collision(decision, existing(decision.dispatch_id))
    assert outcome is not None
    return Judged(seen_before(known, sig, outcome), sig)


class FileIndex:
    """What is known about each record file. It lives in the ledger (SQLite with a bounded
    page cache), so memory stays flat however long the history; only the few files still
    pending or rejected are kept in memory, because they are re-stat'ed on every pass."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.watched: Dict[str, KnownFile] = {}
        self.tracked = 0  # files present and known (state.json tracked_files)

    def load(self) -> None:
        self.watched = {folder_name(n): known for n, known in self.ledger.watched_files()}
        self.tracked = self.ledger.live_count()

    def lookup(self, name: str) -> Optional[KnownFile]:
        known = self.watched.get(name)
        return known if known is not None else self.ledger.known_file(name)

    def put(
        self, name: str, sig: FileSig, outcome: Outcome, known: Optional[KnownFile], now: float
    ) -> None:
        self.ledger.begin()
        self.ledger.put_file(
            name,
            sig,
            outcome.outcome,
            outcome.decision_id,
            outcome.dispatch_id,
            outcome.reason,
            now,
        )
        if known is None or known.gone:
            self.tracked += 1
        if outcome.outcome in WATCHED_OUTCOMES:
            self.watched[name] = KnownFile(
                sig, outcome.outcome, outcome.decision_id, retry_at=outcome.retry_at
            )
        else:
            self.watched.pop(name, None)

    def forget(self, name: str, now: float) -> None:
        """The file went away: its row stays (marked gone) until the retention prunes it."""
        self.watched.pop(name, None)
        known = self.ledger.known_file(name)
        if known is None or known.gone:
            return  # never handled (e.g. renamed away at once): nothing to write
        self.ledger.begin()
        if self.ledger.mark_gone(name, now):
            self.tracked -= 1

    def pending_count(self) -> int:
        return sum(1 for k in self.watched.values() if k.outcome == "pending")

    def next_retry(self) -> Optional[float]:
        due = [k.retry_at for k in self.watched.values() if k.outcome == "pending"]
        return min(due) if due else None


class Watcher:
    """Which record names need a look. inotify reports names within milliseconds; the
    safety net (every poll) stats the folder and lists it only when its mtime changed;
    once an hour every file is stat'ed. A listing is compared with the index chunk by
    chunk in SQLite: no Python set of every name, no list of 100 000 directory entries."""

    def __init__(self, config: Config, log: JsonLog, use_inotify: bool) -> None:
        self.config = config
        self.log = log
        self.use_inotify = use_inotify
        self.inotify: Optional[Inotify] = None
        self.mode = "poll"
        self.error = ""
        self.dir_mtime_ns: Optional[int] = None  # the listing is up to date for this mtime
        self.rewatch = False  # re-add the watch at the next pass (folder replaced)
        self.last_full_scan = 0.0

    @property
    def fd(self) -> Optional[int]:
        return None if self.inotify is None else self.inotify.fd

    def arm(self) -> None:
        if not self.use_inotify:
            return
        self.close()
        try:
            self.inotify = Inotify(self.config.records_dir)
            self.mode = "inotify"
            self.error = ""
        except (OSError, AttributeError) as exc:
            # Missing folder or no inotify (old kernel, exhausted watches): polling only.
            self.inotify = None
            if str(exc) == self.error:
                return  # said once already
            self.error = str(exc)
            self.log.event(
                "error",
                level="WARNING",
                file=self.config.records_dir,
                reason=f"inotify unavailable ({exc}); polling every {self.config.poll_seconds:g} s",
            )

    def close(self) -> None:
        if self.inotify is not None:
            self.inotify.close()
            self.inotify = None
        self.mode = "poll"

    def drain(self) -> Tuple[set, bool]:
        """Names inotify reported, gathered while events keep coming (a burst becomes one
        batch), and whether the queue overflowed (then: a full scan)."""
        assert self.inotify is not None
        names, overflow = self.inotify.read()
        records = sum(1 for n in names if is_record_name(n))
        gather_until = time.monotonic() + EVENT_GATHER_MAX
        while time.monotonic() < gather_until and not overflow and records < BATCH_MAX:
            more, _, _ = select.select([self.inotify.fd], [], [], EVENT_GATHER_GAP)
            if not more:
                break
            extra, overflow = self.inotify.read()
            records += sum(1 for n in extra - names if is_record_name(n))
            names |= extra
        if self.inotify.lost:
            self.close()
            self.dir_mtime_ns = None
            self.rewatch = True
        return names, overflow

    def folder_mtime_ns(self) -> int:
        """Raises OSError when the records folder is missing or not a folder."""
        dst = os.stat(self.config.records_dir)
        if not stat.S_ISDIR(dst.st_mode):
            raise NotADirectoryError(self.config.records_dir)
        return dst.st_mtime_ns

    def listed(self, mtime_ns: int, full: bool, mono_now: float) -> None:
        # A folder changed within the last second may change again with the same coarse
        # timestamp: only trust a listing of an older mtime (racy-git rule).
        trusted = (time.time_ns() - mtime_ns) > 1_000_000_000
        self.dir_mtime_ns = mtime_ns if trusted else None
        if full:
            self.last_full_scan = mono_now

    def changed_names(self, index: FileIndex, with_stat: bool, now: float) -> List[str]:
        """Names that need a look: new, replaced (other inode), or (with_stat) changed.
        Files the index has but the folder no longer holds are marked gone. Raises
        OSError when the folder cannot be listed."""
        todo: List[str] = []
        seen_known = 0
        chunk: List[os.DirEntry] = []
        with os.scandir(self.config.records_dir) as entries:
            for entry in entries:
                if is_record_name(entry.name):
                    chunk.append(entry)
                    if len(chunk) >= LOOKUP_CHUNK:
                        seen_known += self._compare(chunk, index, with_stat, todo)
                        chunk = []
        if chunk:
            seen_known += self._compare(chunk, index, with_stat, todo)
        missing = index.ledger.live_count() - seen_known
        if missing > 0:
            self._mark_gone(index, missing, now)
        return todo

    @staticmethod
    def _compare(
        chunk: List[os.DirEntry], index: FileIndex, with_stat: bool, todo: List[str]
    ) -> int:
        """Adds the entries that need a look to `todo`; returns how many the index knows.
        Plain tuples, no objects per file: this runs over every name of a long history."""
        spelled = [ledger_name(e.name) for e in chunk]
        if not with_stat:
            inodes = index.ledger.inodes_of(spelled)
            for entry, name in zip(chunk, spelled):
                if inodes.get(name) != entry.inode():  # new (None) or replaced
                    todo.append(entry.name)
            return len(inodes)
        sigs = index.ledger.sigs_of(spelled)
        for entry, name in zip(chunk, spelled):
            known = sigs.get(name)
            if known is None:
                todo.append(entry.name)
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                todo.append(entry.name)
                continue
            if (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) != known:
                todo.append(entry.name)
        return len(sigs)

    def _mark_gone(self, index: FileIndex, missing: int, now: float) -> None:
        """`missing` indexed files are no longer in the folder: find them (rare: the
        decision service never prunes; inotify usually reported them already)."""
        after = ""
        while missing > 0:
            names = index.ledger.live_names_after(after)
            if not names:
                return
            after = names[-1]
            for spelled in names:
                name = folder_name(spelled)
                if not os.path.lexists(os.path.join(self.config.records_dir, name)):
                    index.forget(name, now)
                    missing -= 1


class Batch:
    """The one write path for requests, for the daemon's passes and for `replay` alike: a
    request is staged as a temp file, and the ledger rows of the batch are committed only
    after every staged file is durable and renamed (requests first, then the ledger). A
    dispatch id already taken (in the folder or in this batch) is never written again."""

    def __init__(self, config: Config, ledger: Ledger, owner: Optional[Tuple[int, int]]) -> None:
        self.config = config
        self.ledger = ledger
        self.writes = StagedWrites(config.requests_dir, owner)
        self.failed = False  # a commit failed: requests may be on disk the ledger lacks
        self.remade = 0  # times the requests folder was re-created

    def target(self, dispatch_id: str) -> str:
        return os.path.join(self.config.requests_dir, dispatch_id + ".json")

    def existing(self, dispatch_id: str) -> Optional[dict]:
        """The request at this dispatch id, if any (also one staged in this batch)."""
        target = self.target(dispatch_id)
        doc = read_json_quiet(target)
        if doc is None and target in self.writes.targets:
            return IN_THIS_BATCH
        return doc

    def stage(self, decision: Decision) -> None:
        assert decision.dispatch_id is not None and decision.request is not None
        target, data = self.target(decision.dispatch_id), dump_json(decision.request)
        try:
            self.writes.stage(target, data)
        except FileNotFoundError:
            if not self.make_folder():
                raise
            self.writes.stage(target, data)

    def make_folder(self) -> bool:
        """Re-create a requests folder that vanished (0750, ours) when the folder above it
        is still there; False when it cannot be (then the daemon reports degraded)."""
        folder = self.config.requests_dir
        if os.path.isdir(folder) or not os.path.isdir(os.path.dirname(folder)):
            return False
        try:
            os.mkdir(folder, 0o750)
            os.chmod(folder, 0o750)  # whatever the umask
            if self.writes.owner is not None:
                os.chown(folder, *self.writes.owner)
        except OSError:
            return os.path.isdir(folder)
        self.remade += 1  # the daemon logs it
        return True

    def usable(self) -> Optional[str]:
        """Why requests cannot be written now (None: they can). One stat and one access
        check per poll; a vanished folder is re-created."""
        folder = self.config.requests_dir
        if not os.path.isdir(folder) and not self.make_folder():
            return f"requests folder {folder} is missing and cannot be re-created"
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"requests folder {folder} is not writable"
        return None

    @property
    def full(self) -> bool:
        return len(self.writes) >= BATCH_MAX

    def finish(self, meta: Dict[str, str]) -> None:
        """Make the batch durable: requests folder fsync first, then the ledger commit."""
        if len(self.writes):
            try:
                self.writes.commit()
            except BaseException:
                # Nothing may claim a request that is not on disk; some may be on disk
                # that the ledger does not claim: the next start must reconcile.
                self.failed = True
                self.writes.abort()
                self.ledger.rollback()
                raise
        if self.ledger.in_tx:
            for key, value in meta.items():
                self.ledger.meta_set(key, value)
            self.ledger.commit()

    def reconcile(self, log: JsonLog, now: float) -> None:
        """The requests folder is the truth: adopt any request the ledger does not know
        (written just before a crash, or the ledger was lost). Streamed in chunks: the
        folder may hold a request per decision of a long history."""
        adopted = 0
        try:
            with os.scandir(self.config.requests_dir) as entries:
                chunk: List[str] = []
                for entry in entries:
                    if is_record_name(entry.name):
                        chunk.append(entry.name)
                        if len(chunk) >= LOOKUP_CHUNK:
                            adopted += self._adopt(chunk, log, now)
                            chunk = []
                adopted += self._adopt(chunk, log, now)
        except FileNotFoundError:
            return
        self.ledger.commit()
        if adopted:
            log.event(
                "recovered",
                level="INFO",
                reason=f"adopted {adopted} request(s) from the requests folder into the ledger",
            )

    def _adopt(self, names: List[str], log: JsonLog, now: float) -> int:
        if not names:
            return 0
        known = self.ledger.emitted_among([n[:-5] for n in names])
        adopted = 0
        for name in names:
            if name[:-5] in known:
                continue
            path = os.path.join(self.config.requests_dir, name)
            try:
                with os.fdopen(open_own_file(path, os.O_RDONLY, owned=False), "rb") as fh:
                    doc = json.loads(fh.read(4 << 20))
                decision_id = doc["source_decision_id"]
                dispatch_id = doc["dispatch_id"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.event(
                    "error",
                    level="WARNING",
                    file=path,
                    reason=f"unreadable request file ignored in reconcile: {exc}",
                )
                continue
            if not isinstance(decision_id, str) or not isinstance(dispatch_id, str):
                continue
            epoch = parse_iso_utc(doc.get("decision_timestamp_utc"))
            if epoch is None:
                with contextlib.suppress(ValueError, IndexError):
                    epoch = compact_to_epoch(dispatch_id.split("-")[1])
            source = doc.get("source_decision_file")
            self.ledger.begin()
            self.ledger.put_decision(
                decision_id,
                "emitted",
                dispatch_id,
                doc.get("route") or doc.get("decision_type"),
                epoch,
                os.path.basename(source) if isinstance(source, str) else None,
                ADOPTED_REASON,
                now,
            )
            adopted += 1
        return adopted


def judge_health(doc: dict, running: bool, heartbeat_seconds: float, now: float) -> dict:
    """THE freshness rule (`status --json` -> `healthy`; the role asks for it): a process
    holds the lock, state.json says `running`, and it was written within 2 x heartbeat
    + 5 s (the daemon rewrites it at least every heartbeat)."""
    ts = parse_iso_utc(doc.get("timestamp_utc"))
    age = None if ts is None else round(now - ts, 3)
    fresh = age is not None and age <= 2 * heartbeat_seconds + 5
    return {
        "running": running,
        "state_age_s": age,
        "healthy": bool(running and fresh and doc.get("status") == "running"),
    }


class StateReport:
    """Counters, last ids and status: one log line per outcome, and state.json (small and
    bounded, rewritten when something changed, at most every STATE_MIN_INTERVAL, and at
    every heartbeat)."""

    def __init__(
        self, log: JsonLog, started_at: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.log = log
        self.monotonic = monotonic  # intervals; wall time only for timestamps
        self.counters: Dict[str, int] = {k: 0 for k in OUTCOMES}
        self.counters["errors"] = 0
        self.last_dispatch_id = ""
        self.last_decision_id = ""
        self.last_error = ""
        self.records_dir_ok = True
        self.write_problem = ""  # why requests or the ledger cannot be written now
        self.status = "starting"
        self.started_at = started_at
        self.last_write = 0.0  # monotonic: when state.json is next due
        self.last_write_wall = 0.0  # its timestamp_utc
        self.dirty = True
        # Requests written per route, all time (metrics requests_total; ledger meta).
        self.requests_by_route: Dict[str, int] = {}
        # Fields other parts add to state.json (ApprovalBook.state_fields).
        self.extra: Dict[str, Any] = {}

    def restore(self, ledger: Ledger, rebuilt: bool) -> None:
        raw = ledger.meta_get("counters")
        if raw and not rebuilt:
            with contextlib.suppress(ValueError, TypeError):
                saved = json.loads(raw)
                for key in self.counters:
                    if _is_int(saved.get(key)):
                        self.counters[key] = saved[key]
        self.last_dispatch_id = ledger.meta_get("last_dispatch_id") or ""
        self.last_decision_id = ledger.meta_get("last_decision_id") or ""
        raw = ledger.meta_get("requests_total")
        if raw and not rebuilt:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                saved = json.loads(raw)
                self.requests_by_route = {k: v for k, v in saved.items() if _is_int(v)}

    def rewind(self, ledger: Ledger) -> None:
        """A batch was rolled back: counters and last ids go back to the ledger's last
        commit (what really happened); the errors seen since are kept."""
        errors = self.counters["errors"]
        self.counters = {k: 0 for k in OUTCOMES}
        self.counters["errors"] = 0
        self.restore(ledger, rebuilt=False)
        self.counters["errors"] = max(errors, self.counters["errors"])
        self.dirty = True

    def meta(self) -> Dict[str, str]:
        """What the ledger keeps across restarts (committed with every batch)."""
        return {
            "counters": json.dumps(self.counters, sort_keys=True),
            "last_dispatch_id": self.last_dispatch_id,
            "last_decision_id": self.last_decision_id,
            "requests_total": json.dumps(self.requests_by_route, sort_keys=True),
        }

    def outcome(self, name: str, outcome: Outcome, event: Optional[str] = None) -> None:
        self.dirty = True
        if not outcome.log:
            return
        self.counters[outcome.outcome] = self.counters.get(outcome.outcome, 0) + 1
        level = "WARNING" if outcome.outcome in ("rejected", "unrouted", "stale") else "INFO"
        request = outcome.decision.request if outcome.decision is not None else None
        self.log.event(
            event or outcome.outcome,
            level=level,
            file=name,
            decision_id=outcome.decision_id,
            dispatch_id=outcome.dispatch_id,
            reason=outcome.reason or None,
            route=outcome.route,
            status=request["status"] if request is not None else None,
        )

    def emitted(self, decision: Decision) -> None:
        # Synthetic handoff checks never become last_dispatch_id (a published output).
        if not is_handoff(decision.decision_id):
            self.last_dispatch_id = decision.dispatch_id or ""
            self.last_decision_id = decision.decision_id
            if decision.route:
                count = self.requests_by_route.get(decision.route, 0)
                self.requests_by_route[decision.route] = count + 1

    def error(self, reason: str, level: str = "ERROR", **fields: Any) -> None:
        """A failure not caused by a record (disk, folder, refused reload)."""
        self.counters["errors"] += 1
        self.last_error = reason
        self.dirty = True
        self.log.event("error", level=level, reason=reason, **fields)

    def folder_problem(self, reason: str, folder: str) -> None:
        if self.records_dir_ok:  # said once, not on every pass while it lasts
            self.records_dir_ok = False
            self.error(reason, file=folder)

    def folder_usable(self, folder: str) -> None:
        self.records_dir_ok = True
        self.dirty = True
        self.log.event("recovered", reason=f"records folder {folder} is usable again")

    def doc(self, now: float, config: Config, index: FileIndex, watcher: str) -> dict:
        counters = dict(self.counters)
        return {
            "schema_version": SCHEMA_VERSION,
            "timestamp_utc": iso_ts(now),
            "status": self.status,
            "execution_mode": EXECUTION_MODE,
            "last_dispatch_id": self.last_dispatch_id,
            "last_decision_id": self.last_decision_id,
            "processed_count": sum(
                v for k, v in counters.items() if k in OUTCOMES and k != "pending"
            ),
            "counters": counters,
            "pending_count": index.pending_count(),
            "tracked_files": index.tracked,
            "pid": os.getpid(),
            "started_at": iso_ts(self.started_at),
            "config_digest": config.digest,
            "watcher": watcher,
            "version": VERSION,
            "records_dir_ok": self.records_dir_ok,
            "last_error": self.last_error[:300],
            **self.extra,
        }

    def next_write(self, heartbeat_seconds: float) -> float:
        due = self.last_write + heartbeat_seconds
        return min(due, self.last_write + STATE_MIN_INTERVAL) if self.dirty else due

    def write(
        self, now: float, config: Config, index: FileIndex, watcher: str, force: bool = False
    ) -> None:
        mono_now = self.monotonic()
        if not force and mono_now < self.next_write(config.heartbeat_seconds):
            return
        if self.status not in ("stopping", "stopped"):
            usable = self.records_dir_ok and not self.write_problem
            self.status = "running" if usable else "degraded"
        check_own_path(config.state_file)  # replaced by rename: refuse a FIFO left there
        write_file_durably(config.state_file, dump_json(self.doc(now, config, index, watcher)))
        self.last_write = mono_now
        self.last_write_wall = now  # the doc's timestamp_utc (health is judged on it)
        self.dirty = False


APPROVALS_SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
    dispatch_id TEXT PRIMARY KEY,
    route TEXT NOT NULL,
    state TEXT NOT NULL,
    issued_at REAL NOT NULL,
    expires_at REAL,
    supersedes TEXT,
    synthetic INTEGER NOT NULL DEFAULT 0
);
-- Open rows in issue order: new requests append at its end (cheap during a burst), and
-- the markers of open rows are looked for page by page along it.
CREATE INDEX IF NOT EXISTS approvals_open ON approvals(issued_at, dispatch_id)
    WHERE state = 'open';
CREATE INDEX IF NOT EXISTS approvals_supersedes ON approvals(supersedes)
    WHERE supersedes IS NOT NULL;
"""
# Ledger meta key: "1" once every request file in the folder has its approvals row.
APPROVALS_INDEXED = "approvals_indexed"
# The open state of a row, derived at query time (first match wins, as approval_state).
_OPEN_STATE_SQL = (
    "CASE WHEN EXISTS (SELECT 1 FROM approvals s WHERE s.supersedes = a.dispatch_id) "
    "THEN 'superseded' WHEN a.expires_at IS NOT NULL AND a.expires_at <= ? THEN 'expired' "
    "ELSE 'awaiting' END"
)


class ApprovalBook:
    """Which requests wait for a person (issue 10). One row per request in the ledger's
    `approvals` table (state `open`, `approved` or `not-required`; superseded, expired and
    awaiting are derived from the open rows at query time); memory holds only the counts.
    An idle pass costs one stat of the approvals folder. Open rows are re-checked for
    their marker when that folder's mtime changes and at every heartbeat (which also drops
    rows whose request file went away); the requests folder is listed only at a start
    after a crash, with a new ledger, and at the hourly full scan."""

    def __init__(
        self, config: Config, log: JsonLog, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.log = log
        self.monotonic = monotonic  # the heartbeat interval; expiries are wall time
        self.ledger: Optional[Ledger] = None
        self.readable: Optional[bool] = None  # None: not checked yet
        self.folder_key: Optional[Tuple[int, int]] = None  # (inode, mtime_ns) last checked
        self.last_check = 0.0  # monotonic
        self.dirty = True  # the counts below need recomputing
        self.counts: Dict[Tuple[str, str], int] = {}  # (route, state) -> requests
        self.oldest_awaiting: Optional[float] = None  # issued_at of the oldest awaiting
        self.next_expiry: Optional[float] = None
        self.open_rows: List[dict] = []  # the newest open requests, for state.json

    # ---------------------------------------------------------------- start
    def attach(self, ledger: Ledger, resync: bool) -> None:
        """Open the table; list the requests folder when the ledger may lack rows (after
        a crash, a new ledger, or a ledger from before this table)."""
        self.ledger = ledger
        # Request files taken away while stopped are dropped at the first heartbeat, not
        # before READY (a stat per open request).
        self.last_check = self.monotonic()
        ledger.db.executescript(APPROVALS_SCHEMA)
        if resync or ledger.meta_get(APPROVALS_INDEXED) != "1":
            self.sync()
            ledger.begin()
            ledger.meta_set(APPROVALS_INDEXED, "1")
            ledger.commit()
        # The first look at the approvals folder waits for the first state write (refresh),
        # so that `started` stays the first line of a run in the log.

    def sync(self) -> None:
        """Rows for request files the table lacks; rows of files gone are dropped."""
        assert self.ledger is not None
        db = self.ledger.db
        seen = 0
        try:
            with os.scandir(self.config.requests_dir) as entries:
                chunk: List[str] = []
                for entry in entries:
                    if is_record_name(entry.name):
                        chunk.append(entry.name[:-5])
                        if len(chunk) >= LOOKUP_CHUNK:
                            seen += self._index(chunk)
                            chunk = []
                seen += self._index(chunk)
        except FileNotFoundError:
            pass
        self.ledger.commit()
        total = db.execute("SELECT count(*) FROM approvals").fetchone()[0]
        if total > seen:
            self._drop_gone(open_only=False)
        self.dirty = True

    def _index(self, ids: List[str]) -> int:
        if not ids:
            return 0
        assert self.ledger is not None
        marks = ",".join("?" * len(ids))
        known = {
            r[0]
            for r in self.ledger.db.execute(
                f"SELECT dispatch_id FROM approvals WHERE dispatch_id IN ({marks})", ids
            )
        }
        for dispatch_id in ids:
            if dispatch_id not in known:
                doc = read_json_quiet(os.path.join(self.config.requests_dir, dispatch_id + ".json"))
                facts = request_facts(doc)
                if facts is None or facts.dispatch_id != dispatch_id:
                    continue  # not a request of ours: the reconcile logs it
                self.ledger.begin()
                self._put(facts)
                known.add(dispatch_id)
        return len(known)

    # ---------------------------------------------------------------- changes
    def note(self, request: Optional[dict], replace: bool) -> None:
        """A request of an emitted decision, inside the batch's ledger transaction.
        `replace` False: the file was already there (adopted), keep what is known."""
        facts = request_facts(request)
        if facts is not None and self.ledger is not None:
            self._put(facts, replace)
            self.dirty = True

    def _put(self, facts: RequestFacts, replace: bool = False) -> None:
        assert self.ledger is not None
        verb = "REPLACE" if replace else "IGNORE"
        self.ledger.db.execute(
            f"INSERT OR {verb} INTO approvals (dispatch_id, route, state, issued_at, "
            "expires_at, supersedes, synthetic) VALUES (?,?,?,?,?,?,?)",
            (
                facts.dispatch_id,
                facts.route,
                "open" if facts.needs_approval else "not-required",
                facts.issued_at,
                facts.expires_at,
                facts.supersedes,
                int(facts.synthetic),
            ),
        )

    def marker(self, dispatch_id: str) -> str:
        return os.path.join(self.config.approvals_dir, f"{dispatch_id}.approved.json")

    def _folder_key(self) -> Optional[Tuple[int, int]]:
        """(inode, mtime_ns) of the approvals folder; None when it cannot be read."""
        folder = self.config.approvals_dir
        try:
            st = os.stat(folder)
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "not a folder", folder)
            if not os.access(folder, os.R_OK | os.X_OK):
                raise PermissionError(errno.EACCES, "not readable", folder)
        except OSError as exc:
            if self.readable is not False:  # once per streak, not on every pass
                self.log.event(
                    "approvals-unreadable",
                    level="WARNING",
                    file=folder,
                    reason=f"approvals folder unusable ({exc.strerror or exc}); requests "
                    "count as awaiting until it can be read",
                )
                self.readable = False
                self.dirty = True
            return None
        if self.readable is False:
            self.log.event("recovered", reason=f"approvals folder {folder} is readable again")
        if self.readable is not True:
            self.readable = True
            self.dirty = True
        return (st.st_ino, st.st_mtime_ns)

    def tick(self, now: float, force: bool = False) -> None:
        """Every loop pass: one stat of the approvals folder. Markers of open rows are
        looked for when it changed (or its last look was within the racy second), at the
        heartbeat, and when forced; an expiry that passed only needs new counts."""
        mono = self.monotonic()
        heartbeat = mono - self.last_check >= self.config.heartbeat_seconds
        key = self._folder_key()
        changed = key is not None and key != self.folder_key
        if force or heartbeat or changed:
            if key is not None:
                self._look_for_markers()
            if heartbeat:
                self._drop_gone(open_only=True)
                self.last_check = mono
            # A marker added within the folder's mtime granularity would not change it:
            # look again next pass until the mtime is older than a second.
            racy = key is not None and time.time_ns() - key[1] < 1_000_000_000
            self.folder_key = None if racy else key
        if self.next_expiry is not None and now >= self.next_expiry:
            self.dirty = True

    def _ids(self, open_only: bool = True) -> Iterable[List[str]]:
        """Dispatch ids of the rows (open ones only by default), LOOKUP_CHUNK at a time."""
        assert self.ledger is not None
        if not open_only:
            after = ""
            while True:
                ids = [
                    r[0]
                    for r in self.ledger.db.execute(
                        "SELECT dispatch_id FROM approvals WHERE dispatch_id > ? "
                        "ORDER BY dispatch_id LIMIT ?",
                        (after, LOOKUP_CHUNK),
                    )
                ]
                if not ids:
                    return
                after = ids[-1]
                yield ids
        position = (-1.0, "")
        while True:
            rows = self.ledger.db.execute(
                "SELECT issued_at, dispatch_id FROM approvals INDEXED BY approvals_open "
                "WHERE state = 'open' AND (issued_at, dispatch_id) > (?, ?) "
                "ORDER BY issued_at, dispatch_id LIMIT ?",
                (*position, LOOKUP_CHUNK),
            ).fetchall()
            if not rows:
                return
            position = rows[-1]
            yield [r[1] for r in rows]

    def _look_for_markers(self) -> None:
        approved = [i for ids in self._ids() for i in ids if os.path.lexists(self.marker(i))]
        self._update("UPDATE approvals SET state = 'approved' WHERE dispatch_id = ?", approved)

    def _drop_gone(self, open_only: bool) -> None:
        """Rows whose request file left the requests folder (the consumer or an operator
        took it away; validate-handoff removes its own)."""
        assert self.ledger is not None
        folder = self.config.requests_dir
        gone = [
            i
            for ids in self._ids(open_only)
            for i in ids
            if not os.path.lexists(os.path.join(folder, i + ".json"))
        ]
        self._update("DELETE FROM approvals WHERE dispatch_id = ?", gone)

    def _update(self, sql: str, ids: List[str]) -> None:
        if not ids:
            return
        assert self.ledger is not None
        self.ledger.begin()
        self.ledger.db.executemany(sql, [(i,) for i in ids])
        self.ledger.commit()
        self.dirty = True

    # ---------------------------------------------------------------- counts
    def refresh(self, now: float) -> bool:
        """Recompute the counts when something changed; True when it did."""
        if self.ledger is None:
            return False
        if self.readable is None:
            self.tick(now, force=True)
        if not self.dirty:
            return False
        self.dirty = False
        db = self.ledger.db
        counts: Dict[Tuple[str, str], int] = {}
        for route, state, n in db.execute(
            "SELECT route, state, count(*) FROM approvals WHERE state != 'open' "
            "AND synthetic = 0 GROUP BY route, state"
        ):
            counts[(route, state)] = n
        oldest = None
        for route, state, n, first in db.execute(
            f"SELECT route, {_OPEN_STATE_SQL} AS st, count(*), min(issued_at) "
            "FROM approvals a WHERE state = 'open' AND synthetic = 0 GROUP BY route, st",
            (now,),
        ):
            counts[(route, state)] = n
            if state == "awaiting" and (oldest is None or first < oldest):
                oldest = first
        self.counts, self.oldest_awaiting = counts, oldest
        self.next_expiry = db.execute(
            "SELECT min(expires_at) FROM approvals WHERE state = 'open' AND synthetic = 0 "
            "AND expires_at > ?",
            (now,),
        ).fetchone()[0]
        self.open_rows = [
            {
                "dispatch_id": dispatch_id,
                "route": route,
                "approval": state,
                "timestamp_utc": iso_ts(issued),
                "expires_at": None if expires is None else iso_ts(expires),
            }
            for dispatch_id, route, state, issued, expires in db.execute(
                f"SELECT dispatch_id, route, {_OPEN_STATE_SQL}, issued_at, expires_at "
                "FROM approvals a INDEXED BY approvals_open WHERE state = 'open' "
                "AND synthetic = 0 ORDER BY issued_at DESC LIMIT ?",
                (now, OPEN_LISTED),
            )
        ]
        return True

    def by_route(self, state: str, routes: Iterable[str]) -> Tuple[Tuple[str, int], ...]:
        names = set(routes) | {r for r, s in self.counts if s == state}
        return tuple((r, self.counts.get((r, state), 0)) for r in sorted(names))

    def state_fields(self) -> dict:
        """What state.json says about approvals (status adds the ages)."""
        totals = {s: 0 for s in APPROVAL_STATES}
        for (_route, state), n in self.counts.items():
            totals[state] = totals.get(state, 0) + n
        return {
            "approvals": totals,
            "approvals_dir_readable": bool(self.readable),
            "oldest_awaiting_timestamp_utc": None
            if self.oldest_awaiting is None
            else iso_ts(self.oldest_awaiting),
            "requests_open": self.open_rows,
        }


class MetricsReport:
    """The Prometheus textfile (issue 10): rendered by the pure `render_metrics`, written
    temp file + fsync + rename + folder fsync (never partial, readable by node_exporter),
    only when a value other than the two time-derived ones changed, or at the heartbeat.
    A path that cannot be written is reported once per streak and retried; dispatching
    never waits for it."""

    def __init__(self, config: Config, report: StateReport) -> None:
        self.config = config
        self.report = report
        self.written: Optional[MetricsSnapshot] = None  # timeless() of the last write
        # Intervals (heartbeat, retry) on the monotonic clock: `mono` arguments below.
        self.last_write = 0.0
        self.failing = False
        self.retry_at = 0.0

    def snapshot(
        self, approvals: ApprovalBook, watcher: str, last_pass: float, now: float
    ) -> MetricsSnapshot:
        report, routes = self.report, self.config.routes
        requests = set(routes) | set(report.requests_by_route)
        oldest = approvals.oldest_awaiting
        health = judge_health(
            {"status": report.status, "timestamp_utc": iso_ts(report.last_write_wall)},
            report.status not in ("stopping", "stopped"),
            self.config.heartbeat_seconds,
            now,
        )
        return MetricsSnapshot(
            version=VERSION,
            watcher=watcher,
            healthy=health["healthy"],
            heartbeat_seconds=self.config.heartbeat_seconds,
            records_total=tuple((k, report.counters.get(k, 0)) for k in sorted(OUTCOMES)),
            requests_total=tuple((r, report.requests_by_route.get(r, 0)) for r in sorted(requests)),
            awaiting=approvals.by_route("awaiting", routes),
            expired=approvals.by_route("expired", routes),
            approvals_dir_readable=bool(approvals.readable),
            last_pass=last_pass,
            oldest_awaiting_s=0.0 if oldest is None else max(0.0, now - oldest),
        )

    def due(self) -> float:
        """When the next write is due while nothing changes (heartbeat, or a retry)."""
        due = self.last_write + self.config.heartbeat_seconds
        return min(due, self.retry_at) if self.failing else due

    def write(self, snap: MetricsSnapshot, mono: float, force: bool = False) -> bool:
        """Write when due; True when the file has just become unwritable (newly reported)."""
        changed = self.written != snap.timeless()
        if not (force or changed or mono >= self.due()):
            return False
        if self.failing and not force and mono < self.retry_at:
            return False  # retried every poll_seconds, not on every pass
        path = self.config.metrics_textfile
        try:
            self._replace(path, render_metrics(snap).encode())
        except OSError as exc:
            self.retry_at = mono + min(self.config.poll_seconds, self.config.heartbeat_seconds)
            if not self.failing:
                self.failing = True
                self.report.error(
                    f"metrics textfile {path}: cannot write ({exc.strerror or exc}); "
                    "retrying, dispatching goes on",
                    level="WARNING",
                    file=path,
                )
                return True
            return False
        if self.failing:
            self.failing = False
            self.report.log.event("recovered", file=path, reason="metrics textfile written again")
        self.written = snap.timeless()
        self.last_write = mono
        return False

    @staticmethod
    def _replace(path: str, data: bytes) -> None:
        fd, tmp = write_temp(path, data, 0o644)
        try:
            # 0644 whatever the umask (the unit has UMask=0027): node_exporter runs as
            # another user and must read it.
            os.fchmod(fd, 0o644)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(fd)
        try:
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fsync_dir(os.path.dirname(path))


class ReplayInbox:
    """`replay` asks the running daemon instead of writing behind its back: the command
    drops <state dir>/replay/<decision_id>.ask, sends SIGUSR1 and waits for
    <decision_id>.answer (JSON: ok, dispatch_id, request, status or error), which the
    daemon writes after doing the replay through its own write path (Daemon.replay)."""

    ASK = ".ask"
    ANSWER = ".answer"

    def __init__(self, config: Config) -> None:
        self.folder = os.path.join(os.path.dirname(config.state_file), "replay")
        self.empty_mtime_ns: Optional[int] = None  # listed empty at this folder mtime

    def asks(self) -> List[str]:
        """decision ids asked for. An idle pass costs one stat: the folder is listed only
        when its mtime changed since it was last seen empty."""
        try:
            mtime_ns = os.stat(self.folder).st_mtime_ns
            if mtime_ns == self.empty_mtime_ns:
                return []
            with os.scandir(self.folder) as entries:
                names = [e.name for e in entries if e.name.endswith(self.ASK)]
        except FileNotFoundError:
            return []
        # Trust an empty listing only for an mtime older than a second (a file added in
        # the same timestamp tick would not change it).
        trusted = not names and time.time_ns() - mtime_ns > 1_000_000_000
        self.empty_mtime_ns = mtime_ns if trusted else None
        ids = [n[: -len(self.ASK)] for n in sorted(names)]
        return [i for i in ids if DECISION_ID_RE.match(i)]

    def answer(self, decision_id: str, answer: dict) -> None:
        base = os.path.join(self.folder, decision_id)
        write_file_durably(base + self.ANSWER, dump_json(answer), sync_dir=False)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(base + self.ASK)

    # --- the operator's side
    def ask(self, decision_id: str, owner: Optional[Tuple[int, int]]) -> None:
        if not os.path.isdir(self.folder):
            os.makedirs(self.folder, mode=0o750, exist_ok=True)
            if owner is not None:
                os.chown(self.folder, *owner)
        base = os.path.join(self.folder, decision_id)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(base + self.ANSWER)
        write_file_durably(base + self.ASK, dump_json({"decision_id": decision_id}), owner=owner)

    def take_answer(self, decision_id: str) -> Optional[dict]:
        path = os.path.join(self.folder, decision_id + self.ANSWER)
        doc = read_json_quiet(path)
        if doc is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)
        return doc

    def withdraw(self, decision_id: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self.folder, decision_id + self.ASK))


class Daemon:
    """The loop that wires the parts: owns the lock, the ledger and the signals; each pass
    asks the Watcher which names to look at and runs read -> judge -> decide -> apply on
    each (judge_record_file, then apply()); the Batch makes the results durable, the
    StateReport tells the world."""

    def __init__(
        self,
        config: Config,
        log: JsonLog,
        clock: Callable[[], float] = time.time,
        use_inotify: bool = True,
        owner: Optional[Tuple[int, int]] = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.log = log
        self.clock = clock  # wall time: timestamps, record ages, retention
        self.mono = monotonic  # intervals: polls, pings, heartbeats, retries
        self.owner = owner  # (uid, gid) for files created when an operator runs as root
        self.watcher = Watcher(config, log, use_inotify)
        self.report = StateReport(log, clock(), monotonic)
        self.replays = ReplayInbox(config)
        self.approvals = ApprovalBook(config, log, monotonic)
        self.metrics = MetricsReport(config, self.report)
        self.last_pass = 0.0  # wall clock at the end of the last loop pass (metrics)
        self.notifier = Notifier()
        self.ledger: Optional[Ledger] = None
        self.index: Optional[FileIndex] = None
        self.batch: Optional[Batch] = None
        self.lock_fd: Optional[int] = None
        self.last_emit: Dict[str, LastEmit] = {}
        self.last_poll = 0.0
        # A failed write (disk full, requests folder unwritable, ledger locked) is tried
        # again in-process at this monotonic time, the pause doubling up to a minute.
        self.write_retry_at = 0.0
        self.write_pause = 0.0
        self.stop_requested = False
        self.reload_requested = False
        self.poll_requested = False

    # ---------------------------------------------------------------- start / stop
    def start(self, hold_lock: bool = True) -> None:
        cfg = self.config
        for folder in (
            os.path.dirname(cfg.state_file),
            cfg.requests_dir,
            os.path.dirname(cfg.ledger_file),
            self.replays.folder,
        ):
            if not os.path.isdir(folder):
                os.makedirs(folder, mode=0o750, exist_ok=True)
                if self.owner is not None:  # an operator command run as root
                    os.chown(folder, *self.owner)
        if hold_lock:
            self.lock_fd = acquire_lock(cfg.lock_file)
        check_own_path(cfg.state_file)
        for folder in (cfg.requests_dir, os.path.dirname(cfg.state_file), self.replays.folder):
            remove_stale_temps(folder)
        # SQLite blocks while it waits for a lock: never as long as a watchdog interval.
        watchdog = self.notifier.watchdog_s
        busy = LEDGER_BUSY_SECONDS if watchdog is None else min(LEDGER_BUSY_SECONDS, watchdog / 4)
        self.ledger, rebuilt = Ledger.open_or_recover(
            cfg.ledger_file, self.log, self.wait, LEDGER_OPEN_WAIT, busy
        )
        self.index = FileIndex(self.ledger)
        self.batch = Batch(cfg, self.ledger, self.owner)
        self.report.restore(self.ledger, rebuilt)
        # After a clean stop every request on disk has its ledger row (requests are made
        # durable before the rows, and stop() commits the last batch): the requests folder
        # only needs reconciling after a crash or with a new ledger.
        clean = not rebuilt and self.ledger.meta_get(CLEAN_STOP) == "1"
        if not clean:
            self.batch.reconcile(self.log, self.clock())
        self.ledger.begin()
        self.ledger.meta_set(CLEAN_STOP, "0")
        self.ledger.commit()
        self.index.load()
        self.last_emit = self.ledger.last_emits()
        self.approvals.attach(self.ledger, resync=not clean)
        self.watcher.arm()
        release_free_memory()  # the compiler's scratch for this file, before the first pass

    def wait(self, seconds: float) -> None:
        """Sleep, feeding the watchdog (a wait is never longer than WatchdogSec)."""
        until = self.mono() + seconds
        while True:
            self.notifier.ping(self.mono())
            left = until - self.mono()
            if left <= 0:
                return
            due = self.notifier.ping_due()
            step = left if due is None else max(0.01, min(left, due - self.mono()))
            time.sleep(step)

    def stop(self) -> None:
        if self.ledger is not None:
            try:
                self.finish_batch()
                if self.batch is not None and not self.batch.failed:
                    self.ledger.begin()
                    self.ledger.meta_set(CLEAN_STOP, "1")
                    self.ledger.commit()
            except (OSError, sqlite3.Error) as exc:
                # Still failing (disk full): the next start reconciles the requests folder.
                self.log.event("error", level="ERROR", reason=f"stop: cannot write: {exc}")
                if self.batch is not None:
                    self.batch.failed = True
                    self.batch.writes.abort()
            self.ledger.close()
            self.ledger = None
        self.watcher.close()
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    # ---------------------------------------------------------------- passes
    def scan(self, full: bool = False, names: Optional[Iterable[str]] = None) -> int:
        """One pass. `names`: only these (inotify); `full`: stat every file; else the cheap
        safety net (folder mtime, listing only when it changed, watched files)."""
        now = self.clock()
        if names is not None:
            todo = [n for n in names if is_record_name(n)]
        else:
            listed = self._safety_net(full, now)
            if listed is None:
                return 0
            todo = listed
        handled = 0
        for name in self._oldest_first(todo):
            if self.stop_requested:
                break  # SIGTERM: the write in hand is done; the rest waits for the next start
            handled += self.consider(name, now)
            assert self.batch is not None
            if self.batch.full:
                self.finish_batch()
            if handled and handled % 128 == 0:
                self.notifier.ping(self.mono())
        self.finish_batch()
        self._note_remade()
        return handled

    def _note_remade(self) -> None:
        assert self.batch is not None
        if self.batch.remade:
            self.batch.remade = 0
            self.report.error(
                f"requests folder {self.config.requests_dir} was missing; re-created (0750)",
                level="WARNING",
            )

    def _safety_net(self, full: bool, now: float) -> Optional[List[str]]:
        """Names the poll-timer pass looks at: the listing (when the folder changed, or
        `full`) plus the pending and rejected files. None: the folder is unusable."""
        assert self.index is not None
        records_dir = self.config.records_dir
        try:
            mtime_ns = self.watcher.folder_mtime_ns()
        except OSError as exc:
            self.report.folder_problem(f"records folder unusable: {exc}", records_dir)
            return None
        # A folder that failed stays suspect until it can be listed again; a chmod does not
        # change its mtime, so list it on every pass until then.
        recovering = not self.report.records_dir_ok
        if self.watcher.rewatch:
            self.watcher.rewatch = False
            self.watcher.arm()
            full = True
        todo: List[str] = []
        if full or recovering or mtime_ns != self.watcher.dir_mtime_ns:
            try:
                todo = self.watcher.changed_names(self.index, full or recovering, now)
            except OSError as exc:
                self.report.folder_problem(f"cannot list records folder: {exc}", records_dir)
                return None
            if recovering:
                self.report.folder_usable(records_dir)
                self.watcher.arm()  # the old watch (if any) may belong to a replaced folder
            self.watcher.listed(mtime_ns, full or recovering, self.mono())
        todo.extend(self.index.watched)  # duplicates are dropped by _oldest_first
        return todo

    def _oldest_first(self, names: List[str]) -> List[str]:
        """Oldest first, so coalescing follows decision order. A first pass over 100 000
        files must not hold a stat result (or a sort key tuple) per file: one int per
        name packs (mtime, position)."""
        if len(names) < 2:
            return names
        # In place where it can be: no second list of names, and the packed ints are
        # replaced one by one by the names they point to.
        names.sort()
        kept = 0
        for name in names:
            if kept == 0 or name != names[kept - 1]:
                names[kept] = name
                kept += 1
        del names[kept:]
        packed: List[Any] = []
        shift = len(names).bit_length()
        for pos, name in enumerate(names):
            try:
                mtime_ns = os.lstat(os.path.join(self.config.records_dir, name)).st_mtime_ns
            except OSError:
                mtime_ns = 0  # gone, or consider() stats again and reports why
            packed.append((max(mtime_ns, 0) << shift) | pos)
        packed.sort()
        mask = (1 << shift) - 1
        for i, p in enumerate(packed):
            packed[i] = names[p & mask]
        return packed

    def consider(self, name: str, now: float) -> int:
        """read -> judge -> decide -> apply for one name. Returns 1 if it was handled."""
        assert self.index is not None and self.ledger is not None and self.batch is not None
        path = os.path.join(self.config.records_dir, name)
        try:
            sig = FileSig.of(os.lstat(path))
        except FileNotFoundError:
            self.index.forget(name, now)
            return 0
        except OSError as exc:
            self.apply(name, NO_SIG, Outcome("rejected", f"cannot stat: {exc.strerror}"), now)
            return 1
        known = self.index.lookup(name)
        try:
            judged = judge_record_file(
                self.config,
                name,
                sig,
                known,
                now,
                prior_of=self.ledger.prior,
                existing=self.batch.existing,
                last_emit=self.last_emit,
                awaits_approval=lambda dispatch_id: awaits_approval(self.config, dispatch_id, now),
            )
            if judged is None:
                return 0
            self.apply(name, judged.sig, judged.outcome, now, known)
        except sqlite3.Error:
            raise  # the ledger is broken: exit non-zero and let systemd restart us
        except OSError as exc:
            # Disk full, requests folder unwritable...: not the record's fault. Leave it
            # unhandled: the daemon is degraded and tries again (the listing is forced).
            self.watcher.dir_mtime_ns = None
            self.report.error(f"{name}: {exc}", file=name)
            self._writes_failing(f"cannot write the request for {name}: {exc}")
            return 0
        except Exception as exc:  # a bug must not stop the daemon; it is logged and counted
            reason = f"internal error: {type(exc).__name__}: {exc}"
            self.report.counters["errors"] += 1
            self.report.last_error = f"{name}: {type(exc).__name__}: {exc}"
            self.apply(name, sig, Outcome("rejected", reason), now, known)
        return 1

    def apply(
        self,
        name: str,
        sig: FileSig,
        outcome: Outcome,
        now: float,
        known: Optional[KnownFile] = None,
        event: Optional[str] = None,
    ) -> None:
        """Write what was judged: the request (staged, durable at finish_batch), the
        decision row, the file row, the counters and the log line."""
        assert self.ledger is not None and self.index is not None and self.batch is not None
        decision = outcome.decision
        if outcome.write:
            assert decision is not None
            self.batch.stage(decision)  # the request first; the ledger rows only after it
        self.ledger.begin()
        if decision is not None:
            self.ledger.put_decision(
                decision.decision_id,
                outcome.outcome,
                outcome.dispatch_id,
                decision.route,
                decision.decision_epoch,
                name,
                outcome.reason,
                now,
            )
            if outcome.outcome == "emitted":
                self._note_emit(decision)
                self.approvals.note(decision.request, replace=outcome.write)
        elif outcome.source == "prior" and outcome.log and outcome.outcome in DISPATCHED_OUTCOMES:
            assert outcome.decision_id is not None
            # An adopted request counted now, once: later rewrites of the file are not.
            self.ledger.settle_adopted(outcome.decision_id, COUNTED_REASON)
        self.index.put(name, sig, outcome, known, now)
        self.report.outcome(name, outcome, event)

    def _note_emit(self, decision: Decision) -> None:
        if not is_handoff(decision.decision_id) and decision.route and decision.dispatch_id:
            last = self.last_emit.get(decision.route)
            if last is None or decision.decision_epoch >= last.epoch:
                self.last_emit[decision.route] = LastEmit(
                    decision.decision_epoch, decision.dispatch_id
                )
        self.report.emitted(decision)

    def finish_batch(self) -> None:
        batch, ledger = self.batch, self.ledger
        if batch is not None and ledger is not None and (ledger.in_tx or len(batch.writes)):
            batch.finish(self.report.meta())

    def prune(self) -> None:
        assert self.ledger is not None
        self.ledger.begin()
        removed = self.ledger.prune(self.clock(), self.config.ledger_retention_seconds)
        self.ledger.commit()
        if removed:
            self.log.event("pruned", level="DEBUG", reason=f"pruned {removed} ledger rows")

    # ---------------------------------------------------------------- replay
    def replay(self, decision_id: str) -> dict:
        """Dispatch a decision the rules held back (stale, skipped, unrouted, coalesced),
        through the same checks and write path as every other request. Returns the answer
        for the operator."""
        assert self.ledger is not None and self.batch is not None and self.index is not None
        now = self.clock()
        prior = self.ledger.prior(decision_id)
        refusal = judge_replay(decision_id, prior, None, None)
        if refusal is not None or prior is None:
            return {"ok": False, "error": refusal}
        name = prior.file or ""
        path = os.path.join(self.config.records_dir, name)
        try:
            sig = FileSig.of(os.lstat(path))
            verdict = judge_file(sig, name, self.config, None, now, look_again=True)
            if verdict.outcome is not None:
                raise RecordRejected(verdict.outcome.reason)
            data, sig = read_record_bytes(path, self.config.max_record_bytes)
            valid = read_valid_record(data)
        except (RecordRejected, OSError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
            return {"ok": False, "error": f"cannot replay {decision_id}: record {path}: {reason}"}
        decision = decide(
            valid,
            record_path=path,
            mtime=sig.mtime,
            config=self.config,
            now=now,
            last_emit={},
            force=True,
        )
        existing = self.batch.existing(decision.dispatch_id) if decision.dispatch_id else None
        refusal = judge_replay(decision_id, prior, valid.decision_id, existing)
        if refusal is None and decision.outcome != "emitted":
            refusal = f"cannot replay {decision_id}: {decision.reason}"
        if refusal is not None:
            return {"ok": False, "error": refusal}
        outcome = Outcome.of_decision(decision)._replace(
            reason=f"replayed by operator (was {prior.outcome})"
        )
        self.apply(name, sig, outcome, now, self.index.lookup(name), event="replayed")
        self.finish_batch()
        request = decision.request or {}
        return {
            "ok": True,
            "dispatch_id": decision.dispatch_id,
            "request": self.batch.target(decision.dispatch_id or ""),
            "status": request.get("status"),
        }

    def answer_replays(self) -> None:
        for decision_id in self.replays.asks():
            try:
                answer = self.replay(decision_id)
            except (OSError, sqlite3.Error):
                raise
            except Exception as exc:  # a bug answers the operator instead of stopping us
                answer = {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}
            self.replays.answer(decision_id, answer)

    # ---------------------------------------------------------------- state.json
    def write_state(self, force: bool = False) -> None:
        assert self.index is not None
        now = self.clock()
        self.last_pass = self.last_pass or now
        if self.ledger is not None and self.approvals.refresh(now):
            self.report.extra = self.approvals.state_fields()
            self.report.dirty = True
        before = self.report.last_write
        self.report.write(now, self.config, self.index, self.watcher.mode, force)
        # The metrics file follows state.json's cadence (a burst rewrites it at most every
        # STATE_MIN_INTERVAL, not per batch), its own heartbeat and its retries.
        mono = self.mono()
        if self.report.last_write == before and mono < self.metrics.due():
            return
        snap = self.metrics.snapshot(self.approvals, self.watcher.mode, self.last_pass, now)
        if self.metrics.write(snap, mono, force):
            # The metrics file just became unwritable: status says so now, not a pass later.
            self.report.write(now, self.config, self.index, self.watcher.mode, force=True)

    # ---------------------------------------------------------------- loop
    def reload(self) -> None:
        try:
            new = load_config(self.config.path)
        except ConfigError as exc:
            self.report.error(f"reload refused: {exc}; keeping the running config")
            return
        if new.paths() != self.config.paths():
            self.report.error(
                "reload refused: root, records, requests, state, ledger or log path "
                "changed; restart the service for that; keeping the running config"
            )
            return
        self.config = new
        self.watcher.config = new
        self.approvals.config = new
        self.metrics.config = new
        if self.batch is not None:
            self.batch.config = new
        self.log.reconfigure(new.log_level, new.log_max_bytes, new.log_backup_count)
        self.report.dirty = True
        self.log.event("config-reloaded", config_digest=new.digest, routes=sorted(new.routes))

    def run_forever(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old_wakeup = signal.set_wakeup_fd(wake_w)

        def on_stop(_sig: int, _frm: Any) -> None:
            self.stop_requested = True

        def on_hup(_sig: int, _frm: Any) -> None:
            self.reload_requested = True

        def on_usr1(_sig: int, _frm: Any) -> None:
            self.poll_requested = True

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)
        signal.signal(signal.SIGUSR1, on_usr1)
        try:
            assert self.index is not None
            self.log.event(
                "started",
                pid=os.getpid(),
                config=self.config.path,
                config_digest=self.config.digest,
                watcher=self.watcher.mode,
                tracked_files=self.index.tracked,
                version=VERSION,
            )
            # READY only after the first pass: "ready" means every file present at start
            # has an outcome (or is pending) and state.json is fresh. That pass lists the
            # folder (new and replaced files); the stat of every file, for files edited in
            # place while we were stopped, follows right after READY.
            # A write failure in the first pass (disk full) still ends in READY, reported
            # degraded: exiting would only run into the unit's start limit.
            self._guarded(self.scan)
            self.report.status = "running"
            self._guarded(lambda: self.write_state(force=True))
            self.notifier.send(
                f"READY=1\nSTATUS=watching {self.config.records_dir}\nMAINPID={os.getpid()}"
            )
            self.notifier.ping(self.mono(), force=True)
            self._guarded(self._after_ready)
            release_free_memory()
            self.last_poll = self.mono()
            while not self.stop_requested:
                timeout = self._next_timeout()
                fd = self.watcher.fd
                fds = [wake_r] + ([fd] if fd is not None else [])
                try:
                    ready, _, _ = select.select(fds, [], [], timeout)
                except InterruptedError:
                    ready = []
                if wake_r in ready:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(wake_r, 512):
                            pass
                if self.stop_requested:
                    break
                if self.reload_requested:
                    self.reload_requested = False
                    self.notifier.send("RELOADING=1")
                    self.reload()
                    self.notifier.send("READY=1")
                inotify_ready = fd is not None and fd in ready
                self._guarded(lambda: self._tick(inotify_ready))  # noqa: B023 (called at once)
                self.notifier.ping(self.mono())
        finally:
            self.notifier.send("STOPPING=1")
            self.report.status = "stopping"
            self.stop()
            self.report.status = "stopped"
            with contextlib.suppress(OSError, AssertionError):
                self.write_state(force=True)
            self.log.event("stopped", pid=os.getpid())
            signal.set_wakeup_fd(old_wakeup)
            os.close(wake_r)
            os.close(wake_w)

    def _after_ready(self) -> None:
        self.scan(full=True)
        self.prune()
        self.answer_replays()

    def _guarded(self, step: Callable[[], Any]) -> None:
        """Run one step of the loop; a failed write (disk full, requests folder gone or
        unwritable, ledger locked) keeps the daemon up, degraded, retrying. A corrupt
        ledger still ends the process (the next start moves it aside)."""
        try:
            step()
        except (OSError, sqlite3.Error) as exc:
            if is_corrupt(exc) or isinstance(exc, UnsafeFile):
                raise
            if self.batch is not None:
                self.batch.failed = True  # requests may be on disk the ledger lacks
                self.batch.writes.abort()
            if self.ledger is not None:
                self.ledger.rollback()
            self._writes_failing(f"cannot write: {exc}")

    def _writes_failing(self, reason: str) -> None:
        """Degraded until a retry succeeds; the pause grows 1, 2, 4 ... 60 s."""
        self.write_pause = min(max(1.0, self.write_pause * 2), WRITE_RETRY_MAX)
        self.write_retry_at = self.mono() + self.write_pause
        self.watcher.dir_mtime_ns = None
        if reason != self.report.write_problem:
            self.report.error(f"{reason}; trying again in {self.write_pause:g} s")
        self.report.write_problem = reason
        self.report.dirty = True
        with contextlib.suppress(OSError):
            self.write_state(force=True)

    def _retry_writes(self) -> None:
        """The retry after a failed write: requests written before the failure get their
        ledger rows (reconcile), memory goes back to what the ledger says, and every file
        is looked at again."""
        assert self.batch is not None and self.ledger is not None and self.index is not None
        problem = self.batch.usable()
        if problem is not None:
            self._writes_failing(problem)
            return
        if self.batch.failed:
            self.batch.reconcile(self.log, self.clock())
            self.batch.failed = False
        self.report.rewind(self.ledger)
        self.index.load()
        self.last_emit = self.ledger.last_emits()
        was = self.report.write_problem
        self.report.write_problem = ""
        self.scan(full=True)
        if self.report.write_problem:
            return  # failed again in this pass (a request that could not be written)
        self.write_pause = 0.0
        self.log.event("recovered", reason=f"writes work again (after: {was})")
        self.answer_replays()

    def _tick(self, inotify_ready: bool) -> None:
        assert self.index is not None and self.batch is not None
        now, mono = self.clock(), self.mono()
        handled = 0
        if self.report.write_problem:
            if inotify_ready and self.watcher.inotify is not None:
                self.watcher.drain()  # the retry lists the whole folder anyway
            if self.poll_requested or mono >= self.write_retry_at:
                self.poll_requested = False
                self.last_poll = mono
                self._retry_writes()
            self.write_state()
            return
        if inotify_ready and self.watcher.inotify is not None:
            names, overflow = self.watcher.drain()
            if overflow:
                handled += self.scan(full=True)
            elif names:
                handled += self.scan(names=names)
        retry = self.index.next_retry()
        # A deadline further away than a settle wait: the wall clock stepped back.
        pending_due = retry is not None and not 0 < retry - now <= self._settle_horizon()
        full = False
        if self.poll_requested or mono - self.last_poll >= self.config.poll_seconds or pending_due:
            self.poll_requested = False
            self.last_poll = mono
            full = mono - self.watcher.last_full_scan >= FULL_SCAN_SECONDS
            problem = self.batch.usable()
            self._note_remade()
            if problem is not None:
                self._writes_failing(problem)
                return
            handled += self.scan(full=full)
            if full:
                self.prune()
                self.approvals.sync()
            self.answer_replays()
        if full or handled >= BATCH_MAX:  # a big pass: its scratch memory goes back
            release_free_memory()
        self.approvals.tick(self.clock())
        self.last_pass = self.clock()
        self.write_state()

    def _settle_horizon(self) -> float:
        return self.config.settle_seconds + 1.0

    def _next_timeout(self) -> float:
        assert self.index is not None
        mono = self.mono()
        heartbeat = self.config.heartbeat_seconds
        deadlines = [
            self.last_poll + self.config.poll_seconds,
            self.report.next_write(heartbeat),
            self.metrics.due(),
            self.approvals.last_check + heartbeat,
        ]
        if self.report.write_problem:
            deadlines.append(self.write_retry_at)
        if self.approvals.next_expiry is not None:
            # expires_at is wall time: wake when it passes, at most a heartbeat from now.
            wait = min(max(0.0, self.approvals.next_expiry - self.clock()), heartbeat)
            deadlines.append(mono + wait)
        ping = self.notifier.ping_due()
        if ping is not None:
            deadlines.append(ping)
        retry = self.index.next_retry()
        if retry is not None:
            # Pending files wait for their wall-clock settle deadline, at most a settle
            # wait from now (after a backward step of the wall clock).
            wait = min(max(0.0, retry - self.clock()), self._settle_horizon())
            deadlines.append(mono + wait)
        return max(0.0, min(deadlines) - mono)


# ======================================================================================
# CLI
# ======================================================================================


CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(value: Any) -> str:
    """Text for a person's terminal: control characters (a newline that would forge a
    row, an ESC sequence) shown as \\xNN escapes. Every human printer uses it."""
    return CONTROL_RE.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def _err(message: str) -> None:
    print(f"dispatcher: {printable(message)}", file=sys.stderr)


def _load_or_exit(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        _err(f"{exc}")
        raise SystemExit(EXIT_CONFIG) from None


def _open_log(config: Config, to_stderr: bool = True, rotate: bool = True) -> JsonLog:
    os.makedirs(os.path.dirname(config.log_file), mode=0o750, exist_ok=True)
    # Operator commands (possibly root) never rotate: a rotated log created by root
    # would be unwritable for the service user.
    max_bytes = config.log_max_bytes if rotate else 1 << 62
    return JsonLog(
        config.log_file, config.log_level, max_bytes, config.log_backup_count, to_stderr=to_stderr
    )


def _use_inotify() -> bool:
    return os.environ.get("HYOPS_DISPATCHER_NO_INOTIFY", "") not in ("1", "true", "yes")


def cmd_run(config_path: str, once: bool) -> int:
    config = _load_or_exit(config_path)
    try:
        log = _open_log(config, rotate=not once)  # only the service rotates its log
    except OSError as exc:
        _err(f"cannot open log {config.log_file}: {exc.strerror or exc}")
        return EXIT_RUNTIME
    daemon = Daemon(config, log, use_inotify=_use_inotify() and not once)
    try:
        daemon.start()
    except Locked:
        _err(f"another dispatcher already runs on this root (lock {config.lock_file} is held)")
        return EXIT_LOCKED
    except (OSError, sqlite3.Error) as exc:
        _err(f"cannot start: {exc}")
        log.event("error", level="ERROR", reason=f"cannot start: {exc}")
        return EXIT_RUNTIME
    try:
        if once:
            daemon.scan(full=True)
            daemon.prune()
            daemon.answer_replays()
            daemon.report.status = "stopped"
            daemon.write_state(force=True)
            daemon.stop()
        else:
            daemon.run_forever()
    except (OSError, sqlite3.Error) as exc:
        # Disk full, folder removed under us...: exit non-zero so systemd restarts us.
        _err(f"runtime failure: {exc}")
        log.event("error", level="ERROR", reason=f"runtime failure: {exc}")
        daemon.stop()
        return EXIT_RUNTIME
    finally:
        log.close()
    return EXIT_OK


def cmd_check_config(config_path: str) -> int:
    config = _load_or_exit(config_path)
    routes = ", ".join(sorted(config.routes)) or "none (every record would be unrouted)"
    print(
        f"config OK: {config.path} (digest {config.digest}); root {config.root}; "
        f"records {config.records_dir}; routes: {routes}"
    )
    return EXIT_OK


def read_status(config: Config) -> Tuple[dict, bool]:
    """state.json plus liveness and the health verdict; (doc, state_readable)."""
    doc = read_json_quiet(config.state_file)
    readable = doc is not None
    doc = dict(doc or {})
    running = lock_holder_running(config.lock_file)
    now = time.time()
    doc.update(judge_health(doc, running, config.heartbeat_seconds, now))
    doc["state_file"] = config.state_file
    add_approval_ages(doc, now)
    return doc, readable


def add_approval_ages(doc: dict, now: float) -> None:
    """state.json keeps timestamps (it must not change with time alone); status adds the
    ages: `oldest_awaiting_age_s` and `age_s` of each listed open request."""
    if "approvals" not in doc:
        return
    oldest = parse_iso_utc(doc.get("oldest_awaiting_timestamp_utc"))
    doc["oldest_awaiting_age_s"] = None if oldest is None else round(now - oldest, 1)
    for row in doc.get("requests_open") or []:
        issued = parse_iso_utc(row.get("timestamp_utc")) if isinstance(row, dict) else None
        if issued is not None:
            row["age_s"] = round(now - issued, 1)


def cmd_status(config_path: str, as_json: bool) -> int:
    config = _load_or_exit(config_path)
    doc, readable = read_status(config)
    if as_json:
        print(json.dumps(doc, sort_keys=True))
    else:
        if not readable:
            print(f"no state yet ({config.state_file} missing or unreadable)")
        print(f"healthy:          {'yes' if doc['healthy'] else 'NO'}")
        print(f"running:          {'yes' if doc['running'] else 'no'}")
        for key in (
            "status",
            "timestamp_utc",
            "state_age_s",
            "watcher",
            "last_dispatch_id",
            "last_decision_id",
            "processed_count",
            "pending_count",
            "last_error",
        ):
            if key in doc:
                print(f"{key + ':':<18}{printable(doc[key])}")
        for key, value in sorted((doc.get("counters") or {}).items()):
            print(f"  {printable(key) + ':':<16}{printable(value)}")
        print_approvals(doc)
    return EXIT_OK if readable else EXIT_RUNTIME


def print_approvals(doc: dict) -> None:
    if "approvals" not in doc:
        return
    readable = "yes" if doc.get("approvals_dir_readable") else "NO (requests count as awaiting)"
    print(f"{'approvals dir:':<18}{readable}")
    counts = doc.get("approvals") or {}
    print("requests: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in APPROVAL_STATES))
    if doc.get("oldest_awaiting_age_s") is not None:
        print(f"{'oldest awaiting:':<18}{doc['oldest_awaiting_age_s']} s")
    for row in doc.get("requests_open") or []:
        print(
            f"  {row.get('dispatch_id')}  {row.get('approval')}  {row.get('route')}  "
            f"age {row.get('age_s')} s"
        )


def _open_ledger_ro(config: Config) -> Optional[Ledger]:
    if not os.path.exists(config.ledger_file):
        return None
    try:
        return Ledger(config.ledger_file, readonly=True)
    except (sqlite3.Error, OSError) as exc:
        _err(f"cannot read ledger {config.ledger_file}: {exc}")
        return None


def list_requests(config: Config) -> List[dict]:
    result = []
    try:
        names = sorted(n for n in os.listdir(config.requests_dir) if is_record_name(n))
    except OSError:
        return result
    docs = [read_json_quiet(os.path.join(config.requests_dir, name)) or {} for name in names]
    superseded = {d.get("supersedes") for d in docs if isinstance(d.get("supersedes"), str)}
    folder = config.approvals_dir
    readable = os.path.isdir(folder) and os.access(folder, os.R_OK | os.X_OK)
    now = time.time()
    for doc in docs:
        row = {
            k: doc.get(k)
            for k in (
                "dispatch_id",
                "status",
                "decision_type",
                "source_decision_id",
                "timestamp_utc",
                "expires_at",
                "supersedes",
            )
        }
        facts = request_facts(doc)
        if facts is not None:
            marker = os.path.join(folder, f"{facts.dispatch_id}.approved.json")
            approved = readable and os.path.lexists(marker)
            row["approval"] = approval_state(facts, approved, facts.dispatch_id in superseded, now)
            row["age_s"] = round(now - facts.issued_at, 1)
        result.append(row)
    return result


def cmd_list(config_path: str, as_json: bool) -> int:
    config = _load_or_exit(config_path)
    requests = list_requests(config)
    problems: List[dict] = []
    ledger = _open_ledger_ro(config)
    if ledger is not None:
        try:
            problems = ledger.listing(
                ("rejected", "pending", "unrouted", "stale", "skipped", "duplicate", "coalesced")
            )
        except sqlite3.Error as exc:
            _err(f"cannot read ledger: {exc}")
        ledger.close()
    if as_json:
        print(json.dumps({"requests": requests, "records": problems}, sort_keys=True))
        return EXIT_OK
    print(f"requests in {config.requests_dir}: {len(requests)}")
    for req in requests:
        print(
            printable(
                f"  {req['dispatch_id']}  {req['status']}  {req.get('approval', '?')}  "
                f"age {req.get('age_s')} s  {req['decision_type']}  <- {req['source_decision_id']}"
            )
        )
    print(f"records not dispatched (from the ledger): {len(problems)}")
    for row in problems:
        print(printable(f"  {row['outcome']:<9} {row['file']}  {row['reason'] or ''}"))
    return EXIT_OK


def _find_record(config: Config, ref: str) -> Optional[str]:
    candidates = [
        ref,
        os.path.join(config.records_dir, ref),
        os.path.join(config.records_dir, ref + ".json"),
    ]
    for path in candidates:
        if os.path.lexists(path):
            return path
    ledger = _open_ledger_ro(config)
    if ledger is not None:
        try:
            row = ledger.get_decision(ref)
        finally:
            ledger.close()
        if row and row.get("file"):
            return os.path.join(config.records_dir, row["file"])
    return None


def cmd_explain(config_path: str, ref: str) -> int:
    """What the daemon would do with one record, by the daemon's own judge_record_file."""
    config = _load_or_exit(config_path)
    path = _find_record(config, ref)
    if path is None:
        _err(f"no record file or known decision_id {ref!r} (looked in {config.records_dir})")
        return EXIT_RUNTIME
    # A file outside the records folder is judged as if it were in it.
    folder, name = os.path.split(os.path.abspath(path))
    config = config._replace(records_dir=folder)
    result: Dict[str, Any] = {"file": path}
    ledger = _open_ledger_ro(config)
    try:
        known = ledger.known_file(name) if ledger is not None else None
        if ledger is not None:
            result["ledger_file_row"] = ledger.get_file(name)
        try:
            sig = FileSig.of(os.lstat(path))
        except OSError as exc:
            result.update({"would": "rejected", "reason": f"cannot stat: {exc.strerror}"})
        else:
            now = time.time()
            judged = judge_record_file(
                config,
                name,
                sig,
                known,
                now,
                prior_of=ledger.prior if ledger is not None else lambda _id: None,
                existing=lambda dispatch_id: read_json_quiet(
                    os.path.join(config.requests_dir, dispatch_id + ".json")
                ),
                last_emit=ledger.last_emits() if ledger is not None else {},
                awaits_approval=lambda dispatch_id: awaits_approval(config, dispatch_id, now),
                look_again=True,
            )
            assert judged is not None  # look_again: never "unchanged"
            outcome = judged.outcome
            decision = outcome.decision
            result.update(
                {
                    "decision_id": outcome.decision_id,
                    "route": outcome.route,
                    "would": outcome.outcome,
                    "reason": outcome.reason,
                    "dispatch_id": outcome.dispatch_id,
                    "request": decision.request if decision is not None and outcome.write else None,
                }
            )
            if outcome.source == "prior" and outcome.outcome != "duplicate":
                result["would"] = "nothing (already handled)"
                result["reason"] = (
                    f"decision already {outcome.outcome} as {outcome.dispatch_id}; "
                    "no second request"
                )
    finally:
        if ledger is not None:
            ledger.close()
    # JSON with ASCII escapes: no control character of a name reaches the terminal raw.
    print(json.dumps(result, indent=2, sort_keys=True, default=str, ensure_ascii=True))
    return EXIT_OK


def _owner_of(folder: str) -> Optional[Tuple[int, int]]:
    """When run as root, files we create belong to the folder's owner (the service user)."""
    if os.geteuid() != 0:
        return None
    st = os.stat(folder)
    return st.st_uid, st.st_gid


def _daemon_pid(lock_file: str) -> Optional[int]:
    try:
        with os.fdopen(open_own_file(lock_file, os.O_RDONLY, owned=False), "rb") as fh:
            return int(fh.read(32).split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _ask_running_daemon(config: Config, decision_id: str, timeout: float) -> Optional[dict]:
    """Hand the replay to the running daemon; None when it did not answer in time."""
    inbox = ReplayInbox(config)
    inbox.ask(decision_id, _owner_of(os.path.dirname(config.state_file)))
    deadline = time.monotonic() + timeout
    next_signal = 0.0
    try:
        while time.monotonic() < deadline:
            answer = inbox.take_answer(decision_id)
            if answer is not None:
                return answer
            if time.monotonic() >= next_signal:
                pid = _daemon_pid(config.lock_file)
                if pid is not None:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGUSR1)  # "look now", as for a folder check
                next_signal = time.monotonic() + 1.0
            time.sleep(0.02)
    finally:
        inbox.withdraw(decision_id)
    return None


def cmd_replay(config_path: str, decision_id: str, timeout: float) -> int:
    """Ask the running daemon to replay; when none runs, take the lock and do it with
    the daemon's own code (Daemon.replay), so there is one write path either way."""
    config = _load_or_exit(config_path)
    if not DECISION_ID_RE.match(decision_id):
        _err(f"decision_id {decision_id!r}: not a decision id (letters, digits, ._-)")
        return EXIT_USAGE
    if not os.path.exists(config.ledger_file):
        _err(f"no ledger at {config.ledger_file}: nothing has been handled yet")
        return EXIT_RUNTIME
    answer: Optional[dict] = None
    if lock_holder_running(config.lock_file):
        answer = _ask_running_daemon(config, decision_id, timeout)
        if answer is None:
            _err(f"the running daemon did not answer the replay within {timeout:g} s")
            return EXIT_RUNTIME
    else:
        log = _open_log(config, to_stderr=False, rotate=False)
        daemon = Daemon(config, log, use_inotify=False, owner=_owner_of(config.requests_dir))
        try:
            daemon.start()
            answer = daemon.replay(decision_id)
        except Locked:
            log.close()
            return cmd_replay(config_path, decision_id, timeout)  # it just started: ask it
        finally:
            daemon.stop()
            log.close()
    if not answer.get("ok"):
        _err(str(answer.get("error") or "replay refused"))
        return EXIT_RUNTIME
    print(json.dumps(answer, sort_keys=True))
    return EXIT_OK


def cmd_validate_handoff(config_path: str, decision_type: Optional[str], timeout: float) -> int:
    config = _load_or_exit(config_path)
    started = time.monotonic()
    checks: List[dict] = []
    result: Dict[str, Any] = {"ok": False, "dispatch_id": None, "checks": checks}

    def check(name: str, ok: bool, **detail: Any) -> bool:
        checks.append({"name": name, "ok": bool(ok), **detail})
        return ok

    def finish() -> int:
        result["ok"] = bool(checks) and all(c["ok"] for c in checks)
        result["elapsed_s"] = round(time.monotonic() - started, 3)
        print(json.dumps(result, sort_keys=True))
        return EXIT_OK if result["ok"] else EXIT_HANDOFF

    if decision_type is None:
        decision_type = "cutover" if "cutover" in config.routes else min(config.routes, default="")
    route = config.routes.get(decision_type)
    ok_route = check(
        "route",
        route is not None,
        decision_type=decision_type,
        detail="" if route else "no route for this decision type in the config",
    )
    ok_run = check(
        "daemon-running", lock_holder_running(config.lock_file), lock_file=config.lock_file
    )
    if not (ok_route and ok_run):
        return finish()
    assert route is not None
    now = time.time()
    decision_id = f"{HANDOFF_PREFIX}{compact_ts(now)}-{os.urandom(4).hex()}"
    record = {
        "decision_id": decision_id,
        "decision_type": decision_type,
        "timestamp_utc": iso_ts(now),
        "status": "emitted",
        "rationale": "synthetic dispatcher handoff validation",
        "checks": [{"name": "handoff_check", "status": "synthetic"}],
    }
    record_path = os.path.join(config.records_dir, decision_id + ".json")
    # What the daemon must write, by the daemon's own decide().
    expected = decide(
        read_valid_record(dump_json(record)),
        record_path=record_path,
        mtime=now,
        config=config,
        now=now,
        last_emit={},
    )
    assert expected.request is not None and expected.dispatch_id is not None
    dispatch_id = expected.dispatch_id
    result["dispatch_id"] = dispatch_id
    request_path = os.path.join(config.requests_dir, dispatch_id + ".json")
    try:
        write_file_durably(record_path, dump_json(record), mode=0o644)
    except OSError as exc:
        check("record-written", False, file=record_path, detail=str(exc))
        return finish()
    check("record-written", True, file=record_path)
    request = None
    outcome_seen = None
    deadline = time.monotonic() + timeout
    t0 = time.monotonic()
    next_ledger_look = t0 + 0.5
    while time.monotonic() < deadline:
        request = read_json_quiet(request_path)
        if request is not None:
            break
        if time.monotonic() >= next_ledger_look:
            next_ledger_look = time.monotonic() + 0.5
            ledger = _open_ledger_ro(config)
            if ledger is not None:
                with contextlib.suppress(sqlite3.Error):
                    row = ledger.get_file(decision_id + ".json")
                    if row and row["outcome"] not in ("emitted", "pending"):
                        outcome_seen = row
                ledger.close()
            if outcome_seen:
                break
        time.sleep(0.01)
    latency_ms = round((time.monotonic() - t0) * 1000, 1)
    if request is None:
        detail = (
            f"record was {outcome_seen['outcome']}: {outcome_seen['reason']}"
            if outcome_seen
            else f"no request within {timeout:g} s"
        )
        check("request-written", False, file=request_path, detail=detail)
    else:
        check("request-written", True, file=request_path, latency_ms=latency_ms)
        want_request = expected.request
        check(
            "status",
            request.get("status") == want_request["status"],
            expected=want_request["status"],
            actual=request.get("status"),
        )
        check(
            "requires_approval",
            request.get("requires_approval") is want_request["requires_approval"],
            expected=want_request["requires_approval"],
            actual=request.get("requires_approval"),
        )
        target_keys = ("target_kind", "target_ref", "target_env", "execution_plane")
        want = {k: want_request[k] for k in target_keys}
        got = {k: request.get(k) for k in target_keys}
        check("target", got == want, expected=want, actual=got)
        check(
            "source",
            request.get("source_decision_id") == decision_id
            and request.get("dispatch_id") == dispatch_id
            and request.get("execution_mode") == EXECUTION_MODE,
            source_decision_id=request.get("source_decision_id"),
        )
        check("synthetic", request.get("synthetic") is True, actual=request.get("synthetic"))
    removed = []
    problems = []
    # The synthetic request always awaits approval (build_request), so a consumer holding
    # it can do nothing with it until someone approves it. Removed unless approved: an
    # approved one is left for the operator (and the check fails), never pulled away
    # from a consumer that may be acting on the approval.
    marker = approval_marker(config, dispatch_id)
    if os.path.lexists(marker):
        problems.append(f"{request_path}: approved ({marker}); left in place, remove by hand")
    for path in (record_path,) if problems else (record_path, request_path):
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror}")
    for folder in (config.records_dir, config.requests_dir):
        with contextlib.suppress(OSError):
            fsync_dir(folder)
    check("cleanup", not problems, removed=removed, detail="; ".join(problems))
    return finish()


HELP_EPILOG = """\
exit codes:
  0  ok
  1  runtime failure (cannot start, disk error, 'status' cannot read state.json)
  2  usage error
  3  invalid config (systemd does not restart on this one: fix the config first)
  4  another dispatcher already runs on this root (the lock is held)
  5  validate-handoff failed

signals (while 'run'): SIGTERM/SIGINT finish the write in hand and exit; SIGHUP reloads
the config (a bad new config is refused and the old one kept); SIGUSR1 runs a check of the
records folder now instead of at the next poll.
Environment: HYOPS_DISPATCHER_NO_INOTIFY=1 turns inotify off (polling only).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dispatcher.py",
        description=(
            "hyops decision dispatcher: watches the decision records folder and writes one\n"
            "dispatch request per decision into <root>/state/requests/. A request waits for\n"
            "approval when the route or the config asks for it. It never runs anything\n"
            "itself (record-only). Every record gets an outcome: emitted, coalesced, stale,\n"
            "skipped, duplicate, unrouted, rejected or pending ('list' shows them)."
        ),
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        default=DEFAULT_CONFIG_PATH,
        metavar="PATH",
        help=f"config file (default {DEFAULT_CONFIG_PATH}); paths it does not "
        "name are placed under the folder above config/",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser(
        "run",
        help="run the daemon in the foreground (the default; systemd runs this)",
        description="Watch the records folder and write requests until stopped.",
    )
    sub.add_parser(
        "once",
        help="look at the records folder once, write any requests, exit",
        description="One full pass over the records folder, then exit. Refuses to "
        "run while the daemon runs (exit 4).",
    )
    sub.add_parser(
        "check-config",
        help="check the config file and exit (0 ok, 3 invalid)",
        description="Validate the config; print one line naming the bad key.",
    )
    p = sub.add_parser(
        "status",
        help="show whether the daemon runs and is healthy",
        description="Read state.json and the lock: running, healthy, counters, last request.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = sub.add_parser(
        "list",
        help="list the requests and every record that was not dispatched",
        description="Requests in the requests folder, then records that were "
        "rejected, pending, unrouted, stale, skipped, duplicate or "
        "coalesced, with the reason.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = sub.add_parser(
        "explain",
        help="show what the dispatcher would do with one record (writes nothing)",
        description="Which route a record takes, which request it would give, "
        "and what the ledger says about it. Nothing is written.",
    )
    p.add_argument(
        "record",
        metavar="RECORD",
        help="a record file path, a file name in the records folder, or a decision_id",
    )
    p = sub.add_parser(
        "validate-handoff",
        help="end-to-end check: write a synthetic record, wait for its request, "
        "check it, remove both",
        description="Writes a synthetic record into the records folder (needs "
        "write access there, e.g. root), waits for the running daemon "
        "to write its request, checks status and target, removes the "
        "record and the request and prints a JSON verdict. Exit 5 "
        "when any check fails.",
    )
    p.add_argument(
        "--decision-type",
        default=None,
        metavar="T",
        help="decision type to use (default: cutover if routed, else the first route)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds to wait for the request (default 30)",
    )
    p = sub.add_parser(
        "replay",
        help="dispatch a decision that was stale, skipped, unrouted or coalesced",
        description="Write the request for a decision the rules held back (the "
        "route must exist). Refuses a decision that already has a "
        "request.",
    )
    p.add_argument("decision_id", metavar="DECISION_ID")
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds to wait for the running daemon's answer (default 30)",
    )
    return parser


def drop_root(config: Config) -> None:
    """Run as root, a command drops to the owner of the state folder (the service user)
    before it opens any file there: it then cannot be made to follow a symlink or fill a
    file that user planted, and every file it creates is one the service can open. A
    state folder that others may write to is refused. Raises SystemExit(EXIT_RUNTIME)."""
    if os.geteuid() != 0:
        return
    folder = os.path.dirname(config.state_file)
    try:
        st = os.stat(folder)
    except FileNotFoundError:
        return  # nothing of the service's yet (the role creates it owned by the service)
    if not stat.S_ISDIR(st.st_mode) or st.st_mode & 0o022:
        _err(
            f"state folder {folder} is not a folder only its owner may write to "
            f"(mode {stat.filemode(st.st_mode)}); refusing to run as root there (chmod 0750)"
        )
        raise SystemExit(EXIT_RUNTIME)
    if st.st_uid == 0:
        return
    gid, groups = st.st_gid, [st.st_gid]
    try:
        import pwd  # only needed here

        entry = pwd.getpwuid(st.st_uid)
        gid = entry.pw_gid
        groups = os.getgrouplist(entry.pw_name, gid)
    except (KeyError, OSError):
        pass  # a uid without a passwd entry: its folder's group only
    try:
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(st.st_uid)
    except OSError as exc:
        _err(f"cannot drop root to uid {st.st_uid}, the owner of {folder}: {exc.strerror}")
        raise SystemExit(EXIT_RUNTIME) from None


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "run"
    if command not in ("check-config", "validate-handoff"):
        # validate-handoff writes its synthetic record as root; it only reads state/
        # (with open_own_file's checks).
        try:
            drop_root(_load_or_exit(args.config))
        except SystemExit as exc:
            return int(exc.code or 0)
    try:
        if command in ("run", "once"):
            return cmd_run(args.config, once=command == "once")
        if command == "check-config":
            return cmd_check_config(args.config)
        if command == "status":
            return cmd_status(args.config, args.json)
        if command == "list":
            return cmd_list(args.config, args.json)
        if command == "explain":
            return cmd_explain(args.config, args.record)
        if command == "validate-handoff":
            return cmd_validate_handoff(args.config, args.decision_type, args.timeout)
        if command == "replay":
            return cmd_replay(args.config, args.decision_id, args.timeout)
    except SystemExit as exc:
        return int(exc.code or 0)
    except (OSError, sqlite3.Error) as exc:
        _err(f"{command}: {exc}")
        return EXIT_RUNTIME
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
