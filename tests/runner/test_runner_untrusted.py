"""Inputs a person pasted are data, of bounded size, and never echoed when they are keys.

Each test drives ``python -m hyops_runner.cli`` as a real process and reproduces a
finding of issue 15 ("Runner"); each failed on the runner before its fix.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from runner_helpers import FixtureEnv, Run, hyops

REF = "platform/network/decision-dispatcher"
GOOD: dict[str, Any] = {
    "inventory_groups": {"edge_control": [{"name": "ctrl-01", "host": "127.0.0.1"}]},
    "connectivity_check": False,
    "dispatcher_routes": {
        "cutover": {
            "target_kind": "blueprint",
            "target_ref": "dr/postgresql-ha-failover-gcp@v1",
            "target_env": "dr",
            "execution_plane": "runner-local",
        }
    },
}
# Fake key material: the shapes people paste, none of them a usable key. FRAGMENT is a
# piece of each body that must never reach a terminal.
FRAGMENT = "QyNTUxOQAAACBzZWNyZXRib2R5"
KEYS = {
    "openssh": "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    f"b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n{FRAGMENT}\n"
    "-----END OPENSSH PRIVATE KEY-----\n",
    "rsa": f"-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA{FRAGMENT}\n"
    "-----END RSA PRIVATE KEY-----",
    "pkcs8 flattened": f"-----BEGIN PRIVATE KEY----- MIIEvQIBADANBgkq{FRAGMENT} "
    "-----END PRIVATE KEY-----",
    "openssh body only": f"b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ{FRAGMENT}",
    "putty": "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nPrivate-Lines: 1\n"
    f"{FRAGMENT}\n",
    "vault": f"$ANSIBLE_VAULT;1.1;AES256\n6638{FRAGMENT}\n",
}


def run_module(command: str, inputs: Path, *more: str, env: dict[str, str] | None = None) -> Run:
    root = inputs.parent / "runtime"
    return hyops([command, "--root", str(root), "--module", REF, "--inputs", str(inputs), *more],
                 env=env)  # fmt: skip


def assert_no_key(run: Run) -> None:
    out = run.stdout + run.stderr
    assert FRAGMENT not in out, out
    assert "BEGIN" not in out and "ANSIBLE_VAULT" not in out and "PuTTY" not in out, out
    assert "Traceback" not in out, out


def place(doc: dict[str, Any], where: str, value: str) -> dict[str, Any]:
    doc = json.loads(json.dumps(doc))
    if where == "target_user":
        doc["target_user"] = value
    elif where == "ssh_private_key_file":
        doc["ssh_private_key_file"] = value
    elif where == "host ansible_user":
        doc["inventory_groups"]["edge_control"][0]["ansible_user"] = value
    elif where == "route target_ref":
        doc["dispatcher_routes"]["cutover"]["target_ref"] = value
    return doc


@pytest.mark.parametrize("command", ["validate", "preflight", "apply"])
@pytest.mark.parametrize(
    "where", ["target_user", "ssh_private_key_file", "host ansible_user", "route target_ref"]
)
def test_key_material_is_never_printed_whatever_the_key(
    tmp_path: Path, command: str, where: str
) -> None:
    inputs = tmp_path / "inputs.yml"
    inputs.write_text(yaml.safe_dump(place(GOOD, where, KEYS["openssh"])))
    run = run_module(command, inputs)
    assert run.returncode == 1
    assert_no_key(run)
    key_path = {"host ansible_user": "edge_control[0].ansible_user",
                "route target_ref": "cutover.target_ref"}.get(where, where)  # fmt: skip
    assert f"{key_path}: " in run.stderr and "key material" in run.stderr, run.stderr
    assert not (tmp_path / "runtime").exists()


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_no_shape_of_key_material_is_printed(tmp_path: Path, kind: str) -> None:
    inputs = tmp_path / "inputs.yml"
    inputs.write_text(yaml.safe_dump(GOOD))
    for command in ("validate", "preflight"):
        # from the inputs file, from HYOPS_INPUT_*, and in the --json document
        inputs.write_text(yaml.safe_dump(place(GOOD, "target_user", KEYS[kind])))
        assert_no_key(run_module(command, inputs))
        inputs.write_text(yaml.safe_dump(GOOD))
        env = {"HYOPS_INPUT_TARGET_PORT": KEYS[kind]}
        run = run_module(command, inputs, env=env)
        assert run.returncode == 1 and "inputs.target_port: " in run.stderr, run.stderr
        assert_no_key(run)
    run = run_module("preflight", inputs, "--json", env={"HYOPS_INPUT_TARGET_PORT": KEYS[kind]})
    assert run.returncode == 1 and json.loads(run.stdout)["input_problems"]
    assert_no_key(run)


def test_key_material_refused_by_the_inventory_is_not_printed(fixture_env: FixtureEnv) -> None:
    # The fixture's schema does not hold target_user: the inventory writer refuses it.
    fixture_env.write_inputs(target_user=KEYS["openssh"])
    for command in ("validate", "preflight", "apply"):
        run = fixture_env.run(command)
        assert run.returncode == 1 and "inputs.target_user: " in run.stderr, run.stderr
        assert_no_key(run)
    assert not fixture_env.state_file.exists()


ESCAPED = [
    # a Python string literal, as the INI inventory reader decodes it
    r"""'\x7b\x7b lookup("ansible.builtin.pipe", "touch MARKER") \x7d\x7d'""",
    r'''"\u007b\u007b lookup('ansible.builtin.pipe', 'touch MARKER') \u007d\u007d"''',
    r"""'\173\173 lookup("ansible.builtin.pipe", "touch MARKER") \175\175'""",
    # the bare escapes
    r"""\x7b\x7b lookup('ansible.builtin.pipe', 'touch MARKER') \x7d\x7d""",
]


ESCAPE_CASES = [
    *(("target_user", value) for value in ESCAPED),
    ("host ansible_user", ESCAPED[0]),
    ("host ansible_user", ESCAPED[1]),
    ("host note", ESCAPED[0]),
]


@pytest.mark.parametrize(("field", "value"), ESCAPE_CASES)
def test_escaped_braces_in_inventory_values_are_never_templated(
    fixture_env: FixtureEnv, field: str, value: str
) -> None:
    marker = fixture_env.marker_dir / "pwned"
    value = value.replace("MARKER", str(marker))
    host: dict[str, Any] = {"name": "ctl", "host": "localhost", "ansible_connection": "local"}
    extra: dict[str, Any] = {}
    if field == "target_user":
        extra["target_user"] = value
    else:
        host[field.split()[1]] = value
    fixture_env.write_inputs(inventory_groups={"edge_control": [host]}, **extra)
    run = fixture_env.run("apply")
    assert run.returncode == 0, run.stdout + run.stderr
    assert not marker.exists()
    # Ansible reads back exactly the text that was written: not decoded, not templated.
    inventory = json.loads((Path(fixture_env.state()["evidence_dir"]) / "meta.json").read_text())[
        "inventory"
    ]
    listed = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-inventory"), "-i", inventory, "--list"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    hostvars = json.loads(listed.stdout)["_meta"]["hostvars"]["ctl"]
    got = hostvars["ansible_user" if field != "host note" else "note"]
    assert got == {"__ansible_unsafe": value}  # ansible-inventory's mark of a !unsafe value
    assert not marker.exists()


def test_long_aliased_scalars_are_refused_by_expanded_size(fixture_env: FixtureEnv) -> None:
    # ~106 KB of text, 2,000 aliases of one 100 KB string: 200 MB once written out.
    doc = yaml.safe_load(fixture_env.inputs_file.read_text())
    text = yaml.safe_dump(doc) + "blob: &b '" + "x" * 100_000 + "'\n"
    text += "copies: [" + ", ".join(["*b"] * 2000) + "]\n"
    assert len(text) < 120_000
    fixture_env.inputs_file.write_text(text)
    t0 = time.monotonic()
    for command in ("validate", "apply"):
        run = fixture_env.run(command)
        assert run.returncode == 1, run.stdout + run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and "expands to more than" in lines[0] and "bytes" in lines[0]
        assert lines[0].startswith(f"hyops: invalid inputs ({fixture_env.inputs_file}): ")
    assert time.monotonic() - t0 < 20
    assert not fixture_env.root.exists()


def deep_json(levels: int) -> str:
    return '{"a": ' * levels + "1" + "}" * levels


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HYOPS_INPUTS_JSON", deep_json(5000)),
        ("HYOPS_INPUTS_JSON", deep_json(250)),  # parses, but over the budget
        ("HYOPS_INPUT_FIXTURE_NOTE", "[" * 5000 + "]" * 5000),
        ("HYOPS_INPUT_" + "__".join(["a"] * 900), "1"),
        ("HYOPS_INPUT_FIXTURE_NOTE__" + "__".join(["a"] * 150), deep_json(100)),
    ],
    ids=["json-5000", "json-250", "value-5000", "path-900", "path-plus-value"],
)
def test_deep_environment_inputs_are_one_line(
    fixture_env: FixtureEnv, name: str, value: str
) -> None:
    for command in ("validate", "preflight", "apply"):
        run = fixture_env.run(command, env={name: value})
        assert run.returncode == 1, run.stdout + run.stderr
        assert "Traceback" not in run.stderr and "RecursionError" not in run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1, run.stderr
        assert f"hyops: invalid inputs ({name[:60]}" in lines[0]
        assert "nested more than 200 levels deep" in lines[0], lines[0]
    assert not fixture_env.root.exists()


def test_a_deep_inputs_file_is_one_line(fixture_env: FixtureEnv) -> None:
    fixture_env.inputs_file.write_text("x: " + "[" * 5000 + "]" * 5000 + "\n")
    run = fixture_env.run("validate")
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "nested more than 200 levels deep" in lines[0], run.stderr
    assert str(fixture_env.inputs_file) in lines[0]


def test_inputs_within_the_budget_still_work(fixture_env: FixtureEnv) -> None:
    doc = yaml.safe_load(fixture_env.inputs_file.read_text())
    text = yaml.safe_dump(doc) + "blob: &b '" + "x" * 1000 + "'\ncopies: [*b, *b, *b]\n"
    fixture_env.inputs_file.write_text(text)
    env = {"HYOPS_INPUTS_JSON": deep_json(50), "HYOPS_INPUT_FIXTURE_NOTE": deep_json(50)}
    run = fixture_env.run("validate", env=env)
    assert run.returncode == 0, run.stdout + run.stderr
