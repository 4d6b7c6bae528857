#!/bin/bash
# Entrypoint of shoal/postgres (stand-in for the book's diamol/postgres).
#
#   PGDATA             data directory (default /var/lib/postgresql/data)
#   POSTGRES_USER      superuser name (default postgres)
#   POSTGRES_PASSWORD  its password; when empty, every host is trusted (as the
#                      book's 11.x image did) -- fine for a demo, never for prod
#   POSTGRES_DB        database created on first start (default: POSTGRES_USER)
#
# On first start (PGDATA holds no PG_VERSION) it runs initdb as `postgres`,
# then *.sql / *.sh from /docker-entrypoint-initdb.d/.  The server runs as a
# child of this script (PID 1), which forwards SIGTERM/SIGINT/SIGQUIT as a
# fast shutdown (SIGINT) and exits with the server's status.
set -Eeuo pipefail

log() { echo "postgres-entrypoint: $*" >&2; }

# `docker run IMAGE -c foo=bar` means `postgres -c foo=bar`.
if [ "${1:0:1}" = '-' ]; then set -- postgres "$@"; fi

if [ "$1" != 'postgres' ]; then exec "$@"; fi
shift

export PGDATA=${PGDATA:-/var/lib/postgresql/data}
POSTGRES_USER=${POSTGRES_USER:-postgres}
POSTGRES_PASSWORD=${POSTGRES_PASSWORD:-}
POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}

as_postgres() {
    if [ "$(id -u)" = 0 ]; then
        setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
    else
        "$@"
    fi
}

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    # Only chown what is ours to own (a mounted volume's root may be shared).
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    chmod 2777 /var/run/postgresql
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    log "initialising database cluster in $PGDATA (superuser $POSTGRES_USER)"
    pwfile=$(mktemp)
    chmod 644 "$pwfile"
    printf '%s\n' "${POSTGRES_PASSWORD:-postgres}" >"$pwfile"
    as_postgres initdb --username="$POSTGRES_USER" --pwfile="$pwfile" \
        --encoding=UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    if [ -z "$POSTGRES_PASSWORD" ]; then
        log "WARNING: POSTGRES_PASSWORD is empty: trusting every host (no password needed)"
        auth=trust
    else
        auth=scram-sha-256
    fi
    {
        echo
        echo "# added by the shoal/postgres entrypoint"
        echo "host all all all $auth"
    } >>"$PGDATA/pg_hba.conf"
    {
        echo "listen_addresses = '*'"
        echo "jit = off  # this image ships without the LLVM JIT"
    } >>"$PGDATA/postgresql.conf"

    # Create the database and run the init scripts on a server that only
    # listens on its Unix socket.
    as_postgres pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w -t 60 start >/dev/null
    psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres -q)
    if [ "$POSTGRES_DB" != postgres ]; then
        exists=$(as_postgres "${psql[@]}" -tA -c "SELECT 1 FROM pg_database WHERE datname = '${POSTGRES_DB//\'/\'\'}'")
        if [ "$exists" != 1 ]; then
            log "creating database $POSTGRES_DB"
            as_postgres "${psql[@]}" -c "CREATE DATABASE \"${POSTGRES_DB//\"/\"\"}\""
        fi
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        [ -e "$f" ] || continue
        case "$f" in
            *.sh)  log "running $f"; . "$f" ;;
            *.sql) log "running $f"; as_postgres "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
            *)     log "ignoring $f" ;;
        esac
    done
    as_postgres pg_ctl -D "$PGDATA" -m fast -w -t 60 stop >/dev/null
    log "initialisation done"
else
    log "using the existing database cluster in $PGDATA (version $(cat "$PGDATA/PG_VERSION"))"
fi

# Run the server as our child; forward stop signals as a fast shutdown.
child=
forward() {
    if [ -n "$child" ]; then kill -INT "$child" 2>/dev/null || true; fi
}
trap forward TERM INT QUIT
# (A simple command, not the as_postgres function: `$!` must be the server
# itself, not a subshell, which would ignore SIGINT as background jobs do.)
if [ "$(id -u)" = 0 ]; then
    setpriv --reuid=postgres --regid=postgres --init-groups -- postgres -D "$PGDATA" -c listen_addresses='*' "$@" &
else
    postgres -D "$PGDATA" -c listen_addresses='*' "$@" &
fi
child=$!
status=0
while :; do
    wait "$child" && status=0 || status=$?
    # wait returns >128 when interrupted by a trapped signal: keep waiting
    # until the server itself has gone.
    kill -0 "$child" 2>/dev/null || break
done
log "postgres exited with status $status"
exit "$status"
