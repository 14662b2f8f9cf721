#!/usr/bin/env bash
# The local demo: a throwaway systemd container stands in for the DR control host, and
# the real `hyops` runner installs the decision dispatcher on it with the demo inputs.
#   scripts/demo.sh up     build/reuse the test-host image, start (or reuse) the container,
#                          hyops apply --env demo, synthetic handoff, jq '.status, .outputs'
#   scripts/demo.sh down   hyops destroy --env demo, jq '.status, .outputs', remove container
# Idempotent; needs root (rootful podman). `make demo` / `make demo-destroy` call it.
set -euo pipefail
# shellcheck source=scripts/lib/venv-env.sh
source "$(dirname "$0")/lib/venv-env.sh"

MODULE=platform/network/decision-dispatcher
MODULE_ID=platform__network__decision-dispatcher
ENV_NAME=${HYOPS_DEMO_ENV:-demo}
INPUTS=examples/inputs.demo.yml
# One container per checkout: two clones on one machine never share a demo host.
CONTAINER="hyops-demo-$(printf '%s' "$REPO" | sha256sum | cut -c1-8)"
STATE="$HOME/.hybridops/envs/$ENV_NAME/state/modules/$MODULE_ID/latest.json"
SCRIPT=/usr/local/lib/hyops-decision-dispatcher/dispatcher.py
CONFIG=/opt/hybridops/decision-dispatcher/config/config.json

say() { printf '\n== %s\n' "$*"; }

# The demo inputs name the control host generically; point it at this checkout's
# container through the environment layer (HYOPS_INPUTS_JSON beats the inputs file).
export HYOPS_INPUTS_JSON="{\"inventory_groups\": {\"edge_control\": [{\"name\": \"demo-control\", \"host\": \"$CONTAINER\", \"ansible_connection\": \"containers.podman.podman\"}]}}"

need_packages() {
  local missing=()
  command -v jq >/dev/null 2>&1 || missing+=(jq)
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

running() { [ "$(podman container inspect -f '{{.State.Running}}' "$CONTAINER" 2>/dev/null)" = true ]; }

start_host() {
  if running; then
    say "reusing control host container $CONTAINER"
    return
  fi
  say "building or reusing the systemd test-host image"
  local image
  image=$(bash testhost/build-image.sh | tail -n 1)
  say "starting control host container $CONTAINER ($image)"
  # Same flags as the molecule test host (docs in TESTHOST.md): runc on this cgroup
  # setup, SYS_ADMIN for systemd's sandboxing, rlimits under the inherited hard limits.
  podman run --detach --replace --name "$CONTAINER" --hostname demo-control \
    --label owner=hyops-demo --runtime=runc --network=none --systemd=always \
    --cap-add=SYS_ADMIN --ulimit nofile=8192:8192 --ulimit nproc=8192:8192 \
    "$image" /sbin/init >/dev/null
  local state=""
  for _ in $(seq 1 60); do
    state=$(podman exec "$CONTAINER" systemctl is-system-running --wait 2>/dev/null || true)
    case "$state" in running|degraded) break ;; esac
    sleep 1
  done
  echo "systemd in $CONTAINER: ${state:-not up}"
  case "$state" in running|degraded) ;; *) echo "demo: the control host did not boot" >&2; exit 1 ;; esac
}

# The runbook's own steps run against the container (docs/RUNBOOK.md, "Context").
export ENV="$ENV_NAME" INPUTS ON_HOST="podman exec $CONTAINER"

up() {
  need_packages
  start_host
  # preflight + apply, jq/status checks, synthetic handoff: exactly the runbook's commands
  bash scripts/runbook-steps.sh context execute verify handoff
  cat <<EOT

Look around:
  podman exec $CONTAINER systemctl status hyops-decision-dispatcher --no-pager
  podman exec $CONTAINER python3 $SCRIPT --config $CONFIG status
  podman exec $CONTAINER ls /opt/hybridops/decision-dispatcher/state/requests
  podman exec -it $CONTAINER bash
  $VENV/bin/hyops show --env $ENV_NAME --module $MODULE
  ls $HOME/.hybridops/envs/$ENV_NAME/logs/module/$MODULE_ID/
Tear down:
  make demo-destroy     (hyops destroy --env $ENV_NAME, then removes the container)
EOT
  say "jq '.status, .outputs' $STATE"
  jq '.status, .outputs' "$STATE"
}

down() {
  if running; then
    bash scripts/runbook-steps.sh context destroy
  else
    echo "demo: no running control host $CONTAINER; nothing to destroy"
  fi
  podman rm -f --ignore "$CONTAINER" >/dev/null
  echo "demo: container $CONTAINER removed"
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
