#!/usr/bin/env bash
# Build, offline, every container image Shoal's examples and tests use.
#
# There is no image registry here: base images are made from Debian packages
# (`docker import` of a root file system), everything else is `docker build`
# on top of them (containers can reach the Debian package mirror).
#
#   shoal/busybox:latest            busybox-static rootfs (2 MB)
#   shoal/debian-python:bookworm    debootstrap minbase + python3
#   shoal/todo-app:latest           = diamol/ch06-todo-list:latest
#   shoal/postgres:latest           = diamol/postgres:11.5, diamol/postgres:11.6
#   shoal/numbers-api:latest        = diamol/ch08-numbers-api:latest
#     + :v2 :v3 :v5                 = diamol/ch08-numbers-api:v2, :v3, diamol/ch14-numbers-api:v5
#   shoal/numbers-web:latest        = diamol/ch08-numbers-web:latest
#     + :v2 :v3 :v5                 = diamol/ch08-numbers-web:v2, :v3, diamol/ch14-numbers-web:v5
#   shoal/nginx:latest              nginx-light, for the routing-mesh benchmark
#
# Idempotent and cached: every image carries a label `shoal.build.hash` = the
# sha256 of its build inputs (files, recipe, parent's hash); an image whose
# label matches is skipped, so a second run takes seconds.  The debootstrap
# tarball is cached under /var/cache/shoal/ and made once.
#
# Usage: scripts/build-images.sh [--force] [--list] [IMAGE...]
#   IMAGE is one of: busybox debian-python todo-app postgres numbers nginx (default: all)
#   --force  rebuild even when the hash label matches (the debootstrap tarball
#            is still reused; delete /var/cache/shoal/ to redo it)
#   --list   print the image names this script produces and exit
# Environment: SHOAL_CACHE_DIR (default /var/cache/shoal), SHOAL_DEBIAN_MIRROR
#   (default: the mirror the host's apt sources use).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SUITE=bookworm
CACHE=${SHOAL_CACHE_DIR:-/var/cache/shoal}
FORCE=0
# Bump to invalidate every image built by an older recipe.
RECIPE_REV=1

# shellcheck source=images/lib.sh
source "$ROOT/scripts/images/lib.sh"

ALL=(busybox debian-python todo-app postgres numbers nginx)
TARGETS=()
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        --list)
            cat <<'EOF'
shoal/busybox:latest
shoal/debian-python:bookworm
shoal/todo-app:latest diamol/ch06-todo-list:latest
shoal/postgres:latest diamol/postgres:11.5 diamol/postgres:11.6
shoal/numbers-api:latest diamol/ch08-numbers-api:latest
shoal/numbers-api:v2 diamol/ch08-numbers-api:v2
shoal/numbers-api:v3 diamol/ch08-numbers-api:v3
shoal/numbers-api:v5 diamol/ch14-numbers-api:v5
shoal/numbers-web:latest diamol/ch08-numbers-web:latest
shoal/numbers-web:v2 diamol/ch08-numbers-web:v2
shoal/numbers-web:v3 diamol/ch08-numbers-web:v3
shoal/numbers-web:v5 diamol/ch14-numbers-web:v5
shoal/nginx:latest
EOF
            exit 0 ;;
        -h|--help) sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        busybox|debian-python|todo-app|postgres|numbers|nginx) TARGETS+=("$arg") ;;
        *) die "unknown argument: $arg (try --help)" ;;
    esac
done
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL[@]}")

want() { local t; for t in "${TARGETS[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }

command -v docker >/dev/null || die "docker client missing: run scripts/install-engine.sh"
docker info >/dev/null 2>&1 || die "no Docker Engine answers: run scripts/install-engine.sh"
# The classic builder: Debian's docker.io has no buildx plugin.
if ! docker buildx version >/dev/null 2>&1; then export DOCKER_BUILDKIT=0; fi

mkdir -p "$CACHE"
WORK=$(mktemp -d /tmp/shoal-build-images.XXXXXX)
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

T0=$SECONDS

# --- shoal/busybox -----------------------------------------------------------
build_busybox() {
    local img=shoal/busybox:latest bb=/bin/busybox
    [ -x "$bb" ] || die "$bb missing: apt-get install busybox-static"
    if ! file_is_static "$bb"; then die "$bb is not statically linked (need busybox-static)"; fi
    local hash; hash=$(hash_inputs scripts/images/busybox-rootfs.sh -- "busybox:$RECIPE_REV" "$(sha256sum "$bb")")
    if up_to_date "$img" "$hash"; then log "$img up to date"; BUSYBOX_HASH=$hash; return; fi
    local start=$SECONDS old; old=$(image_id "$img")
    bash "$ROOT/scripts/images/busybox-rootfs.sh" "$bb" "$WORK/busybox.tar"
    docker import \
        --change 'CMD ["sh"]' \
        --change "LABEL $HASH_LABEL=$hash" \
        --change 'LABEL org.opencontainers.image.description="busybox-static root file system (Shoal)"' \
        "$WORK/busybox.tar" "$img" >/dev/null
    log "imported $img in $((SECONDS - start))s"
    if [ "$old" != "$(image_id "$img")" ]; then drop_replaced "$old"; fi
    BUSYBOX_HASH=$hash
}

file_is_static() {
    # A static binary has no PT_INTERP program header.
    if command -v readelf >/dev/null; then
        ! readelf -l "$1" 2>/dev/null | grep -q 'Requesting program interpreter'
    else
        ! grep -q 'ld-linux' "$1"
    fi
}

# --- shoal/debian-python -----------------------------------------------------
build_debian_python() {
    local img=shoal/debian-python:bookworm
    local mirror=${SHOAL_DEBIAN_MIRROR:-$(host_debian_mirror)}
    local include=python3
    # The key names the recipe; the tarball made from it is cached under that name.
    local key; key=$(sha_str "debootstrap --variant=minbase --include=$include $SUITE $mirror rev=$RECIPE_REV")
    local tarball=$CACHE/debian-$SUITE-minbase-$include-${key:0:12}.tar
    local hash; hash=$(hash_inputs scripts/images/debian-rootfs.sh -- "$key")
    DEBIAN_HASH=$hash
    if up_to_date "$img" "$hash"; then log "$img up to date"; return; fi
    if [ ! -s "$tarball" ]; then
        command -v debootstrap >/dev/null || die "debootstrap missing: run scripts/install-engine.sh"
        local start=$SECONDS
        log "debootstrap $SUITE from $mirror (about a minute, done once; cached in $tarball)"
        bash "$ROOT/scripts/images/debian-rootfs.sh" "$SUITE" "$mirror" "$include" "$tarball" "$CACHE"
        log "  debootstrap took $((SECONDS - start))s"
    fi
    local start=$SECONDS old; old=$(image_id "$img")
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV DEBIAN_FRONTEND=noninteractive' \
        --change 'CMD ["bash"]' \
        --change "LABEL $HASH_LABEL=$hash" \
        --change "LABEL org.opencontainers.image.description=\"Debian $SUITE minbase + python3 (debootstrap, Shoal)\"" \
        "$tarball" "$img" >/dev/null
    log "imported $img in $((SECONDS - start))s"
    if [ "$old" != "$(image_id "$img")" ]; then drop_replaced "$old"; fi
}

# --- shoal/todo-app ----------------------------------------------------------
build_todo_app() {
    local img=shoal/todo-app:latest
    local hash; hash=$(hash_inputs examples/todo-app -- "todo-app:$RECIPE_REV" "base=$DEBIAN_HASH")
    if up_to_date "$img" "$hash"; then log "$img up to date"
    else docker_build "$img" "$hash" "$ROOT/examples/todo-app"; fi
    ensure_tags "$img" diamol/ch06-todo-list:latest
}

# --- shoal/postgres ----------------------------------------------------------
build_postgres() {
    local img=shoal/postgres:latest
    local hash; hash=$(hash_inputs examples/postgres -- "postgres:$RECIPE_REV" "base=$DEBIAN_HASH")
    if up_to_date "$img" "$hash"; then log "$img up to date"
    else docker_build "$img" "$hash" "$ROOT/examples/postgres"; fi
    ensure_tags "$img" diamol/postgres:11.5 diamol/postgres:11.6
}

# --- numbers (chapter 14 stand-ins) ------------------------------------------
# One image per app with the code; each version tag is a one-line layer on top
# (its own ENV/HEALTHCHECK), so the tags are distinct images, as a rolling
# update expects, and cost nothing to build.
build_numbers() {
    local app ver img hash base_hash
    for app in api web; do
        img=shoal/numbers-$app:latest
        base_hash=$(hash_inputs "examples/numbers/$app" examples/numbers/common -- \
            "numbers-$app:$RECIPE_REV" "base=$DEBIAN_HASH")
        if up_to_date "$img" "$base_hash"; then log "$img up to date"
        else docker_build "$img" "$base_hash" "$ROOT/examples/numbers" -f "$ROOT/examples/numbers/$app/Dockerfile"; fi
        for ver in v2 v3 v5; do
            img=shoal/numbers-$app:$ver
            hash=$(hash_inputs "examples/numbers/$app/Dockerfile.$ver" -- "parent=$base_hash")
            if up_to_date "$img" "$hash"; then log "$img up to date"
            else docker_build "$img" "$hash" "$ROOT/examples/numbers/$app" -f "$ROOT/examples/numbers/$app/Dockerfile.$ver"; fi
        done
    done
    ensure_tags shoal/numbers-api:latest diamol/ch08-numbers-api:latest
    ensure_tags shoal/numbers-api:v2 diamol/ch08-numbers-api:v2
    ensure_tags shoal/numbers-api:v3 diamol/ch08-numbers-api:v3
    ensure_tags shoal/numbers-api:v5 diamol/ch14-numbers-api:v5
    ensure_tags shoal/numbers-web:latest diamol/ch08-numbers-web:latest
    ensure_tags shoal/numbers-web:v2 diamol/ch08-numbers-web:v2
    ensure_tags shoal/numbers-web:v3 diamol/ch08-numbers-web:v3
    ensure_tags shoal/numbers-web:v5 diamol/ch14-numbers-web:v5
}

# --- shoal/nginx (the mesh benchmark's server) ---------------------------------
build_nginx() {
    local img=shoal/nginx:latest
    local hash; hash=$(hash_inputs examples/nginx -- "nginx:$RECIPE_REV" "base=$DEBIAN_HASH")
    if up_to_date "$img" "$hash"; then log "$img up to date"
    else docker_build "$img" "$hash" "$ROOT/examples/nginx"; fi
}

BUSYBOX_HASH="" DEBIAN_HASH=""
want busybox && build_busybox
if want debian-python || want todo-app || want postgres || want numbers || want nginx; then
    build_debian_python
fi
want todo-app && build_todo_app
want postgres && build_postgres
want numbers && build_numbers
want nginx && build_nginx

log "done in $((SECONDS - T0))s"
