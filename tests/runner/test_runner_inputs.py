"""Input merge order: defaults < --inputs file < HYOPS_INPUTS_JSON < HYOPS_INPUT_*."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hyops_runner.errors import InputError
from hyops_runner.inputs import merge, resolve

DEFAULTS = {
    "target_user": "root",
    "target_port": 22,
    "ssh_private_key_file": "",
    "become": True,
    "required_env": ["A"],
    "dispatcher_routes": {},
    "nested": {"a": 1, "b": {"c": "keep", "d": "x"}},
}


def test_defaults_alone() -> None:
    got = resolve(DEFAULTS, None, {})
    assert got.values == DEFAULTS
    assert got.from_env == set()


def test_each_layer_overrides_the_one_before(make_inputs: Callable[[str], Path]) -> None:
    path = make_inputs("target_user: fileuser\ntarget_port: 2201\nbecome: false\n")
    environ = {
        "HYOPS_INPUTS_JSON": '{"target_port": 2202, "target_user": "jsonuser"}',
        "HYOPS_INPUT_TARGET_PORT": "2203",
    }
    got = resolve(DEFAULTS, str(path), environ).values
    assert got["become"] is False  # file over default
    assert got["target_user"] == "jsonuser"  # JSON over file
    assert got["target_port"] == 2203  # HYOPS_INPUT_* over JSON, JSON-decoded to int


def test_mappings_merge_recursively_lists_replace(make_inputs: Callable[[str], Path]) -> None:
    path = make_inputs("nested:\n  b:\n    d: y\nrequired_env: [B, C]\n")
    got = resolve(DEFAULTS, str(path), {}).values
    assert got["nested"] == {"a": 1, "b": {"c": "keep", "d": "y"}}
    assert got["required_env"] == ["B", "C"]


def test_blank_string_does_not_blank_a_value(make_inputs: Callable[[str], Path]) -> None:
    path = make_inputs("ssh_private_key_file: /k/id\n")
    environ = {"HYOPS_INPUTS_JSON": '{"ssh_private_key_file": ""}'}
    got = resolve(DEFAULTS, str(path), environ).values
    assert got["ssh_private_key_file"] == "/k/id"
    assert merge({"a": ""}, {"a": "x"}) == {"a": "x"}
    assert merge({"a": "x"}, {"a": ""}) == {"a": "x"}


def test_env_path_is_lowercased_and_split_on_double_underscore() -> None:
    environ = {
        "HYOPS_INPUT_DISPATCHER_ROUTES__CUTOVER__TARGET_ENV": "dr",
        "HYOPS_INPUT_DISPATCHER_ROUTES__CUTOVER__REQUIRES_APPROVAL": "false",
        "HYOPS_INPUT_NESTED__B__C": "not json {",
    }
    got = resolve(DEFAULTS, None, environ)
    assert got.values["dispatcher_routes"] == {
        "cutover": {"target_env": "dr", "requires_approval": False}
    }
    assert got.values["nested"]["b"] == {"c": "not json {", "d": "x"}
    assert ("dispatcher_routes", "cutover", "target_env") in got.from_env
    assert ("target_user",) not in got.from_env


def test_env_json_must_be_an_object() -> None:
    with pytest.raises(InputError, match=r"HYOPS_INPUTS_JSON.*must be a JSON object"):
        resolve(DEFAULTS, None, {"HYOPS_INPUTS_JSON": "[1]"})
    with pytest.raises(InputError, match="not valid JSON"):
        resolve(DEFAULTS, None, {"HYOPS_INPUTS_JSON": "{nope"})


def test_env_input_with_empty_segment_is_refused() -> None:
    with pytest.raises(InputError, match="empty path segment"):
        resolve(DEFAULTS, None, {"HYOPS_INPUT_A____B": "1"})


def test_empty_inputs_file_means_defaults(make_inputs: Callable[[str], Path]) -> None:
    assert resolve(DEFAULTS, str(make_inputs("")), {}).values == DEFAULTS
