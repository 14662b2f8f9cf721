"""The mutant table fits the code and the docs (fast; the mutants themselves run in
`make mutants`): every row's text is in its file exactly once, its tests exist, and the
guarantee it stands for is named in DAEMON.md "Guarantees" or RUNNER.md."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
_spec = importlib.util.spec_from_file_location("mutant_runner", HERE / "run.py")
assert _spec is not None and _spec.loader is not None
mutants = importlib.util.module_from_spec(_spec)
sys.modules["mutant_runner"] = mutants  # dataclasses look their module up by name
_spec.loader.exec_module(mutants)
ROWS = mutants.load_table()

# The mechanisms issue 18 names; each must keep at least one row.
REQUIRED = {
    "durable-fsync-file",
    "durable-fsync-folder",
    "request-fsync-file",
    "request-fsync-folder",
    "ledger-after-requests",
    "collision-owner",
    "nofollow-own-files",
    "owner-after-fstat",
    "drop-root",
    "settle-pending",
    "stale",
    "supersede-decision-time",
    "coalesce-window",
    "retry-transient-read",
    "handoff-synthetic-awaits",
    "runner-secret-names",
    "yaml-byte-cap",
    "yaml-node-cap",
    "runner-fsync-file",
    "runner-fsync-folder",
}


def _section(doc: str, heading: str) -> str:
    text = (REPO / "docs" / doc).read_text(encoding="utf-8")
    match = re.search(rf"^## {heading}\n(.*?)(?=^## )", text, re.MULTILINE | re.DOTALL)
    assert match, f"docs/{doc} has no '## {heading}' section"
    return match.group(1)


def test_the_table_keeps_a_row_for_every_mechanism_the_issue_names() -> None:
    assert {m.id for m in ROWS} >= REQUIRED


@pytest.mark.parametrize("mutant", ROWS, ids=[m.id for m in ROWS])
def test_each_row_fits_the_code_and_is_named_in_the_docs(mutant: mutants.Mutant) -> None:
    original = mutants.check_against(mutant, REPO)
    mutated = original.replace(mutant.search, mutant.replace, 1)
    if mutant.file.endswith(".py"):
        compile(mutated, mutant.file, "exec")
    where = _section("DAEMON.md", "Guarantees") if mutant.doc == "DAEMON.md" else None
    where = where or (REPO / "docs" / "RUNNER.md").read_text(encoding="utf-8")
    assert f"`{mutant.id}`" in where, f"docs/{mutant.doc} does not name `{mutant.id}`"
