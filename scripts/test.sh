#!/usr/bin/env bash
# Install what Shoal's tests need and run the whole suite (unit + integration).
#
#   bash scripts/test.sh [PYTEST ARGS...]     # from the repository root, as root
#
# 1. Installs as scripts/setup.sh does, without the demo: Docker Engine, `pip install -e
#    '.[test]'`, the images (offline, cached), and Debian's chromium for the browser test.
# 2. The demo and the tests cannot run side by side: the book's tests publish port 8080 as
#    the demo does, and one Shoal cluster at a time owns this machine's datapath (its
#    nftables table).  So when a demo cluster exists (in $SHOAL_DATA_DIR, default
#    /var/lib/shoal) this script removes its stack `todo` (`shoal stack rm todo`; the
#    database volume, config, secret and node label stay) and stops its daemon (`shoal
#    stop`) before the tests, and afterwards starts the daemon again and redeploys the stack
#    -- the same to-do items are still there.  It says so as it goes.
# 3. Runs `python -m pytest tests -q -p no:cacheprovider -n 2 --dist loadgroup` (extra
#    arguments are passed on, e.g. `-k book`).  The exit code is pytest's; "no tests
#    collected" (5) counts as failure.  Two workers: the tests on the lab's hosts (own
#    engines, own network namespaces) run beside the tests on this machine's engine; within
#    each group one test at a time (tests/conftest.py puts each test in its group).
#    Integration tests make their own clusters in temporary data dirs and take turns on the
#    lock /tmp/shoal-node.lock.  Screenshots and logs go to artifacts/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

say() { echo "==> $*" >&2; }

T0=$SECONDS
bash "$ROOT/scripts/setup.sh" --install-only --with-tests

# The Python scripts/setup.sh installed Shoal into (a venv when the system one is PEP 668).
if [ -n "${SHOAL_VENV:-}" ]; then PY=$SHOAL_VENV/bin/python
elif [ -x "$ROOT/.venv/bin/python" ]; then PY=$ROOT/.venv/bin/python
else PY=${SHOAL_PYTHON:-python3}; fi

# --- the demo, out of the way ----------------------------------------------------------
DEMO=$("$PY" -c 'from shoal.paths import data_dir; print(data_dir())')
demo() { SHOAL_DATA_DIR=$DEMO "$PY" -m shoal "$@"; }
DEMO_STOPPED=0 DEMO_WAS_RUNNING=0 DEMO_HAD_STACK=0
demo_answers() { timeout 30 env SHOAL_DATA_DIR="$DEMO" "$PY" -m shoal info >/dev/null 2>&1; }

restore_demo() {
    [ $DEMO_STOPPED -eq 1 ] || return 0
    say "bringing the demo in $DEMO back"
    demo start || { say "WARNING: could not start the demo's daemon: see $DEMO/shoal.log"; return 0; }
    if [ $DEMO_HAD_STACK -eq 1 ]; then
        demo stack deploy -c examples/todo/docker-stack.yml --wait --timeout 600 todo \
            || say "WARNING: redeploying the demo failed; run: bash scripts/setup.sh"
    fi
    if [ $DEMO_WAS_RUNNING -eq 0 ]; then demo stop >/dev/null; fi
    return 0
}

if [ -e "$DEMO/cluster.json" ]; then
    if demo_answers; then DEMO_WAS_RUNNING=1; else demo start >/dev/null; fi
    DEMO_STOPPED=1
    trap restore_demo EXIT
    if demo stack ls --format json | grep -q '"Name": *"todo"'; then
        DEMO_HAD_STACK=1
        say "a demo runs in $DEMO and publishes port 8080 like the book's tests:"
        say "removing its stack (shoal stack rm todo -- volume, config, secret and label stay) and"
        say "stopping its daemon (shoal stop) for the tests; both come back when they end"
        demo stack rm todo
        deadline=$((SECONDS + 180))
        while [ -n "$(docker ps -aq --filter label=com.docker.stack.namespace=todo --filter label=shoal.managed=true)" ]; do
            if [ $SECONDS -ge $deadline ]; then say "WARNING: the demo's containers are still there"; break; fi
            sleep 1
        done
    else
        say "a Shoal cluster exists in $DEMO: stopping its daemon (shoal stop) for the tests; it comes back after"
    fi
    demo stop >/dev/null
fi

# --- the suite -------------------------------------------------------------------------
mkdir -p "$ROOT/artifacts"
say "python -m pytest tests -q -p no:cacheprovider -n 2 --dist loadgroup $*"
T1=$SECONDS
set +e
"$PY" -m pytest tests -q -p no:cacheprovider -n 2 --dist loadgroup "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then
    say "pytest collected no tests: that is a failure"
    rc=1
fi
say "tests finished with exit code $rc in $((SECONDS - T1))s (everything: $((SECONDS - T0))s)"
exit $rc
