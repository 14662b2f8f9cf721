# Sourced by the scripts in scripts/: REPO, the project venv first on PATH, the
# containers.podman collection it carries, no colour, and the repository as cwd.
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=${VENV:-$REPO/.venv}
export PATH="$VENV/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH=${ANSIBLE_COLLECTIONS_PATH:-$VENV/collections}
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 NO_COLOR=1
cd "$REPO"
