"""docs/RUNBOOK.md: every shell block is a named step that make demo or the e2e test runs."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNBOOK = (REPO / "docs" / "RUNBOOK.md").read_text()
SECTIONS = [
    "Purpose", "Trigger", "Impact", "Severity", "Rollback", "Context", "Preconditions",
    "Execute", "Verification", "Synthetic handoff validation", "Alerts", "Destroy", "Host keys",
    "With HybridOps.Core", "Notes",
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
