"""The package is a HybridOps plug-in as shipped: one layout both CLIs read.

HybridOps reads ``<module_root>/<ref>/spec.yml`` (the folder resolved first) and runs the
pack's ``stack/playbook.yml`` / ``destroy.playbook.yml``; its manifest check allows only
``driver``, ``profile`` and ``pack_ref: {id}`` under ``execution`` (docs/INTERFACES.md
"Runner ↔ playbooks").
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from runner_helpers import FIXTURE_REF, MODULE_ROOT, FixtureEnv, hyops

from hyops_runner.errors import HyopsError
from hyops_runner.modules import find_module, load_module

REPO = Path(__file__).resolve().parents[2]
REF = "platform/network/decision-dispatcher"
MANIFEST: dict[str, Any] = yaml.safe_load((REPO / "module.yml").read_text())
PACK_ID = MANIFEST["execution"]["pack_ref"]["id"]
STACK = REPO / "packs" / "config" / "ansible" / PACK_ID / "stack"
UPSTREAM_INPUTS = {
    "dispatcher_role_fqcn": "hybridops.common.decision_dispatcher",
    "ssh_proxy_jump_auto": False,
    "ssh_proxy_jump_host": "",
    "ssh_proxy_jump_user": "root",
    "ssh_proxy_jump_port": 22,
    "load_vault_env": False,
}


def test_manifest_execution_holds_only_what_hybridops_allows() -> None:
    execution = MANIFEST["execution"]
    assert set(execution) <= {"driver", "profile", "pack_ref"}
    assert set(execution["pack_ref"]) == {"id"}
    assert set(MANIFEST["playbooks"]) == {"apply", "destroy"}  # this runner's own key


def test_module_folder_is_real_and_its_spec_is_the_manifest() -> None:
    folder = REPO / "modules" / REF
    assert folder.is_dir() and not folder.is_symlink()
    for parent in folder.relative_to(REPO).parents:
        assert not (REPO / parent).is_symlink(), parent
    spec = folder / "spec.yml"
    assert spec.is_symlink() and spec.resolve() == (REPO / "module.yml").resolve()


@pytest.mark.parametrize(
    ("name", "target"), [("playbook.yml", "apply.yml"), ("destroy.playbook.yml", "destroy.yml")]
)
def test_pack_stack_points_at_the_playbooks(name: str, target: str) -> None:
    assert STACK.is_dir() and not STACK.is_symlink()
    assert (STACK / name).resolve() == (REPO / "playbooks" / target).resolve()
    assert MANIFEST["playbooks"][target.removesuffix(".yml")] == f"playbooks/{target}"
    # relative vars_files/import_tasks/roles resolve next to the resolved playbook
    play = yaml.safe_load((STACK / name).read_text())[0]
    base = (STACK / name).resolve().parent
    for relative in play["vars_files"]:
        assert (base / relative).is_file(), relative
    for task in play["pre_tasks"] + play["post_tasks"]:
        assert (base / task["ansible.builtin.import_tasks"]).is_file()
    assert (base / "roles" / play["roles"][0]["role"]).is_dir()


def test_manifest_carries_every_upstream_input_with_its_default() -> None:
    defaults = MANIFEST["inputs"]["defaults"]
    assert {k: defaults[k] for k in UPSTREAM_INPUTS} == UPSTREAM_INPUTS


def test_runner_finds_the_module_through_the_module_root() -> None:
    via_root = find_module(REF, [str(REPO / "modules")])
    default = find_module(REF)
    assert via_root == default
    assert via_root.manifest == (REPO / "module.yml").resolve()
    assert via_root.playbook("apply") == (REPO / "playbooks" / "apply.yml").resolve()
    assert via_root.playbook("plan") == via_root.playbook("validate") == via_root.playbook("apply")


def test_a_manifest_with_other_execution_keys_is_refused(tmp_path: Path) -> None:
    doc = json.loads(json.dumps(MANIFEST))
    doc["execution"]["playbooks"] = doc.pop("playbooks")
    folder = tmp_path / REF
    folder.mkdir(parents=True)
    (folder / "spec.yml").write_text(yaml.safe_dump(doc))
    with pytest.raises(HyopsError, match=r"spec\.execution has unknown keys: playbooks"):
        load_module(folder, REF)
    doc["playbooks"] = doc["execution"].pop("playbooks")
    doc["execution"]["pack_ref"]["version"] = "1"
    (folder / "spec.yml").write_text(yaml.safe_dump(doc))
    with pytest.raises(HyopsError, match=r"spec\.execution\.pack_ref has unknown keys: version"):
        load_module(folder, REF)


@pytest.mark.parametrize("example", sorted((REPO / "examples").glob("inputs.*.yml")), ids=str)
def test_validate_accepts_the_examples_with_the_module_root(example: Path, tmp_path: Path) -> None:
    root = tmp_path / "rt"
    run = hyops(["validate", "--root", str(root), "--module", REF, "--inputs", str(example),
                 "--module-root", str(REPO / "modules"), "--json"])  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    checks = {c["name"]: c["status"] for c in json.loads(run.stdout)["checks"]}
    assert checks == {
        "inputs": "ok",
        "manifest": "ok",
        "syntax apply": "ok",
        "syntax destroy": "ok",
    }
    assert not root.exists()  # validate writes nothing


def test_validate_reports_a_syntax_error(fixture_env: FixtureEnv, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "mods"
    shutil.copytree(MODULE_ROOT, copy)
    broken = copy / FIXTURE_REF / "playbooks" / "destroy.yml"
    broken.write_text("- hosts: all\n  tasks:\n    - no_such_module_xyz: {}\n")
    run = hyops(["validate", "--root", str(fixture_env.root), "--module", FIXTURE_REF,
                 "--module-root", str(copy), "--inputs", str(fixture_env.inputs_file)])  # fmt: skip
    assert run.returncode == 1
    assert "syntax destroy" in run.stdout and "FAIL" in run.stdout
    assert not fixture_env.root.exists()


def test_plan_changes_nothing(fixture_env: FixtureEnv) -> None:
    assert fixture_env.run("apply").returncode == 0
    before = fixture_env.state_file.read_bytes()
    (fixture_env.marker_dir / "marker").unlink()
    run = fixture_env.run("plan")
    assert run.returncode == 0, run.stderr
    assert "hyops: plan ok: " in run.stdout
    assert not (fixture_env.marker_dir / "marker").exists()  # --check: nothing written
    assert fixture_env.state_file.read_bytes() == before
    plans = list((fixture_env.root / "logs" / "module" / "test__runner-fixture").glob("plan-*"))
    assert len(plans) == 1
    names = {p.name for p in plans[0].iterdir()}
    assert {"ansible_plan.stdout.txt", "ansible_plan.result.json", "ansible.log"} <= names
    envelope = json.loads((plans[0] / "ansible_plan.result.json").read_text())
    assert envelope["argv"][-1] == "--check" and envelope["rc"] == 0


def test_an_installed_copy_finds_its_module(tmp_path: Path) -> None:
    """What ``pip install .`` (not editable) installs: the package plus the copy that
    setup.py stages with bundle.stage(); ``hyops`` must find the module without flags."""
    import shutil
    import subprocess
    import sys

    from hyops_runner import bundle

    site = tmp_path / "site"
    shutil.copytree(REPO / "src" / "hyops_runner", site / "hyops_runner",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    package = site / "hyops_runner" / "package"
    bundle.stage(REPO, package)
    spec = package / "modules" / REF / "spec.yml"
    assert spec.is_file() and not spec.is_symlink()
    stack = package / "packs" / "config" / "ansible" / PACK_ID / "stack"
    assert {p.name for p in stack.iterdir()} == {
        "playbook.yml", "destroy.playbook.yml", "vars", "tasks", "roles",
    }  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYOPS_")}
    env["PYTHONPATH"] = str(site)
    args = [sys.executable, "-m", "hyops_runner.cli", "validate", "--root", str(tmp_path / "rt"),
            "--module", REF, "--inputs", str(REPO / "examples" / "inputs.min.yml")]  # fmt: skip
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert str(spec) in done.stdout  # the installed copy, not this checkout
    missing = subprocess.run([*args[:7], "no/such-module"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "pass --module-root" in missing.stderr
