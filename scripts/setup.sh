#!/usr/bin/env bash
# Install everything Shoal needs and run its demo: the book's to-do app on a one-node cluster.
#
#   bash scripts/setup.sh                    # from the repository root, as root, on Debian 12
#
# Steps (each one is skipped when already done, so re-running is safe):
#   1. Docker Engine: scripts/install-engine.sh (Debian's docker.io when no engine answers,
#      dockerd started by hand -- no systemd needed).
#   2. Shoal itself: `pip install -e .` into the Python that runs this script's `python3`
#      (3.11+).  A Debian system Python is "externally managed" (PEP 668): then Shoal goes
#      into a virtual environment at .venv/ and `shoal` is linked into /usr/local/bin.
#      Debian's etcd-server too: the etcd members of several managers (`init --store etcd`).
#   3. The images, built offline: scripts/build-images.sh (cached; seconds the second time).
#   4. The demo: `shoal init` (or `shoal start` when the cluster exists but its daemon is
#      stopped), config `todo-list-config` and secret `todo-list-secret` from examples/todo/
#      (when missing), node label storage=raid, `shoal stack deploy --wait` of
#      examples/todo/docker-stack.yml as stack `todo`, then a check that the app answers on
#      http://localhost:8080.
#
# Options (used by scripts/test.sh):
#   --install-only   steps 1-3 only
#   --with-tests     also the test extras (`pip install -e '.[test]'`), Debian's chromium
#                    for the browser test and wrk for the benchmarks' smoke test
# Environment:
#   SHOAL_DATA_DIR   the demo cluster's data dir (default /var/lib/shoal)
#   SHOAL_VENV=DIR   always install into a virtual environment at DIR (default: only when the
#                    Python is externally managed, then .venv)
#   SHOAL_PYTHON     the Python to use (default python3)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

INSTALL_ONLY=0 WITH_TESTS=0
for arg in "$@"; do
    case "$arg" in
        --install-only) INSTALL_ONLY=1 ;;
        --with-tests) WITH_TESTS=1 ;;
        -h|--help) sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "setup: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

say() { echo "==> $*" >&2; }
die() { echo "setup: error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run me as root (Shoal drives the Docker Engine and nftables)"

export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=0
apt_install() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "missing packages (${missing[*]}) and no apt-get to install them"
    say "apt-get install ${missing[*]}"
    if [ $APT_UPDATED -eq 0 ]; then apt-get update -q; APT_UPDATED=1; fi
    apt-get install -y -q --no-install-recommends "${missing[@]}"
}

T0=$SECONDS

# --- 1. Docker Engine ------------------------------------------------------------------
say "Docker Engine"
bash "$ROOT/scripts/install-engine.sh"
# install-engine.sh installs the image-build tools only when it had to install the engine.
apt_install busybox-static debootstrap nftables iptables iproute2 curl

# --- 2. Shoal (Python package) ---------------------------------------------------------
PY=${SHOAL_PYTHON:-python3}
command -v "$PY" >/dev/null || apt_install python3
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "Shoal needs Python 3.11 or later; $PY is $("$PY" -V 2>&1)"

externally_managed() {
    "$1" - <<'EOF'
import os, sys, sysconfig
in_venv = sys.prefix != sys.base_prefix
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
sys.exit(0 if (not in_venv and os.path.exists(marker)) else 1)
EOF
}

VENV=${SHOAL_VENV:-}
if [ -z "$VENV" ] && externally_managed "$PY"; then VENV=$ROOT/.venv; fi
if [ -n "$VENV" ]; then
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating a virtual environment in $VENV (this Python is externally managed, PEP 668)"
        if ! "$PY" -m venv "$VENV" 2>/dev/null; then
            rm -rf "$VENV"
            apt_install python3-venv
            "$PY" -m venv "$VENV"
        fi
    fi
    PY=$VENV/bin/python
elif ! "$PY" -m pip --version >/dev/null 2>&1; then
    "$PY" -m ensurepip --upgrade >/dev/null 2>&1 || apt_install python3-pip
fi

SPEC=.
[ $WITH_TESTS -eq 1 ] && SPEC='.[test]'
# Already installed from this tree with every requirement satisfied? Then skip pip.
installed() {
    "$PY" - "$ROOT" "$WITH_TESTS" <<'EOF' 2>/dev/null
import importlib.metadata as md, os, sys
root, with_tests = sys.argv[1], sys.argv[2] == "1"
from pip._vendor.packaging.requirements import Requirement
import shoal
if os.path.dirname(os.path.dirname(os.path.abspath(shoal.__file__))) != root:
    sys.exit(1)
import tomllib
# What pyproject.toml asks for now (the installed metadata may be older than the checkout).
with open(os.path.join(root, "pyproject.toml"), "rb") as f:
    project = tomllib.load(f)["project"]
wanted = list(project.get("dependencies", []))
if with_tests:
    wanted += project.get("optional-dependencies", {}).get("test", [])
for line in wanted:
    r = Requirement(line)
    if r.marker and not r.marker.evaluate({"extra": ""}):
        continue
    if md.version(r.name) not in r.specifier:
        sys.exit(1)
EOF
}
if installed; then
    say "Shoal already installed from $ROOT ($PY)"
else
    say "pip install -e '$SPEC' ($PY)"
    "$PY" -m pip install --disable-pip-version-check -q -e "$SPEC"
fi
if [ -n "$VENV" ]; then
    ln -sf "$VENV/bin/shoal" /usr/local/bin/shoal
    say "linked /usr/local/bin/shoal -> $VENV/bin/shoal"
fi
shoal() { "$PY" -m shoal "$@"; }

if [ $WITH_TESTS -eq 1 ]; then
    # The browser test drives Debian's chromium (never a downloaded browser); the benchmarks'
    # smoke test runs bench/run.py mesh, which drives wrk.
    command -v chromium >/dev/null || apt_install chromium
    command -v wrk >/dev/null || apt_install wrk
fi

# Several managers keep the cluster's state in etcd members Shoal runs itself
# (`shoal init --store etcd`), with Debian's etcd binary; the store's contract tests run
# against it too (tests/etcd_server.py starts its own member on free ports).
if ! command -v etcd >/dev/null; then
    apt_install etcd-server
    # Debian starts an etcd service of its own on 127.0.0.1:2379 where systemd runs; Shoal's
    # members are started by Shoal (and that port is theirs): the package's service stays off.
    if command -v systemctl >/dev/null && systemctl is-active -q etcd 2>/dev/null; then
        say "stopping and disabling Debian's etcd.service (Shoal runs its own members)"
        systemctl disable --now etcd || true
    fi
fi

# --- 3. Images -------------------------------------------------------------------------
say "images (scripts/build-images.sh; offline, cached)"
bash "$ROOT/scripts/build-images.sh"

if [ $INSTALL_ONLY -eq 1 ]; then
    say "installed in $((SECONDS - T0))s (python: $PY)"
    exit 0
fi

# --- 4. The demo -----------------------------------------------------------------------
DATA=$("$PY" -c 'from shoal.paths import data_dir; print(data_dir())')
if [ ! -e "$DATA/cluster.json" ] && [ -e "$DATA/manager/store.db" ]; then
    # `shoal leave --force` keeps the old store; `shoal init` would adopt its services, configs
    # and tasks bound to the node that left (stuck "Assigned").  Clear the left cluster's state,
    # as `docker swarm leave --force` does.
    say "$DATA holds the state of a cluster this node left: removing it before shoal init"
    rm -rf "${DATA:?}/manager" "$DATA/certs" "$DATA/agent" "$DATA/shoal.sock" "$DATA/shoal.pid"
fi
if [ -e "$DATA/cluster.json" ]; then
    say "cluster in $DATA: making sure its daemon runs"
    shoal start
else
    say "shoal init (data dir $DATA)"
    shoal init
fi

ensure_object() {  # KIND NAME FILE
    if shoal "$1" inspect "$2" >/dev/null 2>&1; then
        say "$1 $2 exists"
    else
        say "shoal $1 create $2 $3"
        shoal "$1" create "$2" "$3"
    fi
}
ensure_object config todo-list-config examples/todo/configs/config.json
ensure_object secret todo-list-secret examples/todo/secrets/secrets.json
# The database only runs on a node labelled storage=raid (its volume lives there).
shoal node update --label-add storage=raid "$(shoal node ls -q | head -n 1)" >/dev/null

say "shoal stack deploy -c examples/todo/docker-stack.yml --wait todo"
shoal stack deploy -c examples/todo/docker-stack.yml --wait --timeout 600 todo

echo
shoal stack ps todo
echo

# The app answers once the web replicas reach the database (they retry on their own).
URL=http://localhost:8080
deadline=$((SECONDS + 180)) page=""
until page=$(curl -fsS --max-time 5 "$URL/" 2>/dev/null) && grep -q "items to do" <<<"$page"; do
    if [ $SECONDS -ge $deadline ]; then
        echo "$page" | head -n 20 >&2
        die "the to-do app does not answer on $URL (see: shoal service logs todo_todo-web)"
    fi
    sleep 2
done
say "the to-do app answers: $(grep -o "You have [0-9]* items to do" <<<"$page" | head -n 1)"
say "done in $((SECONDS - T0))s.  Open $URL in a browser ($URL/diagnostics shows which replica answered)."
echo "$URL"
