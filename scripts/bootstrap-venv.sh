#!/usr/bin/env bash
# Create or refresh the project venv (.venv) idempotently: a Python >= 3.12 for the
# controller (ansible-core 2.21 refuses older), the pinned tools of requirements/,
# this package in editable mode, and the containers.podman collection taken out of
# the `ansible` wheel on PyPI (Galaxy is unreachable here).
#   VENV      (default <repo>/.venv)
#   PYTHON    (default: newest pyenv/system python 3.12 or 3.13)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$REPO/.venv}
ANSIBLE_WHEEL_VER=14.5.0   # only the source of containers.podman

pick_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  local root; root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
  for p in "$root"/versions/3.13*/bin/python3 "$root"/versions/3.12*/bin/python3 \
           /usr/bin/python3.13 /usr/bin/python3.12; do
    [ -x "$p" ] && { echo "$p"; return; }
  done
  echo "bootstrap-venv: no Python >= 3.12 found; install one or set PYTHON=/path/to/python3.12" >&2
  exit 1
}

stamp=$(cat "$REPO/requirements/dev.in" "$REPO/requirements/dev.lock" "$REPO/pyproject.toml" "$0" | sha256sum | cut -c1-16)
if [ "$(cat "$VENV/.stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "bootstrap-venv: building $VENV"
  rm -rf "$VENV"
  "$(pick_python)" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REPO/requirements/dev.in" -c "$REPO/requirements/dev.lock"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -e "$REPO"
  echo "$stamp" > "$VENV/.stamp"
fi

COLL="$VENV/collections"
if [ ! -f "$COLL/ansible_collections/containers/podman/MANIFEST.json" ]; then
  echo "bootstrap-venv: extracting containers.podman from ansible==$ANSIBLE_WHEEL_VER"
  tmp=$(mktemp -d)
  "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps -d "$tmp" "ansible==$ANSIBLE_WHEEL_VER"
  mkdir -p "$COLL"
  "$VENV/bin/python" - "$tmp"/ansible-*.whl "$COLL" <<'PY'
import sys
import zipfile

wheel, dest = sys.argv[1], sys.argv[2]
prefix = "ansible_collections/containers/podman/"
with zipfile.ZipFile(wheel) as zf:
    zf.extractall(dest, [n for n in zf.namelist() if n.startswith(prefix)])
PY
  rm -rf "$tmp"
fi
