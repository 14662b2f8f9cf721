"""docs/RUNBOOK.md: every shell block is a named step that make demo or the e2e test runs."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNBOOK = (REPO / "docs" / "RUNBOOK.md").read_text()
SECTIONS = [
    "Purpose", "Trigger", "Impact", "Severity", "Context", "Rollback", "Preconditions",
    "Execute", "Verification", "Synthetic handoff validation", "Alerts", "Destroy", "Host keys",
    "With HybridOps.Core", "High availability", "Notes",
]  # fmt: skip


def test_sections_in_operator_order() -> None:
    found = re.findall(r"^## (.+)$", RUNBOOK, flags=re.M)
    assert found == SECTIONS


def test_every_shell_block_is_a_step_that_something_runs() -> None:
    blocks = re.findall(r"(?:<!-- step: ([a-z-]+) -->\n)?```bash\n", RUNBOOK)
    assert blocks and all(blocks), "a ```bash block without a '<!-- step: NAME -->' marker"
    demo = (REPO / "scripts" / "demo.sh").read_text()
    e2e = (REPO / "tests" / "runner" / "test_runner_e2e.py").read_text()
    run_by_demo = {
        step for call in re.findall(r"runbook-steps\.sh ([a-z -]+)", demo) for step in call.split()
    }
    run_by_e2e = {
        step
        for call in re.findall(r"runbook\(root, control_host, ([^)]*)\)", e2e)
        for step in re.findall(r'"([a-z-]+)"', call)
    }
    assert set(blocks) <= run_by_demo | run_by_e2e, set(blocks) - run_by_demo - run_by_e2e
    # everything but the demo's own execute step is also run by the e2e test
    assert set(blocks) - run_by_e2e <= {"execute"}, set(blocks) - run_by_e2e


def test_route_example_is_a_valid_route() -> None:
    import yaml

    from hyops_runner import schemas

    example = re.search(r"```yaml\n(.*?)```", RUNBOOK, flags=re.S)
    assert example
    doc = yaml.safe_load(example.group(1))
    for route in doc["dispatcher_routes"].values():
        assert schemas.violations("route", route) == []


def bash_blocks() -> list[tuple[str, str]]:
    """(step name, body) of every ```bash block, in document order."""
    return re.findall(r"<!-- step: ([a-z-]+) -->\n```bash\n(.*?)```", RUNBOOK, flags=re.S)


# What the shell that runs the runbook already has (the caller's environment).
ENVIRONMENT = {"HOME", "PATH"}


def test_variables_are_defined_before_use() -> None:
    """Issue 16: read top to bottom, every variable a block uses was set by an earlier
    block (or earlier in the same one); Rollback must not use Context's variables first."""
    defined = set(ENVIRONMENT)
    for step, body in bash_blocks():
        for line in body.splitlines():
            used = set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", line))
            assigned = re.match(r"^([A-Z_][A-Z0-9_]*)=", line)
            own = {assigned.group(1)} if assigned else set()
            # NAME=${NAME:-default} / ${NAME:?message}: the caller may give it, else it is set
            given = {n for n in used if re.search(rf"\$\{{{n}:[-?]", line)}
            missing = used - defined - given
            assert not missing, f"step {step}: {sorted(missing)} used before it is set: {line}"
            defined |= own


def context_values(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    (body,) = [b for s, b in bash_blocks() if s == "context"]
    script = body + 'printf "%s\\n" "$ROOT" "$STATE" "$INPUTS" "$ON_HOST"\n'
    base = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "home")}
    return subprocess.run(
        ["bash", "-euc", script],
        capture_output=True,
        text=True,
        env={**base, **env},
        timeout=30,
    )


def test_context_honours_the_runtime_root_and_invents_nothing(tmp_path: Path) -> None:
    inputs = str(REPO / "examples" / "inputs.demo.yml")
    given = {"INPUTS": inputs, "ON_HOST": "podman exec ctrl"}
    root = tmp_path / "root"
    got = context_values(tmp_path, HYOPS_RUNTIME_ROOT=str(root), **given)
    assert got.returncode == 0, got.stderr
    assert got.stdout.splitlines() == [
        str(root),
        f"{root}/state/modules/platform__network__decision-dispatcher/latest.json",
        inputs,
        "podman exec ctrl",
    ]
    # Without it: --env's root under $HOME, as hyops itself resolves it.
    got = context_values(tmp_path, ENV="dev", **given)
    assert got.stdout.splitlines()[0] == f"{tmp_path}/home/.hybridops/envs/dev"
    # No invented inputs file or host: a missing one stops the block and says which.
    for name in ("INPUTS", "ON_HOST"):
        got = context_values(tmp_path, **{k: v for k, v in given.items() if k != name})
        assert got.returncode != 0 and name in got.stderr, (name, got.stderr)


def test_runbook_names_only_files_that_exist_and_no_fixed_address() -> None:
    for path in re.findall(r"(?<![\w/.$<])((?:examples|scripts|docs|schemas)/[\w./-]+\w)", RUNBOOK):
        assert (REPO / path).exists(), f"docs/RUNBOOK.md names {path}, which does not exist"
    private = re.findall(
        r"\b(?:10|192\.168|172\.(?:1[6-9]|2\d|3[01]))(?:\.\d{1,3}){2,3}\b", RUNBOOK
    )
    assert private == [], f"a fixed address in docs/RUNBOOK.md: {private}"


def test_runbook_steps_runs_the_context_block_against_a_throwaway_root(tmp_path: Path) -> None:
    """scripts/runbook-steps.sh (what make demo and the e2e test use) runs the block
    verbatim; without INPUTS it stops at that line, naming it."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "HYOPS_RUNTIME_ROOT": str(tmp_path / "root"),
        "ON_HOST": "true",
    }
    steps = [str(REPO / "scripts" / "runbook-steps.sh"), "context"]
    ok = subprocess.run(
        ["bash", *steps],
        capture_output=True,
        text=True,
        env={**env, "INPUTS": str(REPO / "examples" / "inputs.demo.yml")},
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr
    assert "$ ROOT=${HYOPS_RUNTIME_ROOT:-$HOME/.hybridops/envs/$ENV}" in ok.stdout
    missing = subprocess.run(["bash", *steps], capture_output=True, text=True, env=env, timeout=30)
    assert missing.returncode != 0 and "INPUTS" in missing.stderr
