"""The metrics-file check that daemon tests use, proven on hand-written good and bad files,
and the reference metrics file (what the daemon writes) against the rules and the docs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hyops_dispatcher.states import OUTCOMES
from promtool_helpers import check_metrics, parse_metrics

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "tests" / "prometheus" / "fixtures" / "decision-dispatcher.prom"
RULES = REPO / "examples" / "prometheus" / "decision-dispatcher.rules.yml"
INTERFACES = REPO / "docs" / "INTERFACES.md"
METRIC_RE = re.compile(r"\bhyops_decision_dispatcher_[a-z_]+")

GOOD = """\
# HELP hyops_decision_dispatcher_records_total Records handled, by outcome.
# TYPE hyops_decision_dispatcher_records_total counter
hyops_decision_dispatcher_records_total{outcome="emitted"} 3
hyops_decision_dispatcher_records_total{outcome="rejected"} 0
# HELP hyops_decision_dispatcher_info The running dispatcher; always 1.
# TYPE hyops_decision_dispatcher_info gauge
hyops_decision_dispatcher_info{version="0.1.0",watcher="po\\"ll\\\\"} 1
"""

# (id, file text, a piece of the problem it must be reported with)
BAD = [
    (
        "counter-without-total",
        "# HELP d_records Records.\n# TYPE d_records counter\nd_records 1\n",
        'counter metrics should have "_total" suffix',
    ),
    (
        "gauge-with-total",
        "# HELP d_open_total Open.\n# TYPE d_open_total gauge\nd_open_total 1\n",
        'non-counter metrics should not have "_total" suffix',
    ),
    ("no-help", "# TYPE d_up gauge\nd_up 1\n", "no help text"),
    (
        "unterminated-label",
        '# HELP d_up Up.\n# TYPE d_up gauge\nd_up{route="cutover} 1\n',
        "text format parsing error",
    ),
    (
        "not-a-number",
        "# HELP d_up Up.\n# TYPE d_up gauge\nd_up yes\n",
        "expected float as value",
    ),
    (
        "second-help",
        '# HELP d_up Up.\n# TYPE d_up gauge\nd_up 1\n# HELP d_up Up.\nd_up{a="b"} 1\n',
        "second HELP line",
    ),
    # promtool passes these; node_exporter's textfile collector does not.
    (
        "duplicate-series",
        '# HELP d_up Up.\n# TYPE d_up gauge\nd_up{a="b"} 1\nd_up{a="b"} 0\n',
        "textfile: line 4: duplicate series",
    ),
    (
        "client-timestamp",
        "# HELP d_up Up.\n# TYPE d_up gauge\nd_up 1 1790000000000\n",
        "has a timestamp",
    ),
    (
        "family-split",
        "# HELP d_a A.\n# TYPE d_a gauge\nd_a 1\n# HELP d_b B.\n# TYPE d_b gauge\nd_b 1\nd_a 2\n",
        "samples of d_a are not in one block",
    ),
]


def documented_metrics() -> dict[str, str]:
    """name -> type from the table of docs/INTERFACES.md "## Metrics"."""
    text = INTERFACES.read_text(encoding="utf-8")
    match = re.search(r"^## Metrics\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, "docs/INTERFACES.md has no '## Metrics' section"
    rows = re.findall(
        r"^\| `(hyops_decision_dispatcher_\w+)(?:\{[^`]*\})?` \| (\w+) \|", match.group(1), re.M
    )
    return dict(rows)


def test_a_good_file_is_clean() -> None:
    assert check_metrics(GOOD) == []
    parsed = parse_metrics(GOOD)
    assert parsed.value("hyops_decision_dispatcher_records_total", outcome="rejected") == 0
    assert parsed.value("hyops_decision_dispatcher_info", version="0.1.0", watcher='po"ll\\') == 1
    assert parsed.types["hyops_decision_dispatcher_records_total"] == "counter"


@pytest.mark.parametrize(("text", "problem"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_file_is_reported(text: str, problem: str) -> None:
    problems = check_metrics(text)
    assert any(problem in p for p in problems), problems
    assert all("\n" not in p for p in problems)


def test_the_reference_file_is_clean() -> None:
    assert check_metrics(REFERENCE.read_text(encoding="utf-8")) == []


def test_the_reference_file_has_what_the_rules_and_the_docs_name() -> None:
    reference = parse_metrics(REFERENCE.read_text(encoding="utf-8"))
    used_by_rules = set(METRIC_RE.findall(RULES.read_text(encoding="utf-8")))
    assert used_by_rules <= set(reference.types), "a rule uses a metric the file lacks"
    assert documented_metrics() == reference.types, "docs/INTERFACES.md Metrics table differs"
    for name in reference.types:
        assert reference.helps[name].strip(), f"{name}: no HELP"


def test_the_reference_file_counts_every_outcome_of_the_daemon() -> None:
    outcomes = OUTCOMES
    reference = parse_metrics(REFERENCE.read_text(encoding="utf-8"))
    labels = {
        dict(lab)["outcome"] for lab in reference.series("hyops_decision_dispatcher_records_total")
    }
    assert labels == set(outcomes)
