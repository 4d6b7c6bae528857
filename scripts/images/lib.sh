# Helpers for scripts/build-images.sh (sourced, not run).
# shellcheck shell=bash

HASH_LABEL=shoal.build.hash

log() { printf '[build-images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# sha256 of a string
sha_str() { printf '%s' "$1" | sha256sum | cut -c1-64; }

# sha256 over the names and contents of the files under the given paths
# (directories are walked; paths are recorded relative to $ROOT), plus any
# extra strings given after "--".
hash_inputs() {
    local paths=() extras=() seen_sep=0 a
    for a in "$@"; do
        if [ "$a" = "--" ]; then seen_sep=1; continue; fi
        if [ $seen_sep -eq 0 ]; then paths+=("$a"); else extras+=("$a"); fi
    done
    {
        local p
        for p in "${paths[@]}"; do
            (cd "$ROOT" && find "$p" -type f ! -name '*.pyc' ! -name '*.md' ! -path '*/__pycache__/*' -print0 \
                | LC_ALL=C sort -z | xargs -0 -r sha256sum)
        done
        printf '%s\n' "${extras[@]}"
    } | sha256sum | cut -c1-64
}

# The value of the build-hash label on an image ("" when absent/no image).
image_hash() {
    docker image inspect -f "{{ index .Config.Labels \"$HASH_LABEL\" }}" "$1" 2>/dev/null || true
}

image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }

# up_to_date IMAGE HASH: true when IMAGE exists and carries HASH.
up_to_date() {
    [ "${FORCE:-0}" = 1 ] && return 1
    local h; h=$(image_hash "$1")
    [ -n "$h" ] && [ "$h" = "$2" ]
}

# ensure_tags SOURCE TAG...: point every TAG at SOURCE's image (cheap, idempotent).
ensure_tags() {
    local src=$1; shift
    local id t; id=$(image_id "$src")
    [ -n "$id" ] || die "no image $src to tag"
    for t in "$@"; do
        if [ "$(image_id "$t")" != "$id" ]; then
            docker tag "$src" "$t"
            log "  tagged $t"
        fi
    done
}

# drop_replaced OLD_ID: remove an image this script built before, once a
# rebuild has taken its tag away (untagged, not used by a container: rmi
# without -f fails otherwise, which is fine).
drop_replaced() {
    local old=$1
    [ -n "$old" ] || return 0
    local tags; tags=$(docker image inspect -f '{{len .RepoTags}}' "$old" 2>/dev/null || echo 1)
    if [ "$tags" = 0 ]; then docker rmi "$old" >/dev/null 2>&1 || true; fi
}

# docker_build TAG HASH CONTEXT [extra docker build args...]
docker_build() {
    local tag=$1 hash=$2 ctx=$3; shift 3
    local start=$SECONDS old; old=$(image_id "$tag")
    log "building $tag (context ${ctx#"$ROOT"/})"
    if ! docker build -q --label "$HASH_LABEL=$hash" -t "$tag" "$@" "$ctx" >"$WORK/build.log" 2>&1; then
        cat "$WORK/build.log" >&2
        die "docker build of $tag failed"
    fi
    log "  built $tag in $((SECONDS - start))s"
    if [ -n "$old" ] && [ "$old" != "$(image_id "$tag")" ]; then drop_replaced "$old"; fi
}

# The Debian mirror the host's apt uses (first bookworm 'main' source that is
# not the security archive), so nothing foreign is hard-coded.  Falls back to
# deb.debian.org.
host_debian_mirror() {
    local uri=""
    # deb822 .sources files
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk -v suite="$SUITE" '
            function flush() {
                if (uris != "" && suites ~ ("(^| )" suite "( |$)") && uris !~ /security/ && enabled != "no") { split(uris, u, " "); print u[1]; found=1; exit }
                uris=""; suites=""; enabled=""
            }
            /^[ \t]*$/ { flush(); next }
            /^URIs:/     { sub(/^URIs:[ \t]*/, ""); uris=$0 }
            /^Suites:/   { sub(/^Suites:[ \t]*/, ""); suites=$0 }
            /^Enabled:/  { sub(/^Enabled:[ \t]*/, ""); enabled=tolower($0) }
            END { if (!found) flush() }' "$f")
        [ -n "$uri" ] && break
    done
    # one-line sources.list format
    if [ -z "$uri" ]; then
        uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | awk -v suite="$SUITE" '$1=="deb" { i=2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                   if ($(i+1)==suite && $i !~ /security/) { print $i; exit } }')
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}
