"""Secrets stay secret, inputs stay data, the runtime root stays the operator's.

Each test here reproduces a finding of the security review (issue 11) and failed on the
runner before the fix.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from runner_helpers import FIXTURE_REF, MODULE_ROOT, FixtureEnv, hangup_listener

from hyops_runner import inputs as inputs_mod
from hyops_runner import schemas
from hyops_runner.errors import InputError
from hyops_runner.inventory import Host
from hyops_runner.preflight import Probe, ssh_probe_argv

SECRETS = {
    "ansible_become_pass": "s3cret-become",
    "ansible_ssh_pass": "s3cret-ssh",
    "ansible_sudo_pass": "s3cret-sudo",
    "db_passwd": "s3cret-passwd",
}
# "Billion laughs": 342 bytes that expand to 9**9 strings when walked.
ALIAS_BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def local_host(**extra: Any) -> dict[str, Any]:
    return {"edge_control": [{"name": "ctl", "host": "localhost", "ansible_connection": "local",
                              **extra}]}  # fmt: skip


def all_text(folder: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())


def test_secret_named_keys_leave_no_trace_in_rerun_files_or_evidence(
    fixture_env: FixtureEnv,
) -> None:
    fixture_env.write_inputs(inventory_groups=local_host(**SECRETS), vault_password="s3cret-vault")
    run = fixture_env.run("apply")
    assert run.returncode == 0, run.stderr
    doc = fixture_env.state()
    rerun_text = Path(doc["rerun_inputs_file"]).read_text()
    rerun = yaml.safe_load(rerun_text)
    entry = rerun["inventory_groups"]["edge_control"][0]
    assert set(entry) == {"name", "host", "ansible_connection"}
    assert "vault_password" not in rerun
    for value in [*SECRETS.values(), "s3cret-vault"]:
        assert value not in rerun_text
        assert value not in all_text(Path(doc["evidence_dir"]))
        assert value not in run.stdout + run.stderr
    masked = yaml.safe_load(Path(doc["resolved_inputs_file"]).read_text())
    assert masked["inventory_groups"]["edge_control"][0]["ansible_become_pass"] == "REDACTED"
    # the header says how to give back a secret that sat in a list
    note = "HYOPS_INPUT_INVENTORY_GROUPS__EDGE_CONTROL__0__ANSIBLE_BECOME_PASS=VALUE"
    assert note in rerun_text and "add it back in the inputs file" in rerun_text
    assert "numbers index the list" in rerun_text


def test_a_secret_in_a_list_can_be_given_back_by_index() -> None:
    defaults = {"inventory_groups": {}, "target_port": 22}
    doc = {"inventory_groups": {"edge_control": [{"name": "a", "host": "h"}]}}
    env = {
        "HYOPS_INPUTS_JSON": json.dumps(doc),
        "HYOPS_INPUT_INVENTORY_GROUPS__EDGE_CONTROL__0__ANSIBLE_BECOME_PASS": "pw",
    }
    values = inputs_mod.resolve(defaults, None, env).values
    assert values["inventory_groups"]["edge_control"] == [
        {"name": "a", "host": "h", "ansible_become_pass": "pw"}
    ]


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("HYOPS_INPUT_INVENTORY_GROUPS__EDGE_CONTROL__7__HOST", "no list item 7"),
        ("HYOPS_INPUT_TARGET_PORT__X", "inputs.target_port: is a number, cannot hold x"),
    ],
)
def test_a_bad_env_input_path_is_one_line_naming_the_variable(
    fixture_env: FixtureEnv, name: str, problem: str
) -> None:
    run = fixture_env.run("apply", env={name: '"x"'})
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and problem in lines[0], run.stderr
    assert "Traceback" not in run.stderr


def test_validation_errors_never_print_a_secret_value() -> None:
    doc = {"inventory_groups": {"edge_control": [
        {"name": "a", "host": "h", "ansible_become_pass": {"nested": "hunter2"}},
        {"name": "b", "host": "h2", "ansible_ssh_pass": ["hunter3"]},
    ]}}  # fmt: skip
    lines = schemas.violations("module-inputs", doc, prefix="inputs")
    text = "\n".join(lines)
    assert "edge_control[0].ansible_become_pass: must be of type" in text
    assert "hunter2" not in text and "hunter3" not in text
    assert "(value hidden)" in text


def test_preflight_writes_nothing(fixture_env: FixtureEnv) -> None:
    assert not fixture_env.root.exists()
    run = fixture_env.run("preflight", "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    assert not fixture_env.root.exists()
    checks = {c["name"]: c for c in json.loads(run.stdout)["checks"]}
    assert checks["runtime root"]["status"] == "ok"
    assert "will be created" in checks["runtime root"]["detail"]


def test_an_existing_root_is_never_chmod_ed(fixture_env: FixtureEnv) -> None:
    fixture_env.root.mkdir(mode=0o750)
    os.chmod(fixture_env.root, 0o750)
    assert fixture_env.run("apply").returncode == 0
    assert stat.S_IMODE(fixture_env.root.stat().st_mode) == 0o750


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_a_root_others_can_write_is_refused(fixture_env: FixtureEnv, mode: int) -> None:
    fixture_env.root.mkdir()
    os.chmod(fixture_env.root, mode)
    for command in ("apply", "preflight"):
        run = fixture_env.run(command)
        assert run.returncode == 1
        assert f"runtime root {fixture_env.root} is writable by group or others" in (
            run.stdout + run.stderr
        )
    assert stat.S_IMODE(fixture_env.root.stat().st_mode) == mode
    assert list(fixture_env.root.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the folder away")
def test_a_root_owned_by_someone_else_is_refused(fixture_env: FixtureEnv) -> None:
    fixture_env.root.mkdir(mode=0o700)
    os.chown(fixture_env.root, 4242, 4242)
    run = fixture_env.run("apply")
    assert run.returncode == 1
    assert f"runtime root {fixture_env.root} is owned by uid 4242, not by you" in run.stderr
    assert list(fixture_env.root.iterdir()) == []


@pytest.fixture
def ssh_listener() -> Iterator[int]:
    with hangup_listener() as port:
        yield port


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("target_user", "{{ lookup('ansible.builtin.pipe', 'touch MARKER') }}"),
        ("target_user", "-oProxyCommand=touch MARKER"),
        ("host", "-oProxyCommand=touch MARKER"),
        ("note", "{% if true %}{{ lookup('ansible.builtin.pipe', 'touch MARKER') }}{% endif %}"),
    ],
)
def test_inventory_values_are_data(
    fixture_env: FixtureEnv, ssh_listener: int, field: str, value: str
) -> None:
    marker = fixture_env.marker_dir / "pwned"
    value = value.replace("MARKER", str(marker))
    host: dict[str, Any] = {"name": "far", "host": "127.0.0.1"}
    extra: dict[str, Any] = {"target_port": ssh_listener, "connectivity_timeout_s": 2}
    if field == "target_user":
        extra["target_user"] = value
    else:
        host[field] = value
    fixture_env.write_inputs(inventory_groups={"edge_control": [host]}, **extra)
    for command in ("preflight", "apply"):
        run = fixture_env.run(command)
        assert run.returncode == 1, run.stdout
        out = run.stdout + run.stderr
        assert ("starts with '-'" in out) or ("holds '{{', '{%' or '{#'" in out), out
    assert not marker.exists()
    assert not fixture_env.state_file.exists()


def test_the_ssh_probe_ends_options_before_the_destination(tmp_path: Path) -> None:
    known = tmp_path / "ssh" / "known_hosts"
    probe = Probe(["-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={known}"])
    host = Host("edge_control", "ctl", "10.10.0.5", {})
    argv = ssh_probe_argv("ssh", host, 22, {"target_user": "ops"}, 5, probe)
    assert argv[-3:] == ["--", "ops@10.10.0.5", "true"]
    assert "StrictHostKeyChecking=accept-new" in argv and f"UserKnownHostsFile={known}" in argv


@pytest.mark.parametrize(
    "bad", ["/opt/x\nExecStartPre=/bin/sh", "/opt/with space", "/opt/%h", "rel"]
)
def test_path_inputs_are_plain_absolute_paths(bad: str) -> None:
    for key in ("dispatcher_root", "dispatcher_decision_records_dir", "dispatcher_archive_dir"):
        lines = schemas.violations("module-inputs", {key: bad}, prefix="inputs")
        assert any(line.startswith(f"inputs.{key}") for line in lines), (key, lines)
    good = schemas.violations("module-inputs", {"dispatcher_root": "/opt/a-b_c.d/@x+1"}, "inputs")
    assert not any(line.startswith("inputs.dispatcher_root") for line in good)


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yml"
    bomb.write_text(ALIAS_BOMB)
    assert len(ALIAS_BOMB.encode()) <= 600
    t0 = time.monotonic()
    with pytest.raises(InputError, match="expands to more than 100000 nodes"):
        inputs_mod.load_inputs_file(str(bomb))
    assert time.monotonic() - t0 < 2
    big = tmp_path / "big.yml"
    big.write_text("x: '" + "a" * (2 * 1024 * 1024) + "'\n")
    with pytest.raises(InputError, match="larger than"):
        inputs_mod.load_inputs_file(str(big))


def test_an_alias_bomb_never_leaves_the_state_running(fixture_env: FixtureEnv) -> None:
    assert fixture_env.run("apply").returncode == 0
    before = fixture_env.state_file.read_bytes()
    fixture_env.inputs_file.write_text(
        yaml.safe_dump(yaml.safe_load(fixture_env.inputs_file.read_text())) + ALIAS_BOMB
    )
    args = [sys.executable, "-m", "hyops_runner.cli", "apply", "--root", str(fixture_env.root),
            "--module", FIXTURE_REF, "--module-root", str(MODULE_ROOT),
            "--inputs", str(fixture_env.inputs_file)]  # fmt: skip
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("the alias bomb was expanded (no answer within 30 s)")
    assert done.returncode == 1 and "expands to more than" in done.stderr
    assert fixture_env.state_file.read_bytes() == before


def test_load_vault_env_true_is_refused_by_name(fixture_env: FixtureEnv) -> None:
    fixture_env.write_inputs(load_vault_env=True)
    run = fixture_env.run("apply")
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "inputs.load_vault_env: true is not supported" in lines[0]


@pytest.mark.parametrize("error", [MemoryError, RuntimeError])
def test_an_unexpected_error_mid_run_never_leaves_running(
    fixture_env: FixtureEnv, monkeypatch: pytest.MonkeyPatch, error: type[BaseException]
) -> None:
    from hyops_runner import lifecycle, playbook

    assert fixture_env.run("apply").returncode == 0
    good = fixture_env.state()

    def boom(*args: Any, **kwargs: Any) -> None:
        assert fixture_env.state()["status"] == "running"
        raise error("out of the blue")

    monkeypatch.setattr(playbook, "run", boom)
    req = lifecycle.Request(
        command="apply",
        module_ref=FIXTURE_REF,
        root=fixture_env.root,
        inputs_file=str(fixture_env.inputs_file),
        module_roots=[str(MODULE_ROOT)],
        environ={},
    )
    with pytest.raises(lifecycle.HyopsError, match="apply failed: out of the blue"):
        lifecycle.run_lifecycle(req, progress=None)
    doc = fixture_env.state()
    assert doc["status"] == "error" and doc["last_error"] == "out of the blue"
    assert doc["outputs"] == good["outputs"]
