#!/usr/bin/env bash
# Debian packages the daemon tests need besides the venv, installed idempotently:
#   faketime  -- libfaketime steps a daemon's wall clock (tests/daemon/test_edges_time.py)
#   strace    -- the write protocol observed from outside (tests/daemon/test_write_protocol.py,
#                tests/runner/test_runner_write_protocol.py; make mutants needs them)
# Without root or apt-get it only says what is missing (those tests then skip).
set -euo pipefail
PACKAGES=(faketime strace)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "system-test-deps: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }
else
  echo "system-test-deps: missing ${missing[*]} (install as root: apt-get install ${missing[*]}); the tests that need them skip" >&2
fi
