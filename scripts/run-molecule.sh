#!/usr/bin/env bash
# Run the molecule scenarios against a real systemd test host and print a counted line.
#   scripts/run-molecule.sh                 -> `molecule test` for every scenario
#   scripts/run-molecule.sh default         -> one scenario
#   MOLECULE_CMD=converge scripts/run-molecule.sh default   -> one step, host kept
# Needs the project venv (make venv); builds or reuses the test-host image itself.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$REPO/.venv}
export PATH="$VENV/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH=${ANSIBLE_COLLECTIONS_PATH:-$VENV/collections}
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 NO_COLOR=1
cd "$REPO"

HYOPS_TESTHOST_IMAGE=$(bash testhost/build-image.sh | tail -n 1)
# Containers are named per checkout, so the lead's, the helpers' and CI's runs never meet.
HYOPS_TESTHOST_PREFIX="hyops-th-$(printf '%s' "$REPO" | sha256sum | cut -c1-8)"
export HYOPS_TESTHOST_IMAGE HYOPS_TESTHOST_PREFIX

if [ $# -gt 0 ]; then scenarios=("$@"); else scenarios=(default absent); fi
cmd=${MOLECULE_CMD:-test}
passed=0; failed=0; summary=()
for scenario in "${scenarios[@]}"; do
  start=$SECONDS
  # Each output line gets the seconds since the scenario started: the step timings.
  if molecule "$cmd" --scenario-name "$scenario" </dev/null 2>&1 |
      while IFS= read -r line; do printf '[%4ds] %s\n' "$((SECONDS - start))" "$line"; done
      [ "${PIPESTATUS[0]}" -eq 0 ]; then
    passed=$((passed + 1)); summary+=("$scenario ok in $((SECONDS - start)) s")
  else
    failed=$((failed + 1)); summary+=("$scenario FAILED after $((SECONDS - start)) s")
  fi
done
printf '  %s\n' "${summary[@]}"
echo "molecule: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
