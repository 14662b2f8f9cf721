#!/usr/bin/env bash
# Build, or reuse, the local podman image that molecule boots as a real systemd host
# (systemd as PID 1, python3 for Ansible). No container registry is involved: mmdebstrap
# bootstraps the rootfs from the host's own apt sources file and `podman import` turns
# the tarball into an image.
#
# Prints the image reference (localhost/hyops-testhost:<suite>-<hash>) on the last line.
# The tag is a hash of this script, the package list and the sources file, so a rerun is
# a no-op and a changed recipe builds a new tag while other checkouts keep using theirs
# (older tags are therefore never pruned here; `podman image prune` is the operator's).
#
# Env knobs:
#   SUITE       (default bookworm)
#   SOURCES     apt sources file to bootstrap from (default: the host's deb822 file)
#   IMAGE_NAME  (default localhost/hyops-testhost)
#   CACHE_DIR   where the rootfs tarball is kept and re-imported from
#               (default /var/tmp/hyops-testhost/cache; empty string = no cache)
set -euo pipefail

SUITE=${SUITE:-bookworm}
SOURCES=${SOURCES:-/etc/apt/sources.list.d/debian.sources}
IMAGE_NAME=${IMAGE_NAME:-localhost/hyops-testhost}
CACHE_DIR=${CACHE_DIR-/var/tmp/hyops-testhost/cache}
# passwd: useradd/userdel for the role's system user; the rest is what Ansible and a
# booted systemd need. systemd-analyze ships in the systemd package on bookworm.
PKGS="systemd,systemd-sysv,dbus,python3,sudo,procps,passwd"

log() { echo "build-image: $*" >&2; }

missing=()
for tool in podman runc mmdebstrap zstd; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

HASH=$( { cat "$0"; echo "$SUITE $PKGS"; cat "$SOURCES"; } | sha256sum | cut -c1-12)
TAG="$IMAGE_NAME:$SUITE-$HASH"
ROOTFS="rootfs-$SUITE-$HASH.tar.zst"

# Two checkouts may build at once; the second waits and then finds the image present.
LOCK_DIR=/var/tmp/hyops-testhost
mkdir -p "$LOCK_DIR"
exec 9>"$LOCK_DIR/build.lock"
flock 9

if podman image exists "$TAG"; then
  log "image $TAG present"
  echo "$TAG"; exit 0
fi

import_rootfs() {
  podman import \
    --change 'CMD ["/sbin/init"]' \
    --change 'STOPSIGNAL SIGRTMIN+3' \
    --change 'ENV container=podman' \
    "$1" "$TAG" >/dev/null
  log "imported $TAG from $1"
}

if [ -n "$CACHE_DIR" ] && [ -s "$CACHE_DIR/$ROOTFS" ]; then
  import_rootfs "$CACHE_DIR/$ROOTFS"
  echo "$TAG"; exit 0
fi

# Bootstrap into a file and import only a complete tarball: a failed bootstrap piped into
# `podman import` could leave a truncated image under the final tag, which the
# "present" check above would then trust forever.
WORK=$(mktemp -d /var/tmp/hyops-testhost-build.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
log "bootstrapping $SUITE rootfs (about 30 s)"
# The sources FILE as mirror argument makes mmdebstrap use exactly the host's archive.
# Check-Valid-Until=false: that archive may be a dated snapshot with expired Release files.
# The merged-usr hook keeps usrmerge (and its perl) out of the image.
mmdebstrap --quiet --mode=root --variant=apt \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --include="$PKGS" \
  --aptopt='Acquire::Check-Valid-Until "false"' \
  --aptopt='Acquire::Languages "none"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --customize-hook='echo hyops-testhost > "$1/etc/hostname"' \
  --customize-hook=': > "$1/etc/machine-id"; rm -f "$1/var/lib/dbus/machine-id"' \
  "$SUITE" "$WORK/$ROOTFS" "$SOURCES" >/dev/null
if [ -n "$CACHE_DIR" ]; then
  mkdir -p "$CACHE_DIR"
  mv "$WORK/$ROOTFS" "$CACHE_DIR/$ROOTFS.partial"
  mv "$CACHE_DIR/$ROOTFS.partial" "$CACHE_DIR/$ROOTFS"
  import_rootfs "$CACHE_DIR/$ROOTFS"
else
  import_rootfs "$WORK/$ROOTFS"
fi
echo "$TAG"
