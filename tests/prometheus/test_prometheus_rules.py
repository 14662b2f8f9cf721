"""The example alert rules pass promtool, and their promtool unit tests have teeth.

`promtool check rules` and `promtool test rules` run on the shipped files; then every alert
is replaced in turn by an expression that never fires and one that always fires, and the
unit tests must fail for that alert both times (so each alert is proven to be tested both
firing and silent). Each alert links to its own section of docs/RUNBOOK.md "Alerts" by an
absolute URL under the base the role is given; the example file is the role's template
rendered for the example base.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from promtool_helpers import run_promtool

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
render_alert_rules = importlib.import_module("render-alert-rules")
RULES = REPO / "examples" / "prometheus" / "decision-dispatcher.rules.yml"
UNIT_TESTS = REPO / "tests" / "prometheus" / "decision-dispatcher.rules.test.yml"
RUNBOOK = REPO / "docs" / "RUNBOOK.md"


def load_rules() -> dict[str, Any]:
    return yaml.safe_load(RULES.read_text(encoding="utf-8"))


def alerts() -> list[dict[str, Any]]:
    return [r for g in load_rules()["groups"] for r in g["rules"] if "alert" in r]


ALERT_NAMES = [a["alert"] for a in alerts()]  # one name per rule (Down has two severities)
ALERTS = sorted(set(ALERT_NAMES))
BASE = render_alert_rules.EXAMPLE_BASE_URL


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
        "DecisionDispatcherRecordNotDispatched",
        "DecisionDispatcherRequestExpiredUnapproved",
        "DecisionDispatcherApprovalsUnreadable",
        "DecisionDispatcherConfigReloadFailed",
    }
    severities: dict[str, set[str]] = {}
    for a in alerts():
        severities.setdefault(a["alert"], set()).add(a["labels"]["severity"])
    assert severities["DecisionDispatcherApprovalAwaited"] == {"critical"}
    assert severities["DecisionDispatcherRecordNotDispatched"] == {"critical"}
    # Down: critical during an open episode, a warning otherwise (issue 16).
    assert severities["DecisionDispatcherDown"] == {"warning", "critical"}
    assert set().union(*severities.values()) <= {"warning", "critical"}


def test_metrics_absent_is_per_instance() -> None:
    (absent,) = [a for a in alerts() if a["alert"] == "DecisionDispatcherMetricsAbsent"]
    # A bare absent() has no labels: with two hosts it would fire only when both vanish.
    assert "unless" in absent["expr"] and "absent(" not in absent["expr"]


def test_the_example_is_the_role_template_rendered_for_the_example_base() -> None:
    assert RULES.read_text(encoding="utf-8") == render_alert_rules.render(BASE), (
        "examples/prometheus/decision-dispatcher.rules.yml differs from the role's template: "
        f"scripts/render-alert-rules.py {BASE} > {RULES.relative_to(REPO)}"
    )


def test_another_base_gives_absolute_links_under_it_and_valid_rules(tmp_path: Path) -> None:
    base = "https://wiki.ops.test/dr/decision-dispatcher/RUNBOOK.md"
    text = render_alert_rules.render(base)
    doc = yaml.safe_load(text)
    urls = [r["annotations"]["runbook_url"] for g in doc["groups"] for r in g["rules"]]
    assert urls and all(u.startswith(base + "#") for u in urls), urls
    assert BASE not in text
    rules = tmp_path / "rules.yml"
    rules.write_text(text, encoding="utf-8")
    result = run_promtool("check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("base", ["", "docs/RUNBOOK.md", "https://x.test/R.md#a", "ftp://x/R"])
def test_a_base_that_is_not_an_absolute_page_url_is_refused(base: str) -> None:
    with pytest.raises(ValueError, match="absolute http"):
        render_alert_rules.render(base)


@pytest.mark.parametrize("alert", alerts(), ids=ALERT_NAMES)
def test_alert_has_a_summary_and_a_runbook_section(alert: dict[str, Any]) -> None:
    annotations = alert["annotations"]
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    anchor = github_anchor(alert["alert"])
    assert annotations["runbook_url"] == f"{BASE}#{anchor}"
    sections = runbook_alert_sections()
    assert anchor in sections, f"docs/RUNBOOK.md 'Alerts' has no '### {alert['alert']}'"
    assert len(sections[anchor].strip()) > 100, f"{alert['alert']}: runbook section too thin"


def test_every_runbook_alert_section_belongs_to_an_alert() -> None:
    assert set(runbook_alert_sections()) == {github_anchor(n) for n in ALERTS}


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
@pytest.mark.parametrize("alert", ALERTS)
def test_unit_tests_catch_an_alert_that_never_or_always_fires(
    mutant_reports: dict[str, str], alert: str, kind: str
) -> None:
    # "never" must break an expectation that it fires, "always" one that it stays silent.
    expected = r"exp:\[\]," if kind == "always" else r"exp:\[\s*0:"
    caught = re.search(rf"alertname: {alert}, time: [^,]+,\s*{expected}", mutant_reports[kind])
    assert caught, f"{alert} rewritten to {MUTANTS[kind]!r}: no unit test of it notices"
