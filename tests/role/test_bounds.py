"""Numeric bounds the role writes down agree with their one source.

Config bounds live in the daemon (whose check-config the role runs) and the schemas; the
role keeps only rules for values the daemon never sees (ready timeout, service user,
watchdog). Any bound written in argument_specs must equal its source, and the role's own
rules that mirror a module input must equal the module inputs schema.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from .rendering import REPO, ROLE

INPUTS_SCHEMA: dict[str, Any] = json.loads(
    (REPO / "schemas" / "module-inputs.schema.json").read_text(encoding="utf-8")
)["properties"]
OPTIONS: dict[str, Any] = yaml.safe_load(
    (ROLE / "meta" / "argument_specs.yml").read_text(encoding="utf-8")
)["argument_specs"]["main"]["options"]
ROLE_VARS: dict[str, Any] = yaml.safe_load((ROLE / "vars" / "main.yml").read_text("utf-8"))
Bounds = tuple[int | None, int | None]
BOUND_PHRASES = (
    (re.compile(r"\bbetween (\d+) and (\d+)", re.I), lambda m: (int(m[1]), int(m[2]))),
    (re.compile(r"\b(\d+) to (\d+)\b"), lambda m: (int(m[1]), int(m[2]))),
    (re.compile(r"\bat least (\d+)", re.I), lambda m: (int(m[1]), None)),
    (re.compile(r">= ?(\d+)"), lambda m: (int(m[1]), None)),
    (re.compile(r"\bat most (\d+)", re.I), lambda m: (None, int(m[1]))),
    (re.compile(r"<= ?(\d+)"), lambda m: (None, int(m[1]))),
)


def module_input(variable: str) -> str:
    if variable == "decision_dispatcher_records_dir":
        return "dispatcher_decision_records_dir"
    return variable.removeprefix("decision_")


def source_bounds(variable: str) -> Bounds | None:
    """What the one source says, or None when nothing bounds the variable."""
    if variable == "decision_dispatcher_watchdog_seconds":  # role-only, no module input
        return (ROLE_VARS["__decision_dispatcher_watchdog_minimum"], None)
    prop = INPUTS_SCHEMA.get(module_input(variable), {})
    if "minimum" in prop or "maximum" in prop:
        return (prop.get("minimum"), prop.get("maximum"))
    return None


def written_bounds(description: Any) -> list[Bounds]:
    text = " ".join(description) if isinstance(description, list) else str(description)
    found: list[Bounds] = []
    for pattern, bounds in BOUND_PHRASES:
        found += [bounds(m) for m in pattern.finditer(text)]
        text = pattern.sub(" ", text)
    return found


@pytest.mark.parametrize("variable", sorted(OPTIONS))
def test_argument_specs_bounds_equal_their_source(variable: str) -> None:
    source = source_bounds(variable)
    for minimum, maximum in written_bounds(OPTIONS[variable]["description"]):
        assert source is not None, f"{variable}: argument_specs states a bound nothing else has"
        if minimum is not None:
            assert minimum == source[0], f"{variable}: minimum {minimum} != source {source}"
        if maximum is not None:
            assert maximum == source[1], f"{variable}: maximum {maximum} != source {source}"


def test_the_bound_phrases_are_found() -> None:
    # the scan above must see the bounds that are written down, or it checks nothing
    assert written_bounds(OPTIONS["decision_dispatcher_ready_timeout_s"]["description"]) == [
        (5, 600)
    ]
    assert written_bounds(["x >= 7, at most 9", "from 1 to 2"]) == [(1, 2), (7, None), (None, 9)]


def test_ready_timeout_bounds_are_the_module_inputs_schemas() -> None:
    prop = INPUTS_SCHEMA["dispatcher_ready_timeout_s"]
    assert ROLE_VARS["__decision_dispatcher_ready_timeout_bounds"] == {
        "minimum": prop["minimum"],
        "maximum": prop["maximum"],
    }


def test_service_user_rule_is_the_module_inputs_schemas() -> None:
    prop = INPUTS_SCHEMA["dispatcher_service_user"]
    assert ROLE_VARS["__decision_dispatcher_service_user_pattern"] == prop["pattern"]
    assert prop["not"] == {"const": "root"}


def test_role_keeps_no_copy_of_the_config_bounds() -> None:
    # preflight must not compare a config value with a number of its own again
    preflight = (ROLE / "tasks" / "preflight.yml").read_text(encoding="utf-8")
    config_keys = json.loads(
        (REPO / "schemas" / "dispatcher-config.schema.json").read_text(encoding="utf-8")
    )["properties"]
    copies = [
        key
        for key in config_keys
        if re.search(rf"decision_dispatcher_{key}\s*\|\s*int\s*(>=|<=|>|<)", preflight)
    ]
    assert copies == []


def test_freshness_is_defined_only_by_the_daemon() -> None:
    # The role and the manifest ask `status --json` for `healthy`; neither restates when a
    # state.json tick counts as fresh (no heartbeat arithmetic, no timestamp age of its own).
    texts = {p: p.read_text(encoding="utf-8") for p in sorted(ROLE.rglob("*.yml"))}
    texts[REPO / "module.yml"] = (REPO / "module.yml").read_text(encoding="utf-8")
    restated = re.compile(r"\d\s*[*x]\s*(decision_dispatcher_|dispatcher_)?heartbeat|timestamp_utc")
    assert [str(p) for p, text in texts.items() if restated.search(text)] == []
    service = texts[ROLE / "tasks" / "service.yml"]
    assert re.search(r"- status\n\s+- --json\n", service)
    assert ").healthy" in service
