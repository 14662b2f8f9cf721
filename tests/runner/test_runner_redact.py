"""Secrets never reach the rerun inputs file nor the evidence copy of the inputs."""

from __future__ import annotations

import pytest

from hyops_runner.redact import MASK, is_secret_name, masked, rerun_inputs

PEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n"


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "db_password",
        "vault_token",
        "api_key",
        "apikey",
        "ssh_private_key",
        "client_secret",
        "credentials",
        "become_passphrase",
        "GCP_TOKEN",
    ],
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "ssh_private_key_file",
        "token_path",
        "secret_ref",
        "credentials_dir",
        "target_user",
        "dispatcher_routes",
        "tokenizer",
        "required_env",
    ],
)
def test_not_secret_names(name: str) -> None:
    assert not is_secret_name(name)


def test_rerun_inputs_drop_secrets_and_say_so() -> None:
    doc = {
        "target_user": "root",
        "ssh_private_key_file": "/root/.ssh/id_ed25519",
        "api_token": "s3cr3t",
        "nested": {"db_password": "pw", "ok": 1, "keys": ["plain", PEM]},
        "inline_key": PEM,
    }
    clean, notes = rerun_inputs(doc)
    assert clean == {
        "target_user": "root",
        "ssh_private_key_file": "/root/.ssh/id_ed25519",
        "nested": {"ok": 1, "keys": ["plain"]},
    }
    text = "\n".join(notes)
    for path in ("api_token", "nested.db_password", "inline_key", "nested.keys.1"):
        assert f"removed secret: {path} " in text
    assert "HYOPS_INPUT_NESTED__DB_PASSWORD" in text
    assert "s3cr3t" not in text and "pw" not in text.replace("password", "")


def test_masked_keeps_shape() -> None:
    doc = {"a_token": "x", "b": [PEM, "y"], "c": {"secret": {"deep": 1}}}
    assert masked(doc) == {"a_token": MASK, "b": [MASK, "y"], "c": {"secret": MASK}}


def test_rerun_notes_name_values_that_came_from_the_environment() -> None:
    doc = {"inventory_groups": {"edge_control": [{"name": "a", "host": "b"}]}, "db_password": "x"}
    from_env = {("inventory_groups", "edge_control"), ("db_password",)}
    clean, notes = rerun_inputs(doc, from_env)
    assert clean == {"inventory_groups": doc["inventory_groups"]}
    assert notes[-1] == "# kept from the environment of the run: inventory_groups.edge_control"
    assert sum("db_password" in n for n in notes) == 1  # named once, as a removed secret
