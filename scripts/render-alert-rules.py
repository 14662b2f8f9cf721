#!/usr/bin/env python3
"""Print the Prometheus alert rules with runbook links under BASE_URL.

    scripts/render-alert-rules.py https://docs.example.com/dd/RUNBOOK.md

The same template and delimiters as the role (roles/decision_dispatcher/templates/
decision-dispatcher.rules.yml.j2, `[[ ]]` so Prometheus' own `{{ }}` pass through), for a
Prometheus that the role does not manage. examples/prometheus/decision-dispatcher.rules.yml
is this script's output for EXAMPLE_BASE_URL (tests/prometheus keeps the two equal).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import jinja2

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "roles" / "decision_dispatcher" / "templates" / "decision-dispatcher.rules.yml.j2"
EXAMPLE_BASE_URL = "https://docs.example.com/dd/RUNBOOK.md"
# The role's preflight asserts the same rule on decision_dispatcher_runbook_base_url.
BASE_URL_RE = re.compile("^https?://[^\\s#?\"'\\[\\]{}]+$")


def render(base_url: str) -> str:
    if not BASE_URL_RE.match(base_url):
        raise ValueError(
            f"runbook base URL {base_url!r}: must be an absolute http(s) URL of the "
            "RUNBOOK.md page, without '#', '?', quotes or spaces"
        )
    env = jinja2.Environment(
        variable_start_string="[[",
        variable_end_string="]]",
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    template = env.from_string(TEMPLATE.read_text(encoding="utf-8"))
    return template.render(decision_dispatcher_runbook_base_url=base_url)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: render-alert-rules.py BASE_URL", file=sys.stderr)
        return 2
    try:
        sys.stdout.write(render(argv[0]))
    except ValueError as exc:
        print(f"render-alert-rules: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
