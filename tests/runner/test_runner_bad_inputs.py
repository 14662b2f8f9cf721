"""Bad input files: each gives a one-line error naming the key path, exit 1, nothing written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from hyops_runner.cli import main

REF = "platform/network/decision-dispatcher"
GOOD = """\
inventory_groups:
  edge_control:
    - {name: ctrl-01, host: 10.10.0.5}
dispatcher_routes:
  cutover:
    target_kind: blueprint
    target_ref: dr/postgresql-ha-failover-gcp@v1
    target_env: dr
    execution_plane: runner-local
"""


def with_route(**route: object) -> str:
    doc = yaml.safe_load(GOOD)
    doc["dispatcher_routes"]["cutover"].update(route)
    doc["dispatcher_routes"]["cutover"] = {
        k: v for k, v in doc["dispatcher_routes"]["cutover"].items() if v != "<drop>"
    }
    return yaml.safe_dump(doc)


def with_top(**top: object) -> str:
    doc = yaml.safe_load(GOOD)
    doc.update(top)
    return yaml.safe_dump(doc)


R = "inputs.dispatcher_routes.cutover"
CASES = [
    (with_route(execution_plane="moon"), f"{R}.execution_plane: must be one of runner-local,"),
    (with_route(target_kind="playbook"), f"{R}.target_kind: must be one of blueprint, module"),
    (with_route(target_ref="DR/Upper"), f'{R}.target_ref: "DR/Upper" must match'),
    (with_route(target_env=""), f"{R}.target_env: must not be empty"),
    (with_route(requires_approval=None), f"{R}.requires_approval: must be of type boolean"),
    (with_route(requires_approval="false"), f"{R}.requires_approval: must be of type boolean"),
    (with_route(execution_plane="<drop>"), f"{R}.execution_plane: is required"),
    (with_route(coalesce_seconds=-1), f"{R}.coalesce_seconds: must be >= 0"),
    (with_route(approval_ttl_seconds=5), f"{R}.approval_ttl_seconds: must be >= 60"),
    (with_route(colour="red"), f"{R}.colour: unknown key"),
    (with_top(dispatcher_poll_seconds=2), "inputs.dispatcher_poll_seconds: must be >= 5"),
    (with_top(dispatcher_execution_mode="execute"), "inputs.dispatcher_execution_mode: must be"),
    (with_top(dispatcher_routes={}), "inputs.dispatcher_routes: must not be empty"),
    (with_top(dispatcher_pol_seconds=30), "inputs.dispatcher_pol_seconds: unknown key"),
    (with_top(target_port=70000), "inputs.target_port: must be <= 65535"),
    (with_top(dispatcher_root="relative/path"), "inputs.dispatcher_root:"),
    (with_top(dispatcher_log_level="TRACE"), "inputs.dispatcher_log_level: must be one of"),
    (with_top(become="yes"), "inputs.become: must be of type boolean"),
    (with_top(dispatcher_service_user="root"), "inputs.dispatcher_service_user:"),
    (with_top(required_env=[1]), "inputs.required_env[0]: must be of type string"),
    (
        with_top(inventory_groups={"edge_control": [{"name": "ctrl-01"}]}),
        "inputs.inventory_groups.edge_control[0].host: is required",
    ),
    (with_top(inventory_groups={"edge_control": []}), "inputs.inventory_groups.edge_control:"),
    (
        with_top(inventory_groups={"edge_control": [{"name": "c", "host": "h", "x": {"y": 1}}]}),
        "inputs.inventory_groups.edge_control[0].x: must be of type",
    ),
    (with_top(connectivity_check="true"), "inputs.connectivity_check: must be of type boolean"),
    (
        "dispatcher_routes: [cutover]\n" + GOOD.split("dispatcher_routes:")[0],
        "inputs.dispatcher_routes: must be of type object",
    ),
    ("- just\n- a list\n", "inputs: top level must be a mapping of input names, got a list"),
    ("dispatcher_routes:\n  cutover: {\n", "not valid YAML: line 3 column 1"),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[1][:60] for c in CASES])
def test_bad_inputs_one_line_with_path(
    text: str,
    expected: str,
    make_inputs: Callable[[str], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in [k for k in list(__import__("os").environ) if k.startswith("HYOPS_")]:
        monkeypatch.delenv(name)
    path = make_inputs(text)
    code = main(["apply", "--env", "dev", "--module", REF, "--inputs", str(path)])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 1
    assert len(lines) == 1, err
    assert lines[0].startswith(f"hyops: invalid inputs ({path}): ")
    assert expected in lines[0], lines[0]
    assert not (tmp_path / "home").exists()  # validation happens before anything is written


def test_many_violations_are_all_listed(
    make_inputs: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_inputs(with_route(execution_plane="moon", target_kind="x") + "become: 1\n")
    code = main(["apply", "--root", str(tmp_path / "rt"), "--module", REF, "--inputs", str(path)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert [ln.split("): ", 1)[1].split(":")[0] for ln in lines] == [
        "inputs.become",
        f"{R}.execution_plane",
        f"{R}.target_kind",
    ]


def test_destroy_does_not_need_routes(make_inputs: Callable[[str], Path]) -> None:
    from hyops_runner.modules import find_module
    from hyops_runner.validate import input_problems

    spec = find_module(REF)
    values = {**spec.defaults, "inventory_groups": {"edge_control": [{"name": "c", "host": "h"}]}}
    assert input_problems(spec.schema_dir, "destroy", values) == []
    assert input_problems(spec.schema_dir, "apply", values) == [
        "inputs.dispatcher_routes: must not be empty"
    ]
