#!/usr/bin/env bash
# Run the molecule scenarios against a real systemd test host and print a counted line.
#   scripts/run-molecule.sh                 -> `molecule test` for every scenario
#   scripts/run-molecule.sh default         -> one scenario
#   MOLECULE_CMD=converge scripts/run-molecule.sh default   -> one step, host kept
# Needs the project venv (make venv); builds or reuses the test-host image itself.
set -euo pipefail
# shellcheck source=scripts/lib/venv-env.sh
source "$(dirname "$0")/lib/venv-env.sh"

HYOPS_TESTHOST_IMAGE=$(bash testhost/build-image.sh | tail -n 1)
# Containers are named per checkout, so the lead's, the helpers' and CI's runs never meet.
HYOPS_TESTHOST_PREFIX="hyops-th-$(printf '%s' "$REPO" | sha256sum | cut -c1-8)"
export HYOPS_TESTHOST_IMAGE HYOPS_TESTHOST_PREFIX

if [ $# -gt 0 ]; then scenarios=("$@"); else scenarios=(default absent); fi
cmd=${MOLECULE_CMD:-test}
# "<step> <seconds>" pairs from molecule's Executing/Executed lines of a timestamped log.
step_times() {
  awk 'match($0, /\[[a-z_-]+ > [a-z_-]+\] Execut/) {
         split(substr($0, RSTART + 1, RLENGTH - 9), part, " > "); t = substr($0, 2, 5) + 0
         if ($0 ~ /Executing/) begin[part[2]] = t
         else { printf "%s %ds, ", part[2], t - begin[part[2]] }
       }' "$1" | sed 's/, $//'
}

log=$(mktemp /tmp/hyops-molecule.XXXXXX)
trap 'rm -f "$log"' EXIT
passed=0; failed=0; summary=()
for scenario in "${scenarios[@]}"; do
  start=$SECONDS
  # molecule keys its own state folder on the checkout's basename only; key it like the
  # container instead, so two clones named alike cannot share state either.
  export MOLECULE_EPHEMERAL_DIRECTORY="${XDG_CACHE_HOME:-$HOME/.cache}/hyops-molecule/$HYOPS_TESTHOST_PREFIX/$scenario"
  # Each output line gets the seconds since the scenario started: the step timings.
  if molecule "$cmd" --scenario-name "$scenario" </dev/null 2>&1 |
      while IFS= read -r line; do printf '[%4ds] %s\n' "$((SECONDS - start))" "$line"; done |
      tee "$log"
      [ "${PIPESTATUS[0]}" -eq 0 ]; then
    passed=$((passed + 1)); result="ok in $((SECONDS - start)) s"
  else
    failed=$((failed + 1)); result="FAILED after $((SECONDS - start)) s"
  fi
  summary+=("$scenario $result ($(step_times "$log"))")
done
printf '  %s\n' "${summary[@]}"
echo "molecule: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
