"""The schemas are valid 2020-12 schemas, their examples validate, the manifest agrees."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from hyops_runner.schemas import load_schema, schema_files, violations

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = [p.name.removesuffix(".schema.json") for p in schema_files(REPO / "schemas")]
EXPECTED = {
    "common", "route", "module-inputs", "module-inputs-apply", "decision-record",
    "dispatch-request", "dispatcher-config", "dispatcher-state", "module-state",
}  # fmt: skip


def test_every_document_has_a_schema() -> None:
    assert set(SCHEMAS) >= EXPECTED


@pytest.mark.parametrize("name", SCHEMAS)
def test_schema_is_valid_against_the_2020_12_metaschema(name: str) -> None:
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(f"/{name}.schema.json")
    assert schema["title"] and schema["description"]


@pytest.mark.parametrize("name", sorted(EXPECTED - {"common"}))
def test_schema_has_examples_and_they_validate(name: str) -> None:
    examples = load_schema(name).get("examples", [])
    assert examples, f"{name} has no examples"
    for example in examples:
        assert violations(name, example) == []


@pytest.mark.parametrize(
    "name", sorted(EXPECTED - {"common", "decision-record", "module-inputs-apply"})
)
def test_formats_we_own_are_closed(name: str) -> None:
    text = json.dumps(load_schema(name))
    assert '"additionalProperties": false' in text


def test_decision_records_are_open() -> None:
    record = {"decision_id": "r-1", "decision_type": "cutover", "future_field": {"x": 1}}
    assert violations("decision-record", record) == []


def test_module_defaults_validate_against_the_inputs_schema(input_defaults: dict[str, Any]) -> None:
    assert violations("module-inputs", input_defaults, "inputs") == []


def test_defaults_alone_are_not_enough_to_apply(input_defaults: dict[str, Any]) -> None:
    assert violations("module-inputs-apply", input_defaults, "inputs") == [
        "inputs.dispatcher_routes: must not be empty",
        "inputs.inventory_groups.edge_control: is required",
    ]


def test_inputs_schema_knows_every_default_and_requires_the_contract_ones(
    input_defaults: dict[str, Any],
) -> None:
    schema = load_schema("module-inputs")
    assert set(schema["properties"]) == set(input_defaults)
    assert set(schema["required"]) <= set(input_defaults)


def test_manifest_publishes_the_five_contract_outputs(module_spec: dict[str, Any]) -> None:
    ready = load_schema("module-state")["$defs"]["outputs_ready"]["required"]
    assert sorted(module_spec["outputs"]["publish"]) == sorted(ready)
    assert module_spec["execution"] == {
        "driver": "config/ansible",
        "profile": "onprem-linux@v1.0",
        "pack_ref": {"id": "linux/common/network/35-decision-dispatcher@v1.0"},
    }
    assert module_spec["playbooks"] == {
        "apply": "playbooks/apply.yml",
        "destroy": "playbooks/destroy.yml",
    }
    assert module_spec["api_version"] == "hybridops/v1"
    assert module_spec["kind"] == "ModuleSpec"
    assert module_spec["requirements"] == {"credentials": []}


@pytest.mark.parametrize(
    "path", sorted((REPO / "examples").glob("inputs.*.yml")), ids=lambda p: p.name
)
def test_example_inputs_validate_for_apply(path: Path, input_defaults: dict[str, Any]) -> None:
    given = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert set(given) <= set(input_defaults), f"{path.name} sets keys module.yml does not know"
    # top-level keys of these files replace the (empty or scalar) defaults outright
    assert violations("module-inputs-apply", {**input_defaults, **given}, "inputs") == []
