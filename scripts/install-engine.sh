#!/usr/bin/env bash
# Make sure a Docker Engine answers on this machine (Debian 12, root).
#
# Idempotent: when `docker info` already answers this is a fast no-op.
# Otherwise it installs what is missing (docker.io plus the tools Shoal's
# image builds and multi-host tests use) with a single `apt-get update`, and
# starts `dockerd` by hand in the background -- there is no systemd in
# containers/CI -- logging to /var/log/shoal-dockerd.log, then waits (at most
# 60 s) until the engine answers.
#
# Environment:
#   SHOAL_DOCKERD_LOG   log file for dockerd (default /var/log/shoal-dockerd.log)
#   SHOAL_ENGINE_WAIT   seconds to wait for the engine (default 60)
set -euo pipefail

LOG=${SHOAL_DOCKERD_LOG:-/var/log/shoal-dockerd.log}
WAIT=${SHOAL_ENGINE_WAIT:-60}
PACKAGES=(docker.io busybox-static debootstrap nftables iptables iproute2 curl)

say() { echo "install-engine: $*" >&2; }

engine_answers() {
    command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1
}

if engine_answers; then
    say "Docker Engine already answers; nothing to do"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    say "must run as root to install and start the engine" ; exit 1
fi

# --- packages ---------------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# --- daemon -----------------------------------------------------------------
dockerd_running() {
    local pid
    if [ -s /var/run/docker.pid ]; then
        pid=$(cat /var/run/docker.pid)
        [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && return 0
    fi
    pgrep -x dockerd >/dev/null 2>&1
}

if ! dockerd_running; then
    # Debian's docker.io wants containerd; dockerd starts its own when none runs.
    # A stale pid file from a dead daemon would stop dockerd from starting.
    rm -f /var/run/docker.pid
    mkdir -p "$(dirname "$LOG")"
    say "starting dockerd (log: $LOG)"
    # setsid: detach from this shell's process group so the daemon outlives it.
    setsid nohup dockerd >>"$LOG" 2>&1 </dev/null &
fi

deadline=$((SECONDS + WAIT))
until engine_answers; do
    if [ $SECONDS -ge $deadline ]; then
        say "Docker Engine did not answer within ${WAIT}s; last lines of $LOG:"
        tail -n 30 "$LOG" >&2 || true
        exit 1
    fi
    sleep 1
done
say "Docker Engine answers: $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?')"
