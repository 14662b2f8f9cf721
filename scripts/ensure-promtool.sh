#!/usr/bin/env bash
# Make `promtool` available for the Prometheus rule and metrics-file tests by installing
# Debian's `prometheus` package (the only packaged promtool), the way testhost/build-image.sh
# installs podman. The package also ships the Prometheus SERVER; this script guarantees it
# is neither started by the install nor enabled afterwards, on hosts with or without systemd.
# Idempotent: silent and quick when promtool is present and the server is off.
#
# Exits 1 with a one-line reason when it cannot install (not root, apt failing).
set -euo pipefail

SERVICE=prometheus
POLICY=/usr/sbin/policy-rc.d
LOCK=/var/tmp/hyops-ensure-promtool.lock

log() { echo "ensure-promtool: $*" >&2; }

package_installed() {
  [ "$(dpkg-query -W -f='${Status}' "$SERVICE" 2>/dev/null)" = "install ok installed" ]
}

# The server must not run on a developer or CI machine: it would listen on :9090.
# Quiet unless it changes something, so a second run prints nothing.
server_off() {
  package_installed || return 0
  if command -v systemctl >/dev/null 2>&1; then
    # is-enabled/disable also work without a running systemd (they edit the links and
    # the SysV rc links through systemd-sysv-install); --now only where systemd runs.
    local now=()
    [ -d /run/systemd/system ] && now=(--now)
    if systemctl -q is-enabled "$SERVICE.service" 2>/dev/null \
      || systemctl -q is-active "$SERVICE.service" 2>/dev/null; then
      log "disabling $SERVICE.service (only promtool is wanted)"
      systemctl disable "${now[@]}" -q "$SERVICE.service"
    fi
  elif compgen -G "/etc/rc[2-5].d/S[0-9][0-9]$SERVICE" >/dev/null; then
    log "disabling the $SERVICE init script"
    update-rc.d "$SERVICE" disable >/dev/null 2>&1
  fi
}

if command -v promtool >/dev/null 2>&1; then
  server_off
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  log "promtool is missing and installing it needs root: sudo bash scripts/ensure-promtool.sh"
  exit 1
fi

# Helpers of several checkouts may run this at once; apt's own lock would fail the second.
exec 9>"$LOCK"
flock 9
if ! command -v promtool >/dev/null 2>&1; then
  # policy-rc.d answering 101 forbids every service start during the install
  # (invoke-rc.d and deb-systemd-invoke both honour it); the original is put back after.
  backup=""
  if [ -e "$POLICY" ]; then
    backup=$(mktemp "$POLICY.hyops-backup.XXXXXX")
    cp -p "$POLICY" "$backup"
  fi
  restore_policy() {
    if [ -n "$backup" ]; then mv -f "$backup" "$POLICY"; else rm -f "$POLICY"; fi
  }
  trap restore_policy EXIT
  printf '#!/bin/sh\n# hyops ensure-promtool: no service starts while installing\nexit 101\n' >"$POLICY"
  chmod 0755 "$POLICY"

  log "installing Debian package $SERVICE (for promtool; the server stays off)"
  apt-get update -qq
  # No recommends: they would pull prometheus-node-exporter, another daemon.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "$SERVICE" >/dev/null
  restore_policy
  trap - EXIT
fi
server_off
command -v promtool >/dev/null 2>&1 || { log "the $SERVICE package installed no promtool"; exit 1; }
log "$(promtool --version 2>&1 | head -n 1)"
