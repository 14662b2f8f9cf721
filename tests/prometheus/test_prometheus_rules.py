"""The example alert rules pass promtool, and their promtool unit tests have teeth.

`promtool check rules` and `promtool test rules` run on the shipped files; then every alert
is replaced in turn by an expression that never fires and one that always fires, and the
unit tests must fail for that alert both times (so each alert is proven to be tested both
firing and silent). Each alert links to its own section of docs/RUNBOOK.md "Alerts".
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from promtool_helpers import run_promtool

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "examples" / "prometheus" / "decision-dispatcher.rules.yml"
UNIT_TESTS = REPO / "tests" / "prometheus" / "decision-dispatcher.rules.test.yml"
RUNBOOK = REPO / "docs" / "RUNBOOK.md"


def load_rules() -> dict[str, Any]:
    return yaml.safe_load(RULES.read_text(encoding="utf-8"))


def alerts() -> list[dict[str, Any]]:
    return [r for g in load_rules()["groups"] for r in g["rules"] if "alert" in r]


ALERT_NAMES = [a["alert"] for a in alerts()]


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading (lowercase, punctuation dropped)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def runbook_alert_sections() -> dict[str, str]:
    """anchor -> body of each `### ` section under `## Alerts` in docs/RUNBOOK.md."""
    text = RUNBOOK.read_text(encoding="utf-8")
    match = re.search(r"^## Alerts\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, "docs/RUNBOOK.md has no '## Alerts' section"
    parts = re.split(r"^### (.+)$", match.group(1), flags=re.M)
    return {github_anchor(parts[i]): parts[i + 1] for i in range(1, len(parts), 2)}


def test_promtool_check_rules_accepts_the_rules() -> None:
    result = run_promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERT_NAMES)} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_alerts_the_issue_asks_for_are_there() -> None:
    assert set(ALERT_NAMES) == {
        "DecisionDispatcherDown",
        "DecisionDispatcherMetricsAbsent",
        "DecisionDispatcherUnhealthy",
        "DecisionDispatcherApprovalAwaited",
        "DecisionDispatcherDecisionAfterApproval",
        "DecisionDispatcherRequestAwaitingApproval",
        "DecisionDispatcherRecordsRejected",
        "DecisionDispatcherRequestExpiredUnapproved",
        "DecisionDispatcherApprovalsUnreadable",
    }
    severities = {a["alert"]: a["labels"]["severity"] for a in alerts()}
    assert severities["DecisionDispatcherApprovalAwaited"] == "critical"
    assert set(severities.values()) <= {"warning", "critical"}


@pytest.mark.parametrize("alert", alerts(), ids=ALERT_NAMES)
def test_alert_has_a_summary_and_a_runbook_section(alert: dict[str, Any]) -> None:
    annotations = alert["annotations"]
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    anchor = github_anchor(alert["alert"])
    assert annotations["runbook_url"] == f"docs/RUNBOOK.md#{anchor}"
    sections = runbook_alert_sections()
    assert anchor in sections, f"docs/RUNBOOK.md 'Alerts' has no '### {alert['alert']}'"
    assert len(sections[anchor].strip()) > 100, f"{alert['alert']}: runbook section too thin"


def test_every_runbook_alert_section_belongs_to_an_alert() -> None:
    assert set(runbook_alert_sections()) == {github_anchor(n) for n in ALERT_NAMES}


MUTANTS = {"never": "vector(1) < 0", "always": "vector(1)"}


@pytest.fixture(scope="module")
def mutant_reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """mutant kind -> promtool's report on the unit tests run against rules in which EVERY
    alert has that expression. Alert tests are per alertname, so one run per kind shows
    which alerts' tests catch it (a failure is reported with `alertname: <name>,`)."""
    folder = tmp_path_factory.mktemp("mutants")
    tests = yaml.safe_load(UNIT_TESTS.read_text(encoding="utf-8"))
    reports = {}
    for kind, expr in MUTANTS.items():
        doc = load_rules()
        for group in doc["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    rule["expr"] = expr
        rules = folder / f"{kind}.rules.yml"
        rules.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        test_file = folder / f"{kind}.test.yml"
        test_file.write_text(
            yaml.safe_dump({**tests, "rule_files": [str(rules)]}, sort_keys=False),
            encoding="utf-8",
        )
        result = run_promtool("test", "rules", str(test_file), merge_stderr=True)
        assert result.returncode != 0, f"the unit tests pass with every alert {expr!r}"
        reports[kind] = result.stdout
    return reports


@pytest.mark.parametrize("kind", sorted(MUTANTS))
@pytest.mark.parametrize("alert", ALERT_NAMES)
def test_unit_tests_catch_an_alert_that_never_or_always_fires(
    mutant_reports: dict[str, str], alert: str, kind: str
) -> None:
    # "never" must break an expectation that it fires, "always" one that it stays silent.
    expected = r"exp:\[\]," if kind == "always" else r"exp:\[\s*0:"
    caught = re.search(rf"alertname: {alert}, time: [^,]+,\s*{expected}", mutant_reports[kind])
    assert caught, f"{alert} rewritten to {MUTANTS[kind]!r}: no unit test of it notices"
