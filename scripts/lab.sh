#!/usr/bin/env bash
# A cluster of several machines on one machine: "hosts" lab1..labN, each a network namespace
# with its own address, hostname, Docker Engine and Shoal data dir.
#
#   scripts/lab.sh up N            create N hosts (about a second each; images loaded)
#   scripts/lab.sh exec labK CMD…  run CMD on host K (its network and hostname, its engine in
#                                  DOCKER_HOST, its SHOAL_DATA_DIR, `shoal` on the PATH)
#   scripts/lab.sh addr labK       print host K's address
#   scripts/lab.sh kill labK       power loss: kill -9 of everything on host K (Shoal, engine,
#                                  containerd, shims, containers)
#   scripts/lab.sh start labK      bring host K's engine back after a kill (Shoal: `exec … shoal start`)
#   scripts/lab.sh cut labK        network partition: host K's link down (both ways)
#   scripts/lab.sh heal labK       its link up again
#   scripts/lab.sh load IMAGE… [--host labK]   copy more images from this machine's engine
#   scripts/lab.sh status          the hosts, their addresses, engines and Shoal daemons
#   scripts/lab.sh down            remove every trace (idempotent)
#
# Layout: bridge `shoallab0` 10.77.0.1/24 (this machine's side); labK is 10.77.0.(10+K) on
# its `eth0`, no default route (an engine would wait on registry lookups); its engine has the
# label lab.host=labK (for `engine.labels.*` constraints). State lives in
# /run/shoal-lab/labK (engine sockets and exec roots, the hostname namespace) and
# /var/lib/shoal-lab/labK (engine data, Shoal data). Shoal knows nothing of the lab: the
# same commands work across real machines. See docs/lab.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUN=${SHOAL_LAB_RUN:-/run/shoal-lab}
DATA=${SHOAL_LAB_DATA:-/var/lib/shoal-lab}
BR=shoallab0
NET=10.77.0
IMAGES=${LAB_IMAGES:-}
DEFAULT_IMAGES="shoal/busybox:latest"

die() { echo "lab: $*" >&2; exit 1; }
say() { echo "lab: $*" >&2; }

[ "$(id -u)" -eq 0 ] || die "run me as root"

host_n() {  # labK -> K
    case "$1" in lab[0-9]*) echo "${1#lab}" ;; *) die "not a lab host: $1 (lab1, lab2, …)" ;; esac
}
addr_of() { echo "$NET.$((10 + $(host_n "$1")))"; }
exists() { [ -e "/var/run/netns/$1" ]; }
need() { exists "$1" || die "no host $1 (is the lab up? scripts/lab.sh up N)"; }
hosts() { for f in /var/run/netns/lab*; do [ -e "$f" ] && basename "$f"; done 2>/dev/null | sort -V; }
sock() { echo "$RUN/$1/docker.sock"; }

in_host() {  # in_host labK CMD…: CMD in K's network and hostname namespaces
    local h=$1; shift
    nsenter --net="/var/run/netns/$h" --uts="$RUN/$h/uts" -- "$@"
}

python_bin() {
    # the interpreter itself: a version manager's shim on the PATH (pyenv's is a shell script
    # that starts another) costs ~0.1 s on every command, which no installed `shoal` pays
    if [ -x "$ROOT/.venv/bin/python" ]; then echo "$ROOT/.venv/bin/python"
    else python3 -c 'import sys; print(sys.executable)'; fi
}

site_packages() {  # the interpreter's package directories, as its site module would add them
    "$(python_bin)" -c 'import site, sys; print(":".join(p for p in site.getsitepackages() if p in sys.path))'
}

write_wrapper() {
    mkdir -p "$RUN/bin"
    cat > "$RUN/bin/shoal" <<EOF
#!/bin/sh
# shoal on a lab host: this checkout's code ($ROOT), with the interpreter's packages but
# without its site hooks (-S: on a development machine they load an editable-install finder
# and whatever .pth files the machine has, ~35 ms per command that a host's installed Shoal
# need not pay). Its bytecode is cached as on any host (an environment with
# PYTHONDONTWRITEBYTECODE would compile every module again on every command). It starts the
# CLI as pip's console script does (\`-m shoal\` would import runpy first: ~6 ms a command).
unset PYTHONDONTWRITEBYTECODE
PYTHONPATH="$ROOT:$(site_packages)\${PYTHONPATH:+:\$PYTHONPATH}" exec "$(python_bin)" -S -c \\
    'import sys; from shoal.cli.main import main; sys.exit(main())' "\$@"
EOF
    chmod +x "$RUN/bin/shoal"
}

start_engine() {
    local h=$1 d="$DATA/$1/docker" x="$RUN/$1"
    mkdir -p "$d" "$x/exec"
    # what a killed engine left: its pid files and sockets (a stale containerd pid file makes the
    # new dockerd wait for a containerd that is gone)
    rm -f "$x/docker.pid" "$(sock "$h")" "$x"/exec/containerd/containerd.pid "$x"/exec/containerd/containerd.sock*
    # nsenter, not `ip netns exec` (which remounts /sys and hides the cgroup mounts)
    setsid nsenter --net="/var/run/netns/$h" --uts="$x/uts" -- \
        dockerd --data-root "$d" --exec-root "$x/exec" --pidfile "$x/docker.pid" -H "unix://$(sock "$h")" \
        --cgroup-parent "/$h" --label "lab.host=$h" --log-level warn >"$x/dockerd.log" 2>&1 </dev/null &
}

wait_engine() {
    local h=$1 i
    for i in $(seq 1 200); do
        if docker -H "unix://$(sock "$h")" version --format '{{.Server.Version}}' >/dev/null 2>&1; then return 0; fi
        sleep 0.05
    done
    tail -20 "$RUN/$h/dockerd.log" >&2 || true
    die "the engine of $h did not answer within 10s (log: $RUN/$h/dockerd.log)"
}

load_images() {  # load_images labK IMAGE…
    local h=$1; shift
    local have=()
    for img in "$@"; do
        docker image inspect "$img" >/dev/null 2>&1 || die "image $img is not on this machine's engine (scripts/build-images.sh)"
        have+=("$img")
    done
    [ ${#have[@]} -gt 0 ] || return 0
    docker save "${have[@]}" | docker -H "unix://$(sock "$h")" load -q >/dev/null
}

cmd_up() {
    local n=${1:-}
    [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 40 ] || die "usage: lab.sh up N (1..40)"
    [ -z "$(hosts)" ] || die "a lab is up already ($(hosts | tr '\n' ' ')): scripts/lab.sh down first"
    command -v dockerd >/dev/null || die "no dockerd (scripts/install-engine.sh)"
    local t0=$SECONDS
    mkdir -p "$RUN" "$DATA"
    write_wrapper
    ip link add "$BR" type bridge 2>/dev/null || true
    ip addr replace "$NET.1/24" dev "$BR"
    ip link set "$BR" up
    # br_netfilter is on and the host engine's FORWARD policy is DROP: let the lab's frames pass
    iptables -C FORWARD -i "$BR" -o "$BR" -j ACCEPT 2>/dev/null || iptables -I FORWARD 1 -i "$BR" -o "$BR" -j ACCEPT
    local k h
    for k in $(seq 1 "$n"); do
        h=lab$k
        ip netns add "$h"
        ip link add "vlab$k" type veth peer name eth0 netns "$h"
        ip link set "vlab$k" master "$BR" up
        ip -n "$h" addr add "$(addr_of "$h")/24" dev eth0
        ip -n "$h" link set eth0 up
        ip -n "$h" link set lo up
        # the host's own hostname: a UTS namespace kept by a bind mount (as `ip netns` keeps nets)
        mkdir -p "$RUN/$h"
        touch "$RUN/$h/uts"
        unshare --uts -- sh -c "hostname $h; mount --bind /proc/self/ns/uts '$RUN/$h/uts'"
        mkdir -p "$DATA/$h/shoal"
        start_engine "$h"
    done
    for k in $(seq 1 "$n"); do wait_engine "lab$k"; done
    # shellcheck disable=SC2086
    local imgs=($DEFAULT_IMAGES $IMAGES)
    local pids=()
    for k in $(seq 1 "$n"); do load_images "lab$k" "${imgs[@]}" & pids+=($!); done
    for p in "${pids[@]}"; do wait "$p" || die "loading images failed"; done
    say "$n hosts up in $((SECONDS - t0))s: $(for k in $(seq 1 "$n"); do printf 'lab%s=%s ' "$k" "$(addr_of "lab$k")"; done)"
}

cmd_exec() {
    local h=${1:-}; [ -n "$h" ] || die "usage: lab.sh exec labK CMD…"
    shift; need "$h"
    [ $# -gt 0 ] || die "usage: lab.sh exec labK CMD…"
    in_host "$h" env DOCKER_HOST="unix://$(sock "$h")" SHOAL_DATA_DIR="$DATA/$h/shoal" \
        PATH="$RUN/bin:$PATH" "$@"
}

kill_host() {  # everything that runs on the host, kill -9 (engine, containerd, shims, Shoal, containers)
    local h=$1 pid
    # processes in the host's network namespace: dockerd, containerd, shims, Shoal's daemon, exec'd commands
    for pid in $(ip netns pids "$h" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    # the containers: their cgroups are under /labK (dockerd --cgroup-parent)
    local f
    for f in /sys/fs/cgroup/*/"$h" /sys/fs/cgroup/"$h"; do
        [ -d "$f" ] || continue
        # (cgroups vanish while find walks them, as their processes die: not an error)
        { find "$f" -name cgroup.procs -exec cat {} + 2>/dev/null || true; } |
            while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done
    done
    # wait until they are gone
    local i
    for i in $(seq 1 100); do
        [ -z "$(ip netns pids "$h" 2>/dev/null)" ] && break
        sleep 0.05
    done
}

cmd_kill() { local h=${1:-}; need "$h"; kill_host "$h"; say "$h: killed (engine, Shoal and containers)"; }

cmd_start() {
    local h=${1:-}; need "$h"
    [ -z "$(ip netns pids "$h" 2>/dev/null)" ] || die "$h is running (lab.sh kill $h first)"
    # what a power loss leaves: mounts of the dead containers
    umount_under "$RUN/$h/exec"
    umount_under "$DATA/$h/docker"
    start_engine "$h"
    wait_engine "$h"
    say "$h: engine up (start Shoal with: lab.sh exec $h shoal start)"
}

cmd_cut() { local h=${1:-}; need "$h"; ip link set "vlab$(host_n "$h")" down; say "$h: cut off"; }
cmd_heal() { local h=${1:-}; need "$h"; ip link set "vlab$(host_n "$h")" up; say "$h: link up"; }
cmd_addr() { local h=${1:-}; need "$h"; addr_of "$h"; }

cmd_load() {
    local only="" imgs=()
    while [ $# -gt 0 ]; do
        case "$1" in --host) only=$2; shift 2 ;; *) imgs+=("$1"); shift ;; esac
    done
    [ ${#imgs[@]} -gt 0 ] || die "usage: lab.sh load IMAGE… [--host labK]"
    local h
    for h in ${only:-$(hosts)}; do need "$h"; load_images "$h" "${imgs[@]}"; done
}

cmd_status() {
    local h
    for h in $(hosts); do
        local engine=down shoal=down
        docker -H "unix://$(sock "$h")" version >/dev/null 2>&1 && engine=up
        [ -S "$DATA/$h/shoal/shoal.sock" ] && [ -n "$(ip netns pids "$h" 2>/dev/null)" ] && shoal=up
        local link; link=$(cat "/sys/class/net/vlab$(host_n "$h")/operstate" 2>/dev/null || echo "?")
        printf '%s\t%s\tengine %s\tshoal %s\tlink %s\n' "$h" "$(addr_of "$h")" "$engine" "$shoal" "$link"
    done
}

umount_under() {  # every mount at or below $1, deepest first
    local dir=$1
    [ -n "$dir" ] || return 0
    awk -v d="$dir" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r | \
        while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

cmd_down() {
    local h
    for h in $(hosts); do
        kill_host "$h"
        ip netns del "$h" 2>/dev/null || true
        ip link del "vlab$(host_n "$h")" 2>/dev/null || true
    done
    # Shoal's secrets tmpfs of the lab's data dirs (/run/shoal/<data dir as a slug>/secrets)
    local slug=${DATA#/}; slug=${slug//\//_}
    for m in $(awk '{print $5}' /proc/self/mountinfo | grep "^/run/shoal/${slug}_lab" || true); do umount -l "$m" 2>/dev/null || true; done
    rm -rf /run/shoal/"${slug}"_lab* 2>/dev/null || true
    umount_under "$RUN"
    umount_under "$DATA"
    for f in /sys/fs/cgroup/*/lab[0-9]* /sys/fs/cgroup/lab[0-9]*; do
        [ -d "$f" ] && find "$f" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
    while iptables -C FORWARD -i "$BR" -o "$BR" -j ACCEPT 2>/dev/null; do iptables -D FORWARD -i "$BR" -o "$BR" -j ACCEPT; done
    ip link del "$BR" 2>/dev/null || true
    rm -rf "$RUN" "$DATA"
    say "down"
}

verb=${1:-}
[ -n "$verb" ] || { sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }
shift
case "$verb" in
    up) cmd_up "$@" ;;
    exec) cmd_exec "$@" ;;
    addr) cmd_addr "$@" ;;
    kill) cmd_kill "$@" ;;
    start) cmd_start "$@" ;;
    cut) cmd_cut "$@" ;;
    heal) cmd_heal "$@" ;;
    load) cmd_load "$@" ;;
    status|ls) cmd_status ;;
    down) cmd_down ;;
    -h|--help|help) sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown verb $verb (up, exec, addr, kill, start, cut, heal, load, status, down)" ;;
esac
