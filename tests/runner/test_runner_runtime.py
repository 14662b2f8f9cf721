"""Runtime root resolution, env-name rules, 0700 layout and run ids."""

from __future__ import annotations

import os
import re
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hyops_runner.errors import UsageError
from hyops_runner.runid import RUN_ID_RE, new_run_id, updated_at
from hyops_runner.runtime import Layout, check_env_name, check_instance_name, resolve_root

REF = "platform/network/decision-dispatcher"


@pytest.mark.parametrize(
    ("root", "env", "environ", "expected"),
    [
        ("/r/flag", "dev", {"HYOPS_RUNTIME_ROOT": "/r/envvar", "HYOPS_ENV": "x"}, "/r/flag"),
        (None, "dev", {"HYOPS_RUNTIME_ROOT": "/r/envvar", "HOME": "/h"}, "/r/envvar"),
        (None, "dev", {"HYOPS_ENV": "other", "HOME": "/h"}, "/h/.hybridops/envs/dev"),
        (None, None, {"HYOPS_ENV": "stage", "HOME": "/h"}, "/h/.hybridops/envs/stage"),
        (None, "demo", {"HOME": "/h"}, "/h/.hybridops/envs/demo"),
    ],
)
def test_root_precedence(
    root: str | None, env: str | None, environ: dict[str, str], expected: str
) -> None:
    assert resolve_root(root, env, environ) == Path(expected)


def test_root_relative_flag_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_root("rt", None, {}) == tmp_path / "rt"


def test_no_root_at_all_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="pass --env"):
        resolve_root(None, None, {"HOME": "/h"})


@pytest.mark.parametrize("name", ["dev", "prod-eu_1", "A", "9x", "a" * 64])
def test_good_env_names(name: str) -> None:
    assert check_env_name(name) == name


@pytest.mark.parametrize("name", ["", "-dev", "_dev", "dev/x", "../etc", "a b", "a" * 65, "dév"])
def test_bad_env_names(name: str) -> None:
    with pytest.raises(UsageError, match="invalid env name"):
        check_env_name(name)


def test_bad_env_name_from_environment_is_refused() -> None:
    with pytest.raises(UsageError):
        resolve_root(None, None, {"HYOPS_ENV": "../x", "HOME": "/h"})


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden"])
def test_bad_instance_names(name: str) -> None:
    with pytest.raises(UsageError):
        check_instance_name(name)


def test_layout_paths_follow_the_contract(tmp_path: Path) -> None:
    lay = Layout(tmp_path, REF)
    mid = "platform__network__decision-dispatcher"
    assert lay.state_file == tmp_path / f"state/modules/{mid}/latest.json"
    assert lay.rerun_inputs_file == tmp_path / f"config/modules/{mid}/latest.inputs.yml"
    assert lay.work_dir("r1") == tmp_path / f"work/{mid}/r1"
    assert lay.evidence_dir("r1") == tmp_path / f"logs/module/{mid}/r1"
    inst = Layout(tmp_path, REF, "blue")
    assert inst.state_file == tmp_path / f"state/modules/{mid}/instances/blue.json"
    assert inst.lock_file != lay.lock_file


def test_layout_folders_are_0700_even_with_a_loose_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        root = tmp_path / "rt"
        root.mkdir(mode=0o755)
        Layout(root, REF, "blue").prepare("apply-20260320T101500Z-1a2b3c4d")
    finally:
        os.umask(old)
    folders = [p for p in root.rglob("*") if p.is_dir()]
    assert len(folders) >= 12
    for folder in folders:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    # an existing root is the operator's: checked (not writable by others), never chmod-ed
    assert stat.S_IMODE(root.stat().st_mode) == 0o755


def test_missing_parents_of_the_root_are_private_too(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    old = os.umask(0o022)
    try:
        home = tmp_path / "home"
        root = resolve_root(None, "dev", {"HOME": str(home)})
        Layout(root, REF).prepare()
    finally:
        os.umask(old)
    for folder in (home, home / ".hybridops", home / ".hybridops" / "envs", root):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755  # an existing parent is not ours


def test_run_id_shape_and_uniqueness() -> None:
    now = datetime(2026, 3, 20, 10, 15, 0, tzinfo=UTC)
    ids = {new_run_id("apply", now) for _ in range(200)}
    assert len(ids) == 200
    for rid in ids:
        assert RUN_ID_RE.match(rid)
        assert rid.startswith("apply-20260320T101500Z-")
    assert re.fullmatch(r"destroy-\d{8}T\d{6}Z-[0-9a-f]{8}", new_run_id("destroy"))
    assert updated_at(now) == "2026-03-20T10:15:00Z"
