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
#   SHOAL_DOCKERD_ARGS  extra dockerd arguments, for a second engine beside the
#                       default one (then also set DOCKER_HOST to its -H socket
#                       and SHOAL_DOCKERD_PIDFILE), e.g. one per test "host"
#   SHOAL_DOCKERD_PIDFILE  its pid file (default /var/run/docker.pid)
#   Careful: a dockerd started with `--bridge none` DELETES the host's docker0
#   (moby removes the default bridge interface when the bridge is disabled),
#   breaking the default engine in the same network namespace.  Give a second
#   engine its own bridge (`--bridge NAME`, made beforehand) or its own network
#   namespace instead; this script refuses `--bridge none`.
set -euo pipefail

LOG=${SHOAL_DOCKERD_LOG:-/var/log/shoal-dockerd.log}
PIDFILE=${SHOAL_DOCKERD_PIDFILE:-/var/run/docker.pid}
read -r -a EXTRA_ARGS <<<"${SHOAL_DOCKERD_ARGS:-}"
WAIT=${SHOAL_ENGINE_WAIT:-60}
for ((i = 0; i < ${#EXTRA_ARGS[@]}; i++)); do
    a=${EXTRA_ARGS[$i]} next=${EXTRA_ARGS[$((i + 1))]:-}
    if [[ $a == --bridge=none || $a == -b=none || ( ( $a == --bridge || $a == -b ) && $next == none ) ]]; then
        echo "install-engine: refusing '--bridge none': dockerd would delete the host's docker0" >&2
        exit 2
    fi
done
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
    if [ -s "$PIDFILE" ]; then
        pid=$(cat "$PIDFILE")
        # After a reboot the pid may belong to another program: it must be a dockerd.
        [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] && return 0
    fi
    # A second engine is known by its pid file alone.
    [ "$PIDFILE" != /var/run/docker.pid ] && return 1
    # No pgrep on a minimal Debian (procps): look through /proc for a dockerd that is
    # not a second engine (those, the lab's among them, name a pid file of their own).
    local dir args
    for dir in /proc/[0-9]*; do
        [ "$(cat "$dir/comm" 2>/dev/null)" = dockerd ] || continue
        args=$(tr '\0' ' ' <"$dir/cmdline" 2>/dev/null) || continue
        case " $args " in
            *" --pidfile /var/run/docker.pid "*|*" --pidfile /run/docker.pid "*) return 0 ;;
            *" --pidfile"*) ;;
            *) return 0 ;;
        esac
    done
    return 1
}

if ! dockerd_running; then
    # Debian's docker.io wants containerd; dockerd starts its own when none runs.
    # A stale pid file from a dead daemon would stop dockerd from starting.
    rm -f "$PIDFILE"
    mkdir -p "$(dirname "$LOG")"
    say "starting dockerd ${EXTRA_ARGS[*]} (log: $LOG)"
    # setsid: detach from this shell's process group so the daemon outlives it.
    setsid nohup dockerd --pidfile "$PIDFILE" "${EXTRA_ARGS[@]}" >>"$LOG" 2>&1 </dev/null &
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
