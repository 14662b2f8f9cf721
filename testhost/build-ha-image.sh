#!/usr/bin/env bash
# Build, or reuse, the HA test-host image: the project's systemd test host
# (testhost/build-image.sh) plus Pacemaker, Corosync and crmsh from the host's own apt
# sources. tests/ha boots two containers from it.
#
# Prints the image reference (localhost/hyops-testhost-ha:<suite>-<hash>) on the last line.
# The tag is a hash of this script, the package list and the base image's tag (itself a
# hash of its recipe), so a rerun is a no-op and a changed recipe builds a new tag.
#
# The packages come from the apt sources the base image was bootstrapped from (the host's).
# The cluster services are disabled in the image: the test writes corosync.conf first and
# starts them itself. Env knobs: SUITE, SOURCES, CACHE_DIR as for build-image.sh (passed
# on to it); IMAGE_NAME (default localhost/hyops-testhost-ha).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
IMAGE_NAME=${IMAGE_NAME:-localhost/hyops-testhost-ha}
PKGS="pacemaker pacemaker-cli-utils corosync crmsh"

log() { echo "build-ha-image: $*" >&2; }

BASE=$(bash "$HERE/build-image.sh" | tail -n 1)
SUITE=${BASE##*:}
SUITE=${SUITE%%-*}
HASH=$( { cat "$0"; echo "$PKGS"; echo "$BASE"; } | sha256sum | cut -c1-12)
TAG="$IMAGE_NAME:$SUITE-$HASH"

LOCK_DIR=/var/tmp/hyops-testhost
mkdir -p "$LOCK_DIR"
exec 9>"$LOCK_DIR/build-ha.lock"
flock 9

if podman image exists "$TAG"; then
  log "image $TAG present"
  echo "$TAG"; exit 0
fi

# A build container named after the tag: a half-built one from an interrupted run is
# replaced, and only a finished install is committed under the tag.
BUILD="hyops-ha-build-$HASH"
trap 'podman rm -f --ignore "$BUILD" >/dev/null 2>&1 || true' EXIT
log "installing $PKGS into $BASE (about a minute)"
podman run --name "$BUILD" --replace --network=host --runtime=runc \
  --ulimit nofile=8192:8192 --ulimit nproc=8192:8192 \
  "$BASE" /bin/sh -ec "
    apt-get -o Acquire::Check-Valid-Until=false update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PKGS >/dev/null
    systemctl disable corosync.service pacemaker.service >/dev/null 2>&1 || true
    apt-get clean
    rm -rf /var/lib/apt/lists/*
  " >&2
podman commit --quiet \
  --change 'CMD ["/sbin/init"]' \
  --change 'STOPSIGNAL SIGRTMIN+3' \
  --change 'ENV container=podman' \
  "$BUILD" "$TAG" >/dev/null
log "committed $TAG"
echo "$TAG"
