"""The dispatcher config: `parse_config` (pure, the bounds of
schemas/dispatcher-config.schema.json) and `load_config`, its one read.

Invariant: a Config that exists is valid; an invalid file gives one ConfigError line that
names the file and the key. No I/O beyond the one read in `load_config`.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, NamedTuple, Optional, Tuple

from .ids import sha256
from .jsontext import reject_constant, short
from .states import (
    DEFAULT_APPROVALS_DIR,
    EXECUTION_MODE,
    EXECUTION_PLANES,
    LOG_LEVELS,
    SCHEMA_VERSION,
    TARGET_KINDS,
)

TYPE_TOKEN_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}\Z")
TARGET_REF_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._/@-]*[a-z0-9])?\Z")
TARGET_ENV_RE = re.compile(r"^\S(?:.*\S)?\Z")

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
    "supersedes",
}

# At most this many routes in one route's `supersedes` (schemas/route.schema.json).
SUPERSEDES_MAX = 16


class ConfigError(Exception):
    """The config is unusable; the message names the file and key."""


class Route(NamedTuple):
    key: str
    target_kind: str
    target_ref: str
    target_env: str
    execution_plane: str
    requires_approval: Optional[bool] = None
    coalesce_seconds: int = 0
    approval_ttl_seconds: Optional[int] = None
    # Routes whose episode a request of this route ends, and whose request still
    # awaiting approval it supersedes (failback: [cutover]). Empty: it ends none.
    supersedes: Tuple[str, ...] = ()


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
    # The bytes it was parsed from (the daemon keeps them as its running copy).
    raw: bytes = b""

    def paths(self) -> Tuple[str, ...]:
        return (
            self.root,
            self.records_dir,
            self.requests_dir,
            self.state_file,
            self.ledger_file,
            self.log_file,
        )


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _integer(
    obj: dict, key: str, default: Optional[int], minimum: int, maximum: Optional[int] = None
) -> int:
    """An integer key within [minimum, maximum] (the bounds of dispatcher-config.schema.json;
    tests/daemon/test_config_schema.py proves they agree). `default` None: required."""
    value = obj[key] if default is None else obj.get(key, default)
    bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
    if not is_int(value) or value < minimum or (maximum is not None and value > maximum):
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
        # null or "false" must never silently mean "no approval"
        # (docs/INTERFACES.md "Module inputs").
        raise ConfigError(
            f"{where}.requires_approval: must be true or false; got {short(requires)}"
        )
    coalesce = value.get("coalesce_seconds", 0)
    if not is_int(coalesce) or not 0 <= coalesce <= 604800:
        raise ConfigError(
            f"{where}.coalesce_seconds: must be an integer from 0 to 604800; got {short(coalesce)}"
        )
    ttl = value.get("approval_ttl_seconds")
    if "approval_ttl_seconds" in value and (not is_int(ttl) or not 60 <= ttl <= 2592000):
        raise ConfigError(
            f"{where}.approval_ttl_seconds: must be an integer from 60 to 2592000; got {short(ttl)}"
        )
    supersedes = value.get("supersedes", [])
    if (
        not isinstance(supersedes, list)
        or len(supersedes) > SUPERSEDES_MAX
        or not all(isinstance(s, str) and TYPE_TOKEN_RE.match(s) for s in supersedes)
        or len(set(supersedes)) != len(supersedes)
    ):
        raise ConfigError(
            f"{where}.supersedes: must be a list of at most {SUPERSEDES_MAX} distinct route "
            f"keys like ['cutover']; got {short(supersedes)}"
        )
    if key in supersedes:
        raise ConfigError(
            f"{where}.supersedes: a route cannot supersede itself (coalesce_seconds folds "
            "its own re-emissions)"
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
        supersedes=tuple(supersedes),
    )


def parse_config(raw: bytes, config_path: str) -> Config:
    """Validate config bytes; raise ConfigError naming the key. No I/O."""
    config_path = os.path.abspath(config_path)
    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=reject_constant)
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
    for key, route in routes.items():
        unknown_routes = [s for s in route.supersedes if s not in routes]
        if unknown_routes:
            raise ConfigError(
                f"routes.{key}.supersedes: {short(unknown_routes[0])} is not a route; "
                f"routes: {', '.join(sorted(routes))}"
            )

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
    max_age = _integer(obj, "max_record_age_seconds", 86400, 60)
    retention = _integer(obj, "ledger_retention_seconds", 2592000, 60)
    if retention < max_age:
        # A pruned row of a record still young enough to be dispatched: the same record
        # coming back (a folder restored) would get a second request.
        raise ConfigError(
            f"ledger_retention_seconds: must be >= max_record_age_seconds {max_age} (a record "
            f"that comes back after its ledger row was pruned would be dispatched again); "
            f"got {retention}"
        )
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
        max_record_age_seconds=max_age,
        max_record_bytes=_integer(obj, "max_record_bytes", 1048576, 1024, 67108864),
        settle_seconds=_integer(obj, "settle_seconds", 2, 0, 300),
        ledger_retention_seconds=retention,
        log_max_bytes=_integer(obj, "log_max_bytes", 10485760, 65536),
        log_backup_count=_integer(obj, "log_backup_count", 5, 1, 100),
        routes=routes,
        approvals_dir=approvals_dir,
        metrics_textfile=metrics_textfile,
        raw=bytes(raw),
    )


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
