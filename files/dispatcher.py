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

Layout: a pure core (config and record parsing, routing, ids, the decision) with no I/O,
then a thin shell (files, ledger, log, inotify, signals, sd_notify), then the CLI.
Python 3.9+ standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple
from urllib.parse import quote

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


@dataclass(frozen=True)
class Route:
    key: str
    target_kind: str
    target_ref: str
    target_env: str
    execution_plane: str
    requires_approval: Optional[bool] = None
    coalesce_seconds: int = 0
    approval_ttl_seconds: Optional[int] = None


@dataclass(frozen=True)
class Config:
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
    routes: Dict[str, Route] = field(default_factory=dict)
    # The consumer's approval markers (read only) and the Prometheus textfile (issue 10).
    approvals_dir: str = DEFAULT_APPROVALS_DIR
    metrics_textfile: str = ""

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


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and value == value


def _integer(obj: dict, key: str, default: int, minimum: int, maximum: Optional[int] = None) -> int:
    """An integer key within [minimum, maximum] (the bounds of dispatcher-config.schema.json)."""
    value = obj.get(key, default)
    bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
    if not _is_int(value) or value < minimum or (maximum is not None and value > maximum):
        raise ConfigError(f"{key}: must be an integer {bounds}; got {short(value)}")
    return value


def _path(obj: dict, key: str, default: str) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigError(f"{key}: must be an absolute path; got {short(value)}")
    return os.path.normpath(value)


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
    if obj.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise ConfigError(
            f"schema_version: must be {SCHEMA_VERSION}; got {short(obj.get('schema_version'))}"
        )
    mode = obj.get("execution_mode", EXECUTION_MODE)
    if mode != EXECUTION_MODE:
        raise ConfigError(f"execution_mode: only 'record-only' is supported; got {short(mode)}")
    require = obj.get("require_approval", True)
    if not isinstance(require, bool):
        raise ConfigError(f"require_approval: must be true or false; got {short(require)}")
    level = obj.get("log_level", "INFO")
    if not isinstance(level, str) or level not in LOG_LEVELS:
        raise ConfigError(f"log_level: must be one of {list(LOG_LEVELS)}; got {short(level)}")
    routes_obj = obj.get("routes", {})
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
    records_dir = _path(
        obj, "decision_records_dir", "/opt/hybridops/decision-service/state/records"
    )
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
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return Config(
        path=config_path,
        digest=hashlib.sha256(canonical).hexdigest()[:16],
        root=root,
        records_dir=records_dir,
        requests_dir=requests_dir,
        state_file=state_file,
        ledger_file=ledger_file,
        log_file=log_file,
        lock_file=os.path.join(os.path.dirname(state_file), "dispatcher.lock"),
        require_approval=require,
        poll_seconds=_integer(obj, "poll_seconds", 15, 5, 3600),
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
    return epoch


def compact_ts(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def iso_ts(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat()


def compact_to_epoch(text: str) -> float:
    dt = datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    return dt.timestamp()


def decision_hash(decision_id: str) -> str:
    return hashlib.sha256(decision_id.encode("utf-8")).hexdigest()[:8]


def parse_record(data: bytes) -> dict:
    """Bytes of a record file -> the JSON object; RecordRejected(retryable) if not JSON."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RecordRejected(f"not UTF-8 text ({exc.reason} at byte {exc.start})", True) from None
    if not text.strip():
        raise RecordRejected("empty file", True)
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise RecordRejected("invalid JSON: nested too deeply") from None
    except ValueError as exc:
        raise RecordRejected(f"invalid JSON: {exc}", True) from None
    if not isinstance(obj, dict):
        raise RecordRejected(f"JSON is {_json_kind(obj)}, not an object")
    return obj


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


@dataclass
class Decision:
    """What the core decided about one valid record."""

    outcome: str
    reason: str
    decision_id: str
    decision_type: str
    decision_epoch: float
    route: Optional[str] = None
    dispatch_id: Optional[str] = None
    coalesced_into: Optional[str] = None
    request: Optional[dict] = None


def is_handoff(decision_id: str) -> bool:
    return decision_id.startswith(HANDOFF_PREFIX)


def decide(
    record: dict,
    *,
    record_path: str,
    mtime: float,
    config: Config,
    now: float,
    last_emit: Dict[str, Tuple[float, str]],
    force: bool = False,
) -> Decision:
    """Route one valid record. `last_emit` maps route -> (decision epoch, dispatch id) of
    the route's latest request, for coalescing. `force` (replay) skips the stale, skipped
    and coalesce rules but never the route."""
    decision_id, decision_type = validate_record(record)
    epoch, _source = decision_time(record, decision_id, mtime)
    base = Decision("", "", decision_id, decision_type, epoch)
    status = record.get("status")
    if not force and status == "queued-local-exec":
        base.outcome = "skipped"
        base.reason = "record status is queued-local-exec: the decision service already ran it"
        return base
    route, why = find_route(config, decision_type)
    if route is None:
        base.outcome = "unrouted"
        base.reason = why
        return base
    base.route = route.key
    dispatch_id = make_dispatch_id(epoch, decision_type, decision_id)
    age = now - epoch
    if not force and config.max_record_age_seconds > 0 and age > config.max_record_age_seconds:
        base.outcome = "stale"
        base.reason = (
            f"decision is {int(age)} s old, over max_record_age_seconds "
            f"{config.max_record_age_seconds:g}; use 'replay {decision_id}' to dispatch it"
        )
        return base
    last = last_emit.get(route.key)
    if (
        not force
        and route.coalesce_seconds > 0
        and last is not None
        and not is_handoff(decision_id)
        and abs(epoch - last[0]) < route.coalesce_seconds
    ):
        base.outcome = "coalesced"
        base.coalesced_into = last[1]
        base.dispatch_id = last[1]
        base.reason = (
            f"within coalesce_seconds {route.coalesce_seconds} of {last[1]} (route {route.key})"
        )
        return base
    base.outcome = "emitted"
    base.dispatch_id = dispatch_id
    base.request = build_request(
        record,
        decision_id=decision_id,
        decision_type=decision_type,
        dispatch_id=dispatch_id,
        record_path=record_path,
        route=route,
        config=config,
        now=now,
    )
    base.reason = "replayed by operator" if force else ""
    return base


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
) -> dict:
    """The request document (CONTRACT.md 3 plus schema_version, route, approval source)."""
    requires, source = approval_for(route, config)
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
        "checks": checks if isinstance(checks, list) else [],
        "decision_timestamp_utc": ts if isinstance(ts, str) else None,
        "decision_status": status if isinstance(status, str) else None,
    }
    if route.approval_ttl_seconds:
        request["expires_at"] = iso_ts(now + route.approval_ttl_seconds)
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


def is_record_name(name: str) -> bool:
    # Dot files are writers' temp files by convention (ours and the decision service's).
    return name.endswith(".json") and not name.startswith(".")


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
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
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


class StagedWrites:
    """Request files written as a batch, durably: every temp file is written, then all are
    flushed at once (one syncfs() for a burst instead of an fsync per file), then renamed,
    then the folder is fsynced. Only after commit() may the ledger say they exist."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.staged: List[Tuple[int, str, str]] = []  # (fd, temp path, target path)
        self.targets: set = set()
        self._syncfs: Optional[Callable[[int], int]] = None
        with contextlib.suppress(OSError, AttributeError):
            self._syncfs = libc().syncfs

    def __len__(self) -> int:
        return len(self.staged)

    def stage(self, target: str, data: bytes) -> None:
        fd, tmp = write_temp(target, data, 0o644)
        if len(self.staged) >= SYNCFS_MIN_BATCH:
            # A burst: syncfs() will flush it; do not hold a descriptor per file.
            os.close(fd)
            fd = -1
        self.staged.append((fd, tmp, target))
        self.targets.add(target)

    def commit(self) -> int:
        """fsync (or one syncfs) every staged file, rename them all, fsync the folder. On
        an error the temp files not yet renamed are removed and the error is raised."""
        staged, self.staged, self.targets = self.staged, [], set()
        if not staged:
            return 0
        done = 0
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
            for _fd, tmp, target in staged:
                os.replace(tmp, target)
                done += 1
            fsync_dir(self.folder)
            return done
        finally:
            for fd, _tmp, _target in staged:
                if fd >= 0:
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
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
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
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Ledger:
    """Durable record of handled files and decisions (SQLite, rollback journal,
    synchronous=FULL: a commit is on disk when it returns). A rollback journal rather than
    WAL so that an operator command run as root never leaves -wal/-shm files the service
    user cannot open."""

    def __init__(self, path: str, readonly: bool = False) -> None:
        self.path = path
        if readonly:
            uri = f"file:{quote(path)}?mode=ro"
            self.db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10)
        else:
            self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=DELETE")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(LEDGER_SCHEMA)
        self.in_tx = False

    @classmethod
    def open_or_recover(cls, path: str, log: JsonLog) -> Tuple[Ledger, bool]:
        """Open the ledger; a corrupt one is moved aside and a new one started (the
        requests folder then rebuilds it). Returns (ledger, rebuilt)."""
        existed = os.path.exists(path)
        try:
            ledger = cls(path)
            row = ledger.db.execute("PRAGMA quick_check").fetchone()
            if row is None or row[0] != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {row[0] if row else 'no answer'}")
            return ledger, not existed
        except sqlite3.DatabaseError as exc:
            aside = f"{path}.corrupt-{compact_ts(time.time())}"
            with contextlib.suppress(OSError):
                os.replace(path, aside)
            with contextlib.suppress(OSError):
                os.unlink(path + "-journal")
            log.event(
                "error",
                level="ERROR",
                file=path,
                reason=f"ledger unreadable ({exc}); moved to {aside}, rebuilding from "
                "the requests folder",
            )
            return cls(path), True

    def begin(self) -> None:
        if not self.in_tx:
            self.db.execute("BEGIN IMMEDIATE")
            self.in_tx = True

    def commit(self) -> None:
        if self.in_tx:
            self.db.execute("COMMIT")
            self.in_tx = False

    def rollback(self) -> None:
        if self.in_tx:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
            self.in_tx = False

    def close(self) -> None:
        self.rollback()
        self.db.close()

    # --- reads
    def load_files(self) -> Iterable[tuple]:
        return self.db.execute(
            "SELECT name, size, mtime_ns, ctime_ns, inode, outcome, handled_at FROM files "
            "WHERE gone_at IS NULL"
        )

    def get_decision(self, decision_id: str) -> Optional[dict]:
        row = self.db.execute(
            "SELECT decision_id, outcome, dispatch_id, route, decision_epoch, file, reason, "
            "handled_at FROM decisions WHERE decision_id = ?",
            (decision_id,),
        ).fetchone()
        if row is None:
            return None
        keys = (
            "decision_id",
            "outcome",
            "dispatch_id",
            "route",
            "decision_epoch",
            "file",
            "reason",
            "handled_at",
        )
        return dict(zip(keys, row))

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

    def known_dispatch_ids(self) -> set:
        rows = self.db.execute(
            "SELECT dispatch_id FROM decisions "
            "WHERE outcome = 'emitted' AND dispatch_id IS NOT NULL"
        )
        return {r[0] for r in rows}

    def last_emits(self) -> Dict[str, Tuple[float, str]]:
        result: Dict[str, Tuple[float, str]] = {}
        rows = self.db.execute(
            "SELECT route, decision_epoch, dispatch_id FROM decisions WHERE outcome = 'emitted' "
            "AND route IS NOT NULL AND decision_id NOT LIKE ?",
            (HANDOFF_PREFIX + "%",),
        )
        for route, epoch, dispatch_id in rows:
            if epoch is not None and (route not in result or epoch > result[route][0]):
                result[route] = (epoch, dispatch_id)
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
        sig: Tuple[int, int, int, int],
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
            (ledger_name(name), *sig, outcome, decision_id, dispatch_id, reason, now),
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

    def mark_gone(self, name: str, now: float) -> None:
        self.db.execute(
            "UPDATE files SET gone_at = ? WHERE name = ? AND gone_at IS NULL",
            (now, ledger_name(name)),
        )

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
                sock.sendto(message.encode(), addr)
        except OSError:
            pass  # systemd gone or not listening: nothing useful to do

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


def lock_holder_running(lock_file: str) -> bool:
    """True when some process holds the instance lock (i.e. a daemon runs on this root)."""
    try:
        fd = os.open(lock_file, os.O_RDONLY | os.O_CLOEXEC)
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
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
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


class FileState:
    """What the index knows about one record file (slots: 20 000 of these stay small)."""

    __slots__ = ("ctime_ns", "inode", "mtime_ns", "outcome", "retry_at", "size")

    def __init__(self, size: int, mtime_ns: int, ctime_ns: int, inode: int, outcome: str) -> None:
        self.size = size
        self.mtime_ns = mtime_ns
        self.ctime_ns = ctime_ns
        self.inode = inode
        self.outcome = outcome
        self.retry_at = 0.0

    def sig(self) -> Tuple[int, int, int, int]:
        return (self.size, self.mtime_ns, self.ctime_ns, self.inode)


def stat_sig(st: os.stat_result) -> Tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


class Daemon:
    """The shell: owns the lock, ledger, log, index of known files and the main loop."""

    def __init__(
        self,
        config: Config,
        log: JsonLog,
        clock: Callable[[], float] = time.time,
        use_inotify: bool = True,
    ) -> None:
        self.config = config
        self.log = log
        self.clock = clock
        self.use_inotify = use_inotify
        self.ledger: Optional[Ledger] = None
        self.lock_fd: Optional[int] = None
        self.inotify: Optional[Inotify] = None
        self.notifier = Notifier()
        self.index: Dict[str, FileState] = {}
        # Names whose outcome is pending or rejected: re-stat'ed on every pass.
        self.watched: set = set()
        self.last_emit: Dict[str, Tuple[float, str]] = {}
        self.counters: Dict[str, int] = {k: 0 for k in OUTCOMES}
        self.counters["errors"] = 0
        self.last_dispatch_id = ""
        self.last_decision_id = ""
        self.last_error = ""
        self.records_dir_ok = True
        self.dir_mtime_ns: Optional[int] = None  # listing is up to date for this mtime
        self.last_full_scan = 0.0
        self.last_poll = 0.0
        self.last_state_write = 0.0
        self.state_dirty = True
        self.started_at = clock()
        self.batch_written = 0
        self.writes = StagedWrites(config.requests_dir)
        self.stop_requested = False
        self.reload_requested = False
        self.poll_requested = False
        self.status = "starting"
        self.watch_mode = "poll"
        self.watch_error = ""
        self.rewatch = False  # re-add the inotify watch at the next pass (folder replaced)

    # ---------------------------------------------------------------- start / stop
    def start(self, hold_lock: bool = True) -> None:
        cfg = self.config
        for folder in (
            os.path.dirname(cfg.state_file),
            cfg.requests_dir,
            os.path.dirname(cfg.ledger_file),
        ):
            os.makedirs(folder, mode=0o750, exist_ok=True)
        if hold_lock:
            self.lock_fd = acquire_lock(cfg.lock_file)
        remove_stale_temps(cfg.requests_dir)
        remove_stale_temps(os.path.dirname(cfg.state_file))
        self.ledger, rebuilt = Ledger.open_or_recover(cfg.ledger_file, self.log)
        raw = self.ledger.meta_get("counters")
        if raw and not rebuilt:
            with contextlib.suppress(ValueError, TypeError):
                saved = json.loads(raw)
                for key in self.counters:
                    if _is_int(saved.get(key)):
                        self.counters[key] = saved[key]
        for key in ("last_dispatch_id", "last_decision_id"):
            setattr(self, key, self.ledger.meta_get(key) or "")
        self.reconcile_requests()
        for name, size, mtime_ns, ctime_ns, inode, outcome, _handled in self.ledger.load_files():
            self._index_set(name, FileState(size, mtime_ns, ctime_ns, inode, outcome))
        self.last_emit = self.ledger.last_emits()
        if self.use_inotify:
            self._watch()

    def _watch(self) -> None:
        if self.inotify is not None:
            self.inotify.close()
            self.inotify = None
        self.watch_mode = "poll"
        try:
            self.inotify = Inotify(self.config.records_dir)
            self.watch_mode = "inotify"
            self.watch_error = ""
        except (OSError, AttributeError) as exc:
            # Missing folder or no inotify (old kernel, exhausted watches): polling only.
            self.inotify = None
            if str(exc) == self.watch_error:
                return  # said once already
            self.watch_error = str(exc)
            self.log.event(
                "error",
                level="WARNING",
                file=self.config.records_dir,
                reason=f"inotify unavailable ({exc}); polling every {self.config.poll_seconds:g} s",
            )

    def reconcile_requests(self) -> None:
        """The requests folder is the truth: adopt any request the ledger does not know
        (written just before a crash, or the ledger was lost)."""
        assert self.ledger is not None
        known = self.ledger.known_dispatch_ids()
        adopted = 0
        try:
            entries = list(os.scandir(self.config.requests_dir))
        except FileNotFoundError:
            return
        for entry in entries:
            name = entry.name
            if not is_record_name(name) or name[:-5] in known:
                continue
            try:
                with open(entry.path, "rb") as fh:
                    doc = json.loads(fh.read(4 << 20))
                decision_id = doc["source_decision_id"]
                dispatch_id = doc["dispatch_id"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self.log.event(
                    "error",
                    level="WARNING",
                    file=entry.path,
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
                "adopted from the requests folder",
                self.clock(),
            )
            adopted += 1
        self.ledger.commit()
        if adopted:
            self.log.event(
                "recovered",
                level="INFO",
                reason=f"adopted {adopted} request(s) from the requests folder into the ledger",
            )

    def stop(self) -> None:
        if self.ledger is not None:
            self.finish_batch()
            self.ledger.close()
            self.ledger = None
        if self.inotify is not None:
            self.inotify.close()
            self.inotify = None
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    # ---------------------------------------------------------------- passes
    def scan(self, full: bool = False, names: Optional[Iterable[str]] = None) -> int:
        """One pass. `names`: only these (inotify); `full`: stat every file; else the cheap
        safety net (folder mtime, listing only when it changed, watched files)."""
        now = self.clock()
        handled = 0
        todo: Dict[str, Optional[os.stat_result]] = {}
        records_dir = self.config.records_dir
        if names is not None:
            for name in names:
                if is_record_name(name):
                    todo[name] = None
        else:
            try:
                dst = os.stat(records_dir)
                if not stat.S_ISDIR(dst.st_mode):
                    raise NotADirectoryError(records_dir)
            except OSError as exc:
                self._records_dir_problem(f"records folder unusable: {exc}")
                return 0
            # A folder that failed stays suspect until it can be listed again; a chmod
            # does not change its mtime, so list it on every pass until then.
            recovering = not self.records_dir_ok
            if recovering:
                full = True
            if self.rewatch and self.use_inotify:
                self.rewatch = False
                self._watch()
                full = True
            if full or dst.st_mtime_ns != self.dir_mtime_ns:
                listed = self._list(full)
                if listed is None:
                    return 0
                if recovering:
                    self.records_dir_ok = True
                    self.state_dirty = True
                    reason = f"records folder {records_dir} is usable again"
                    self.log.event("recovered", reason=reason)
                    if self.use_inotify:
                        self._watch()  # the old watch (if any) may belong to a replaced folder
                todo.update(listed)
                # A folder changed within the last second may change again with the same
                # coarse timestamp: only trust a listing of an older mtime (racy-git rule).
                trusted = (time.time_ns() - dst.st_mtime_ns) > 1_000_000_000
                self.dir_mtime_ns = dst.st_mtime_ns if trusted else None
                if full:
                    self.last_full_scan = now
            for name in self.watched:
                todo.setdefault(name, None)
        # Stat first so the batch runs oldest first (coalescing follows decision order).
        stats: Dict[str, Optional[os.stat_result]] = {}
        for name, st in todo.items():
            if st is None:
                try:
                    st = os.lstat(os.path.join(records_dir, name))
                except OSError:
                    st = None  # gone, or _consider stats again and reports why
            stats[name] = st
        order = sorted(stats, key=lambda n: (stats[n].st_mtime_ns if stats[n] else 0, n))
        for name in order:
            if self.stop_requested:
                break  # SIGTERM: the write in hand is done; the rest waits for the next start
            handled += self._consider(name, stats[name], now)
            if self.batch_written >= BATCH_MAX:
                self.finish_batch()
            if handled and handled % 128 == 0:
                self.notifier.ping(self.clock())
        self.finish_batch()
        return handled

    def _records_dir_problem(self, reason: str) -> None:
        if self.records_dir_ok:
            self.records_dir_ok = False
            self.state_dirty = True
            self.last_error = reason
            self.counters["errors"] += 1
            self.log.event("error", level="ERROR", file=self.config.records_dir, reason=reason)

    def _list(self, with_stat: bool) -> Optional[Dict[str, Optional[os.stat_result]]]:
        """Names that need a look: new, replaced (other inode), or (with_stat) changed.
        Also marks files that disappeared as gone."""
        todo: Dict[str, Optional[os.stat_result]] = {}
        seen = set()
        try:
            with os.scandir(self.config.records_dir) as it:
                for entry in it:
                    name = entry.name
                    if not is_record_name(name):
                        continue
                    seen.add(name)
                    known = self.index.get(name)
                    if known is None:
                        todo[name] = None
                    elif with_stat:
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except OSError:
                            todo[name] = None
                            continue
                        if stat_sig(st) != known.sig():
                            todo[name] = st
                    elif entry.inode() != known.inode:
                        todo[name] = None
        except OSError as exc:
            self._records_dir_problem(f"cannot list records folder: {exc}")
            return None
        gone = [n for n in self.index if n not in seen]
        if gone:
            assert self.ledger is not None
            self.ledger.begin()
            now = self.clock()
            for name in gone:
                self.ledger.mark_gone(name, now)
                self._index_drop(name)
        return todo

    def _consider(self, name: str, st: Optional[os.stat_result], now: float) -> int:
        """Look at one name; handle it when it is new or changed. Returns 1 if handled."""
        path = os.path.join(self.config.records_dir, name)
        if st is None:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                if name in self.index:
                    assert self.ledger is not None
                    self.ledger.begin()
                    self.ledger.mark_gone(name, now)
                    self._index_drop(name)
                return 0
            except OSError as exc:
                self._outcome(
                    name, (0, 0, 0, 0), "rejected", f"cannot stat: {exc.strerror}", None, None, now
                )
                return 1
        sig = stat_sig(st)
        known = self.index.get(name)
        unchanged = known is not None and known.sig() == sig
        if unchanged and (known.outcome != "pending" or now < known.retry_at):
            return 0
        try:
            self._handle(name, path, st, sig, now)
        except sqlite3.Error:
            raise  # the ledger is broken: exit non-zero and let systemd restart us
        except OSError as exc:
            # Disk full, requests folder unwritable...: not the record's fault. Leave it
            # unhandled so it is retried on the next poll (the listing is forced).
            self.counters["errors"] += 1
            self.last_error = f"{name}: {exc}"
            self.dir_mtime_ns = None
            self.state_dirty = True
            self.log.event("error", level="ERROR", file=name, reason=f"will retry: {exc}")
            return 0
        except Exception as exc:  # a bug must not stop the daemon; it is logged and counted
            self.counters["errors"] += 1
            self.last_error = f"{name}: {type(exc).__name__}: {exc}"
            self._outcome(
                name,
                sig,
                "rejected",
                f"internal error: {type(exc).__name__}: {exc}",
                None,
                None,
                now,
            )
        return 1

    def _handle(
        self, name: str, path: str, st: os.stat_result, sig: Tuple[int, int, int, int], now: float
    ) -> None:
        cfg = self.config
        if ledger_name(name) != name:
            self._outcome(name, sig, "rejected", "file name is not valid UTF-8", None, None, now)
            return
        if stat.S_ISLNK(st.st_mode):
            self._outcome(name, sig, "rejected", "symlink (never followed)", None, None, now)
            return
        if not stat.S_ISREG(st.st_mode):
            self._outcome(name, sig, "rejected", "not a regular file", None, None, now)
            return
        if st.st_size > cfg.max_record_bytes:
            self._outcome(
                name,
                sig,
                "rejected",
                f"file is {st.st_size} bytes, over max_record_bytes {cfg.max_record_bytes}",
                None,
                None,
                now,
            )
            return
        try:
            data, sig = read_record_bytes(path, cfg.max_record_bytes)
        except RecordRejected as exc:
            self._reject_or_wait(name, sig, st, exc, now)
            return
        try:
            record = parse_record(data)
            decision_id, _type = validate_record(record)
        except RecordRejected as exc:
            self._reject_or_wait(name, sig, st, exc, now)
            return
        assert self.ledger is not None
        prior = self.ledger.get_decision(decision_id)
        if prior is not None and prior["outcome"] in DISPATCHED_OUTCOMES:
            if prior["file"] in (None, name):
                # Same file seen again: it keeps the decision's outcome and no second request
                # is written. When the file row is missing the request was adopted after a
                # crash (or a lost ledger) and this is the first time it is counted; when the
                # row is there the file was only touched and nothing is logged.
                row = self.ledger.get_file(name)
                touched = row is not None and row["decision_id"] == decision_id
                self._outcome(
                    name,
                    sig,
                    prior["outcome"],
                    f"already handled: {prior['outcome']} as {prior['dispatch_id']}"
                    if touched
                    else "request found in the requests folder (recovered after a restart)",
                    decision_id,
                    prior["dispatch_id"],
                    now,
                    log_event=not touched,
                )
                return
            self._outcome(
                name,
                sig,
                "duplicate",
                f"decision_id already {prior['outcome']} as {prior['dispatch_id']} "
                f"from {prior['file']}; no new request",
                decision_id,
                prior["dispatch_id"],
                now,
            )
            return
        decision = decide(
            record,
            record_path=path,
            mtime=st.st_mtime,
            config=cfg,
            now=now,
            last_emit=self.last_emit,
        )
        if decision.outcome == "emitted":
            self._emit(name, sig, decision, now)
            return
        self.ledger.begin()
        self.ledger.put_decision(
            decision_id,
            decision.outcome,
            decision.dispatch_id,
            decision.route,
            decision.decision_epoch,
            name,
            decision.reason,
            now,
        )
        self._outcome(
            name,
            sig,
            decision.outcome,
            decision.reason,
            decision_id,
            decision.dispatch_id,
            now,
            route=decision.route,
        )

    def _reject_or_wait(
        self,
        name: str,
        sig: Tuple[int, int, int, int],
        st: os.stat_result,
        exc: RecordRejected,
        now: float,
    ) -> None:
        # A file that may still be being written is retried until settle_seconds after its
        # last change; only then is it rejected (and even then a later change re-opens it).
        known = self.index.get(name)
        if known is not None and known.outcome == "pending" and known.sig() == sig:
            settle_until = known.retry_at - 0.05  # unchanged since: keep the first deadline
        else:
            # min(): a file stamped in the future (clock skew) must not stay pending forever.
            settle_until = min(st.st_mtime, now) + self.config.settle_seconds
        if exc.retryable and now < settle_until:
            first = known is None or known.outcome != "pending"  # one line per file, not per write
            self._outcome(
                name,
                sig,
                "pending",
                f"{exc.reason}; retrying until it settles",
                None,
                None,
                now,
                log_event=first,
            )
            self.index[name].retry_at = settle_until + 0.05
            return
        self._outcome(name, sig, "rejected", exc.reason, None, None, now)

    def _emit(
        self, name: str, sig: Tuple[int, int, int, int], decision: Decision, now: float
    ) -> None:
        assert self.ledger is not None and decision.request is not None
        dispatch_id = decision.dispatch_id
        assert dispatch_id is not None
        target = os.path.join(self.config.requests_dir, dispatch_id + ".json")
        reason = ""
        existing = read_json_quiet(target)
        if existing is None and target in self.writes.targets:
            existing = {"source_decision_id": "(a decision in the same batch)"}
        if existing is not None:
            if existing.get("source_decision_id") != decision.decision_id:
                self._outcome(
                    name,
                    sig,
                    "rejected",
                    f"dispatch id {dispatch_id} already used by decision "
                    f"{short(existing.get('source_decision_id'))}",
                    None,
                    None,
                    now,
                )
                return
            reason = "request already in the requests folder (recovered)"
        else:
            # Request first, durable; the ledger row only after (see finish_batch).
            self.writes.stage(target, dump_json(decision.request))
            self.batch_written += 1
        self.ledger.begin()
        self.ledger.put_decision(
            decision.decision_id,
            "emitted",
            dispatch_id,
            decision.route,
            decision.decision_epoch,
            name,
            reason,
            now,
        )
        if not is_handoff(decision.decision_id):
            last = self.last_emit.get(decision.route or "")
            if last is None or decision.decision_epoch >= last[0]:
                self.last_emit[decision.route or ""] = (decision.decision_epoch, dispatch_id)
            self.last_dispatch_id = dispatch_id
            self.last_decision_id = decision.decision_id
        self._outcome(
            name,
            sig,
            "emitted",
            reason,
            decision.decision_id,
            dispatch_id,
            now,
            route=decision.route,
            status=decision.request["status"],
        )

    def _outcome(
        self,
        name: str,
        sig: Tuple[int, int, int, int],
        outcome: str,
        reason: str,
        decision_id: Optional[str],
        dispatch_id: Optional[str],
        now: float,
        log_event: bool = True,
        **extra: Any,
    ) -> None:
        assert self.ledger is not None
        self.ledger.begin()
        self.ledger.put_file(name, sig, outcome, decision_id, dispatch_id, reason, now)
        self._index_set(name, FileState(*sig, outcome))
        if log_event:
            self.counters[outcome] = self.counters.get(outcome, 0) + 1
            level = "WARNING" if outcome in ("rejected", "unrouted", "stale") else "INFO"
            self.log.event(
                outcome,
                level=level,
                file=name,
                decision_id=decision_id,
                dispatch_id=dispatch_id,
                reason=reason or None,
                **extra,
            )
        self.state_dirty = True

    def _index_set(self, name: str, info: FileState) -> None:
        self.index[name] = info
        if info.outcome in WATCHED_OUTCOMES:
            self.watched.add(name)
        else:
            self.watched.discard(name)

    def _index_drop(self, name: str) -> None:
        self.index.pop(name, None)
        self.watched.discard(name)

    def finish_batch(self) -> None:
        """Make the batch durable: requests folder fsync first, then the ledger commit."""
        if self.ledger is None:
            return
        if self.batch_written:
            self.batch_written = 0
            try:
                self.writes.commit()
            except BaseException:
                # Nothing may claim a request that is not on disk.
                self.writes.abort()
                self.ledger.rollback()
                raise
        if self.ledger.in_tx:
            self.ledger.meta_set("counters", json.dumps(self.counters, sort_keys=True))
            self.ledger.meta_set("last_dispatch_id", self.last_dispatch_id)
            self.ledger.meta_set("last_decision_id", self.last_decision_id)
            self.ledger.commit()

    def prune(self) -> None:
        assert self.ledger is not None
        self.ledger.begin()
        removed = self.ledger.prune(self.clock(), self.config.ledger_retention_seconds)
        self.ledger.commit()
        if removed:
            self.log.event("accepted", level="DEBUG", reason=f"pruned {removed} ledger rows")

    # ---------------------------------------------------------------- state.json
    def state_doc(self) -> dict:
        now = self.clock()
        pending = sum(1 for n in self.watched if self.index[n].outcome == "pending")
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
            "pending_count": pending,
            "tracked_files": len(self.index),
            "pid": os.getpid(),
            "started_at": iso_ts(self.started_at),
            "config_digest": self.config.digest,
            "watcher": self.watch_mode,
            "version": VERSION,
            "records_dir_ok": self.records_dir_ok,
            "last_error": self.last_error[:300],
        }

    def write_state(self, force: bool = False) -> None:
        now = self.clock()
        # Changes are written at most every STATE_MIN_INTERVAL (a burst is one write, not
        # thousands); otherwise at the heartbeat.
        due = now - self.last_state_write >= self.config.heartbeat_seconds or (
            self.state_dirty and now - self.last_state_write >= STATE_MIN_INTERVAL
        )
        if not (force or due):
            return
        self.status = (
            self.status
            if self.status in ("stopping", "stopped")
            else ("running" if self.records_dir_ok else "degraded")
        )
        write_file_durably(self.config.state_file, dump_json(self.state_doc()), mode=0o644)
        self.last_state_write = now
        self.state_dirty = False

    # ---------------------------------------------------------------- loop
    def reload(self) -> None:
        try:
            new = load_config(self.config.path)
        except ConfigError as exc:
            self.counters["errors"] += 1
            self.last_error = f"reload refused: {exc}"
            self.state_dirty = True
            self.log.event("error", level="ERROR", reason=f"{exc}; keeping the running config")
            return
        if new.paths() != self.config.paths():
            self.log.event(
                "error",
                level="ERROR",
                reason="reload refused: root, records, requests, state, ledger or log path "
                "changed; restart the service for that; keeping the running config",
            )
            self.last_error = "reload refused: a path changed (restart needed)"
            self.state_dirty = True
            return
        self.config = new
        self.log.reconfigure(new.log_level, new.log_max_bytes, new.log_backup_count)
        self.state_dirty = True
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
            self.log.event(
                "started",
                pid=os.getpid(),
                config=self.config.path,
                config_digest=self.config.digest,
                watcher=self.watch_mode,
                tracked_files=len(self.index),
                version=VERSION,
            )
            # READY only after the first full pass: "ready" means every file present at
            # start has an outcome (or is pending) and state.json is fresh.
            self.scan(full=True)
            self.prune()
            self.status = "running"
            self.write_state(force=True)
            self.notifier.send(
                f"READY=1\nSTATUS=watching {self.config.records_dir}\nMAINPID={os.getpid()}"
            )
            self.notifier.ping(self.clock(), force=True)
            self.last_poll = self.clock()
            while not self.stop_requested:
                timeout = self._next_timeout()
                fds = [wake_r] + ([self.inotify.fd] if self.inotify is not None else [])
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
                self._tick(self.inotify is not None and self.inotify.fd in ready)
        finally:
            self.notifier.send("STOPPING=1")
            self.status = "stopping"
            self.stop()
            self.status = "stopped"
            with contextlib.suppress(OSError):
                self.write_state(force=True)
            self.log.event("stopped", pid=os.getpid())
            signal.set_wakeup_fd(old_wakeup)
            os.close(wake_r)
            os.close(wake_w)

    def _tick(self, inotify_ready: bool) -> None:
        now = self.clock()
        if inotify_ready and self.inotify is not None:
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
                self.inotify.close()
                self.inotify = None
                self.watch_mode = "poll"
                self.dir_mtime_ns = None
                self.rewatch = True
            if overflow:
                self.scan(full=True)
            elif names:
                self.scan(names=names)
        pending_due = any(
            self.index[n].outcome == "pending" and self.index[n].retry_at <= now
            for n in self.watched
        )
        if self.poll_requested or now - self.last_poll >= self.config.poll_seconds or pending_due:
            self.poll_requested = False
            self.last_poll = now
            full = now - self.last_full_scan >= FULL_SCAN_SECONDS
            self.scan(full=full)
            if full:
                self.prune()
        self.write_state()
        self.notifier.ping(self.clock())

    def _next_timeout(self) -> float:
        now = self.clock()
        deadlines = [
            self.last_poll + self.config.poll_seconds,
            self.last_state_write + self.config.heartbeat_seconds,
        ]
        if self.state_dirty:
            deadlines.append(self.last_state_write + STATE_MIN_INTERVAL)
        ping = self.notifier.ping_due()
        if ping is not None:
            deadlines.append(ping)
        for name in self.watched:
            info = self.index[name]
            if info.outcome == "pending":
                deadlines.append(info.retry_at)
        return max(0.0, min(deadlines) - now)


def read_record_bytes(path: str, cap: int) -> Tuple[bytes, Tuple[int, int, int, int]]:
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
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
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
        after = os.fstat(fd)
        if stat_sig(after) != stat_sig(before):
            raise RecordRejected("file changed while being read", True)
        return b"".join(chunks), stat_sig(after)
    finally:
        os.close(fd)


def read_json_quiet(path: str) -> Optional[dict]:
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read(4 << 20))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


# ======================================================================================
# CLI
# ======================================================================================


def _err(message: str) -> None:
    print(f"dispatcher: {message}", file=sys.stderr)


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
        log = _open_log(config)
    except OSError as exc:
        _err(f"cannot open log {config.log_file}: {exc.strerror}")
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
            daemon.status = "stopped"
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
    """state.json plus liveness; (doc, state_readable)."""
    doc = read_json_quiet(config.state_file)
    readable = doc is not None
    doc = dict(doc or {})
    running = lock_holder_running(config.lock_file)
    ts = parse_iso_utc(doc.get("timestamp_utc"))
    age = None if ts is None else round(time.time() - ts, 3)
    fresh = age is not None and age <= 2 * config.heartbeat_seconds + 5
    doc.update(
        {
            "running": running,
            "state_age_s": age,
            "healthy": bool(running and fresh and doc.get("status") == "running"),
            "state_file": config.state_file,
        }
    )
    return doc, readable


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
                print(f"{key + ':':<18}{doc[key]}")
        for key, value in sorted((doc.get("counters") or {}).items()):
            print(f"  {key + ':':<16}{value}")
    return EXIT_OK if readable else EXIT_RUNTIME


def _open_ledger_ro(config: Config) -> Optional[Ledger]:
    if not os.path.exists(config.ledger_file):
        return None
    try:
        return Ledger(config.ledger_file, readonly=True)
    except sqlite3.Error as exc:
        _err(f"cannot read ledger {config.ledger_file}: {exc}")
        return None


def list_requests(config: Config) -> List[dict]:
    result = []
    try:
        names = sorted(n for n in os.listdir(config.requests_dir) if is_record_name(n))
    except OSError:
        return result
    for name in names:
        doc = read_json_quiet(os.path.join(config.requests_dir, name)) or {}
        result.append(
            {
                k: doc.get(k)
                for k in (
                    "dispatch_id",
                    "status",
                    "decision_type",
                    "source_decision_id",
                    "timestamp_utc",
                )
            }
        )
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
            f"  {req['dispatch_id']}  {req['status']}  {req['decision_type']}  "
            f"<- {req['source_decision_id']}"
        )
    print(f"records not dispatched (from the ledger): {len(problems)}")
    for row in problems:
        print(f"  {row['outcome']:<9} {row['file']}  {row['reason'] or ''}")
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
    config = _load_or_exit(config_path)
    path = _find_record(config, ref)
    if path is None:
        _err(f"no record file or known decision_id {ref!r} (looked in {config.records_dir})")
        return EXIT_RUNTIME
    result: Dict[str, Any] = {"file": path}
    ledger = _open_ledger_ro(config)
    try:
        if ledger is not None:
            result["ledger_file_row"] = ledger.get_file(os.path.basename(path))
        try:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                raise RecordRejected("symlink (never followed)")
            data, _sig = read_record_bytes(path, config.max_record_bytes)
            record = parse_record(data)
            decision_id, _type = validate_record(record)
        except (RecordRejected, OSError) as exc:
            result.update({"would": "rejected", "reason": getattr(exc, "reason", str(exc))})
        else:
            prior = ledger.get_decision(decision_id) if ledger is not None else None
            last = ledger.last_emits() if ledger is not None else {}
            decision = decide(
                record,
                record_path=os.path.abspath(path),
                mtime=st.st_mtime,
                config=config,
                now=time.time(),
                last_emit=last,
            )
            result.update(
                {
                    "decision_id": decision_id,
                    "ledger_decision_row": prior,
                    "route": decision.route,
                    "would": decision.outcome,
                    "reason": decision.reason,
                    "dispatch_id": decision.dispatch_id,
                    "request": decision.request,
                }
            )
            if prior is not None and prior["outcome"] in DISPATCHED_OUTCOMES:
                result["would"] = "nothing (already handled)"
                result["reason"] = (
                    f"decision already {prior['outcome']} as "
                    f"{prior['dispatch_id']}; no second request"
                )
    finally:
        if ledger is not None:
            ledger.close()
    print(json.dumps(result, indent=2, sort_keys=True, default=str))
    return EXIT_OK


def _owner_of(folder: str) -> Optional[Tuple[int, int]]:
    """When run as root, files we create belong to the folder's owner (the service user)."""
    if os.geteuid() != 0:
        return None
    st = os.stat(folder)
    return st.st_uid, st.st_gid


def cmd_replay(config_path: str, decision_id: str) -> int:
    config = _load_or_exit(config_path)
    if not os.path.exists(config.ledger_file):
        _err(f"no ledger at {config.ledger_file}: nothing has been handled yet")
        return EXIT_RUNTIME
    ledger = Ledger(config.ledger_file)
    log = _open_log(config, to_stderr=False, rotate=False)
    try:
        prior = ledger.get_decision(decision_id)
        if prior is None:
            _err(
                f"decision_id {decision_id!r} is not in the ledger (not seen, or pruned); "
                f"see 'list'"
            )
            return EXIT_RUNTIME
        if prior["outcome"] == "emitted":
            _err(
                f"decision {decision_id} was already dispatched as {prior['dispatch_id']}; "
                "approve that request instead (a new one would need a second approval)"
            )
            return EXIT_RUNTIME
        name = prior["file"]
        path = os.path.join(config.records_dir, name or "")
        try:
            st = os.lstat(path)
            data, sig = read_record_bytes(path, config.max_record_bytes)
            record = parse_record(data)
        except (RecordRejected, OSError) as exc:
            _err(f"cannot replay {decision_id}: record {path}: {getattr(exc, 'reason', exc)}")
            return EXIT_RUNTIME
        now = time.time()
        decision = decide(
            record,
            record_path=path,
            mtime=st.st_mtime,
            config=config,
            now=now,
            last_emit={},
            force=True,
        )
        if decision.outcome != "emitted" or decision.request is None:
            _err(f"cannot replay {decision_id}: {decision.reason}")
            return EXIT_RUNTIME
        dispatch_id = decision.dispatch_id or ""
        target = os.path.join(config.requests_dir, dispatch_id + ".json")
        if not os.path.exists(target):
            write_file_durably(
                target, dump_json(decision.request), owner=_owner_of(config.requests_dir)
            )
        ledger.begin()
        ledger.put_decision(
            decision_id,
            "emitted",
            dispatch_id,
            decision.route,
            decision.decision_epoch,
            name,
            "replayed by operator",
            now,
        )
        ledger.put_file(
            name,
            sig,
            "emitted",
            decision_id,
            dispatch_id,
            f"replayed by operator (was {prior['outcome']})",
            now,
        )
        ledger.commit()
        log.event(
            "replayed",
            file=name,
            decision_id=decision_id,
            dispatch_id=dispatch_id,
            reason=f"replayed by operator (was {prior['outcome']})",
        )
        print(
            json.dumps(
                {
                    "ok": True,
                    "dispatch_id": dispatch_id,
                    "request": target,
                    "status": decision.request["status"],
                }
            )
        )
        return EXIT_OK
    finally:
        ledger.close()
        log.close()


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
    epoch, _src = decision_time(record, decision_id, now)
    dispatch_id = make_dispatch_id(epoch, decision_type, decision_id)
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
        expected_approval, _source = approval_for(route, config)
        expected_status = "awaiting-approval" if expected_approval else "queued"
        check(
            "status",
            request.get("status") == expected_status,
            expected=expected_status,
            actual=request.get("status"),
        )
        check(
            "requires_approval",
            request.get("requires_approval") is expected_approval,
            expected=expected_approval,
            actual=request.get("requires_approval"),
        )
        want = {
            "target_kind": route.target_kind,
            "target_ref": route.target_ref,
            "target_env": route.target_env,
            "execution_plane": route.execution_plane,
        }
        got = {k: request.get(k) for k in want}
        check("target", got == want, expected=want, actual=got)
        check(
            "source",
            request.get("source_decision_id") == decision_id
            and request.get("dispatch_id") == dispatch_id
            and request.get("execution_mode") == EXECUTION_MODE,
            source_decision_id=request.get("source_decision_id"),
        )
    removed = []
    problems = []
    for path in (record_path, request_path):
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
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "run"
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
            return cmd_replay(args.config, args.decision_id)
    except SystemExit as exc:
        return int(exc.code or 0)
    except (OSError, sqlite3.Error) as exc:
        _err(f"{command}: {exc}")
        return EXIT_RUNTIME
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
