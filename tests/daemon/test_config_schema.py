"""One source per rule: the daemon's config checks equal schemas/dispatcher-config.schema.json
(and route.schema.json). Every bound is read from the schema here, so neither copy can
drift: for each integer key the daemon must accept min and max, refuse min-1 and max+1
exactly as the schema does, and use the schema's default when the key is left out."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hyops_dispatcher.config import (
    CONFIG_KEYS,
    CONFIG_REQUIRED,
    ROUTE_KEYS,
    ConfigError,
    parse_config,
)

from hyops_runner.schemas import load_schema, violations

from .conftest import BASE_CONFIG

CONFIG_SCHEMA = load_schema("dispatcher-config")
ROUTE_SCHEMA = load_schema("route")


def integer_bounds(schema: dict[str, Any]) -> list[tuple[str, Any, Any, Any]]:
    """(key, minimum, maximum, default) of every integer property."""
    out = []
    for key, spec in sorted(schema["properties"].items()):
        if spec.get("type") == "integer":
            out.append((key, spec.get("minimum"), spec.get("maximum"), spec.get("default")))
    return out


def cases(schema: dict[str, Any]) -> list[tuple[str, int, bool]]:
    rows = []
    for key, lo, hi, _default in integer_bounds(schema):
        assert lo is not None, f"{key}: the schema gives no minimum"
        rows += [(key, lo, True), (key, lo - 1, False)]
        if hi is not None:
            rows += [(key, hi, True), (key, hi + 1, False)]
        else:
            rows.append((key, 10**12, True))  # no maximum: a huge value is fine
    return rows


def daemon_accepts(doc: dict[str, Any]) -> tuple[bool, str]:
    try:
        parse_config(json.dumps(doc).encode(), "/srv/dd/config/config.json")
    except ConfigError as exc:
        return False, str(exc)
    return True, ""


def test_the_schemas_have_integer_bounds_to_compare() -> None:
    keys = {k for k, *_ in integer_bounds(CONFIG_SCHEMA)}
    assert {"poll_seconds", "heartbeat_seconds", "max_record_bytes", "log_backup_count"} <= keys
    assert {k for k, *_ in integer_bounds(ROUTE_SCHEMA)} == {
        "coalesce_seconds",
        "approval_ttl_seconds",
    }


@pytest.mark.parametrize(("key", "value", "in_bounds"), cases(CONFIG_SCHEMA))
def test_config_bound_agrees_with_the_schema(key: str, value: int, in_bounds: bool) -> None:
    doc = {**BASE_CONFIG, key: value}
    # The partner of the one cross-key rule (retention >= max age) is kept out of the way.
    if key == "ledger_retention_seconds":
        doc["max_record_age_seconds"] = 60
    if key == "max_record_age_seconds":
        doc["ledger_retention_seconds"] = max(value, 60)
    schema_ok = not violations("dispatcher-config", doc)
    ok, message = daemon_accepts(doc)
    assert schema_ok is in_bounds, violations("dispatcher-config", doc)
    assert ok is schema_ok, message
    if not ok:
        assert message.startswith(f"{key}:")  # the one-line error names the key


@pytest.mark.parametrize(("key", "value", "in_bounds"), cases(ROUTE_SCHEMA))
def test_route_bound_agrees_with_the_schema(key: str, value: int, in_bounds: bool) -> None:
    doc = copy.deepcopy(BASE_CONFIG)
    doc["routes"]["cutover"][key] = value
    schema_ok = not violations("dispatcher-config", doc)
    ok, message = daemon_accepts(doc)
    assert schema_ok is in_bounds
    assert ok is schema_ok, message
    if not ok:
        assert message.startswith(f"routes.cutover.{key}:")


DEFAULTS = [
    (key, spec["default"])
    for key, spec in sorted(CONFIG_SCHEMA["properties"].items())
    if "default" in spec
]


@pytest.mark.parametrize(("key", "default"), DEFAULTS)
def test_default_is_the_schema_default(key: str, default: Any) -> None:
    assert key not in BASE_CONFIG
    cfg = parse_config(json.dumps(BASE_CONFIG).encode(), "/srv/dd/config/config.json")
    assert getattr(cfg, key) == default


def test_every_schema_default_is_compared() -> None:
    assert len(DEFAULTS) >= 8  # every optional tunable carries its default in the schema


@pytest.mark.parametrize("key", [k for k in CONFIG_SCHEMA["required"] if k != "root"])
def test_required_keys_agree(key: str) -> None:
    doc = {k: v for k, v in BASE_CONFIG.items() if k != key}
    assert violations("dispatcher-config", doc)
    ok, message = daemon_accepts(doc)
    assert not ok and message == f"{key}: required"


def test_root_is_the_one_documented_exception() -> None:
    """`root` may be left out of the daemon's config (the folder above config/)."""
    doc = {k: v for k, v in BASE_CONFIG.items() if k != "root"}
    assert violations("dispatcher-config", doc)
    assert daemon_accepts(doc) == (True, "")


@pytest.mark.parametrize(
    ("extra", "accepted"),
    [
        ({"ledger_retention_seconds": 0}, False),  # 0 was valid before issue 15
        ({"ledger_retention_seconds": 86399}, False),  # below the default max age
        ({"ledger_retention_seconds": 86400}, True),
        ({"max_record_age_seconds": 2592001}, False),  # above the default retention
        ({"max_record_age_seconds": 7200, "ledger_retention_seconds": 3600}, False),
        ({"max_record_age_seconds": 7200, "ledger_retention_seconds": 7200}, True),
    ],
)
def test_retention_below_max_age_is_refused(extra: dict[str, int], accepted: bool) -> None:
    """Issue 15: a ledger row pruned while its record is young enough to be dispatched
    would let the same record, coming back, get a second request. The daemon refuses
    it, naming the key; the schema too whenever one of the two keys is at its default
    (JSON Schema cannot compare two values: both given, only the daemon can)."""
    doc = {**BASE_CONFIG, **extra}
    ok, message = daemon_accepts(doc)
    assert ok is accepted, message
    if not ok:
        assert message.startswith("ledger_retention_seconds: must be ")
    if len(extra) == 1:
        assert (not violations("dispatcher-config", doc)) is accepted


def test_the_daemon_knows_exactly_the_schema_keys() -> None:
    assert set(CONFIG_SCHEMA["properties"]) == CONFIG_KEYS
    assert set(ROUTE_SCHEMA["properties"]) == ROUTE_KEYS
    assert set(CONFIG_SCHEMA["required"]) - {"root"} == set(CONFIG_REQUIRED)


PATH_KEYS = (
    "root",
    "decision_records_dir",
    "requests_dir",
    "state_file",
    "ledger_file",
    "log_file",
    "approvals_dir",
)


@pytest.mark.parametrize("key", PATH_KEYS)
@pytest.mark.parametrize(
    ("value", "safe"),
    [
        ("/srv/a-b_c.d/x@y+z", True),
        ("/srv/with space", False),
        ("/srv/50%", False),
        ("/srv/$HOME", False),
        ("/srv/it's", False),
        ("/srv/{{ x }}", False),
        ("/srv/new\nline", False),
    ],
    ids=["safe", "space", "percent", "dollar", "quote", "jinja", "newline"],
)
def test_path_keys_follow_the_safe_path_rule(key: str, value: str, safe: bool) -> None:
    """Issue 11: every path key is common.schema.json safe_path, in the schema and in the
    daemon alike; the daemon names the key."""
    doc = copy.deepcopy(BASE_CONFIG)
    doc[key] = value
    assert (
        not violations("dispatcher-config", doc) if safe else violations("dispatcher-config", doc)
    )
    accepted, error = daemon_accepts(doc)
    assert accepted is safe, error
    if not safe:
        assert error.startswith(f"{key}: ") and "\n" not in error


@pytest.mark.parametrize("key", ("state_file", "log_file", "ledger_file"))
def test_own_files_deeper_inside_a_data_folder_are_refused(key: str) -> None:
    for folder in ("/srv/records", "/srv/dd/state/requests"):
        doc = copy.deepcopy(BASE_CONFIG)
        doc[key] = f"{folder}/sub/deeper/own.file"
        accepted, error = daemon_accepts(doc)
        assert not accepted and error.startswith(f"{key}: must not be inside"), error
    # A sibling that only shares a prefix is fine.
    doc = copy.deepcopy(BASE_CONFIG)
    doc[key] = "/srv/records-own/own.file"
    assert daemon_accepts(doc) == (True, "")
