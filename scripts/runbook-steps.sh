#!/usr/bin/env bash
# Run named steps of docs/RUNBOOK.md verbatim, in one shell, in the order given:
#   scripts/runbook-steps.sh context execute verify
# A step is the ```bash block after a "<!-- step: NAME -->" line. Each command is
# printed ("$ ...") before it runs; the first failing command stops the run, so the
# runbook cannot drift from what works. Variables set by one step (context) are seen
# by the next. Used by `make demo`, `make demo-destroy` and the e2e test.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
RUNBOOK=${RUNBOOK:-$REPO/docs/RUNBOOK.md}

block() {
  awk -v marker="<!-- step: $1 -->" '
    $0 == marker { found = 1; next }
    found && !inside && /^```bash$/ { inside = 1; next }
    inside && /^```$/ { exit }
    inside { print }
  ' "$RUNBOOK"
}

for step in "$@"; do
  body=$(block "$step")
  if [ -z "$body" ]; then
    echo "runbook-steps: no step '$step' in $RUNBOOK" >&2
    exit 2
  fi
  printf '\n== runbook step: %s\n' "$step"
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    printf '$ %s\n' "$line"
    eval "$line"
  done <<<"$body"
done
