#!/bin/sh
# pg.sh - a private PostgreSQL 15 cluster for shell tests and the demo.
#
# The same cluster as pg.py (beside this file), for POSIX sh:
#
#   . tests/lib/pg.sh
#   pg_start            # initdb + start in a new temp dir; sets PGDIR PGHOST
#                       # PGPORT PGUSER PGDATABASE TAILGATE_PG_DSN (exported)
#   trap 'pg_stop' EXIT # stop and remove the directory on exit
#   pg_psql 'CREATE TABLE t (a int)'     # psql -At, ON_ERROR_STOP
#   pg_psql_file sql/auction_house.sql
#   pg_restart          # fast shutdown and start on the same port
#   pg_crash            # immediate shutdown (no checkpoint); pg_start again
#
# pg_start DIR uses DIR instead of a temp dir (created if missing, kept by
# pg_stop; an existing cluster in it is started again).  TAILGATE_PG_SET may
# hold extra postgresql.conf lines ("name = value", one per line).
#
# The server runs as the postgres user when we are root (never as root),
# listens on 127.0.0.1 on a free port and on a unix socket in $PGDIR/sock,
# with wal_level=logical, 32 replication slots and WAL senders, and trust
# authentication for local and replication connections.  Readiness is
# polled with pg_isready against a deadline (TAILGATE_PG_START_TIMEOUT
# seconds, default 60), never a fixed sleep.
#
# As a command:  tests/lib/pg.sh start [DIR]   prints export lines for eval
#                tests/lib/pg.sh stop DIR      stops the cluster in DIR

pg_bindir() {
    if [ -n "${TAILGATE_PG_BIN:-}" ]; then echo "$TAILGATE_PG_BIN"; return; fi
    if [ -x /usr/lib/postgresql/15/bin/initdb ]; then echo /usr/lib/postgresql/15/bin; return; fi
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n); do b=$d; done
    if [ -n "${b:-}" ]; then echo "$b"; return; fi
    echo "pg.sh: PostgreSQL server binaries not found (install postgresql-15)" >&2
    return 1
}

# Run a server-side command as the server's OS user when we are root.
_pg_as() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u "${TAILGATE_PG_USER:-postgres}" -- "$@"
    else
        "$@"
    fi
}

_pg_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

_pg_log_tail() {
    [ -f "$PGDIR/server.log" ] && { echo "---- $PGDIR/server.log (tail)"; tail -30 "$PGDIR/server.log"; } >&2
    return 0
}

_pg_write_conf() {
    cat >"$PGDIR/data/postgresql.auto.conf" <<EOF
# written by tests/lib/pg.sh on every start
wal_level = logical
max_replication_slots = 32
max_wal_senders = 32
max_connections = 200
fsync = off
full_page_writes = off
shared_buffers = 128MB
max_wal_size = 1GB
log_min_messages = warning
log_line_prefix = '%m [%p] %q%a '
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$PGDIR/sock'
${TAILGATE_PG_SET:-}
EOF
    [ "$(id -u)" -eq 0 ] && chown "${TAILGATE_PG_USER:-postgres}" "$PGDIR/data/postgresql.auto.conf"
    return 0
}

pg_start() {
    _pg_bin=$(pg_bindir) || return 1
    if [ -n "${1:-}" ] && [ "$1" != "${PGDIR:-}" ]; then
        PGDIR=$1; _pg_made=0
        mkdir -p "$PGDIR" || return 1
    elif [ -z "${PGDIR:-}" ] || [ ! -d "${PGDIR:-}/data" ]; then
        PGDIR=$(mktemp -d "${TMPDIR:-/tmp}/tailgate-pg.XXXXXX") || return 1
        _pg_made=1
    fi
    PGDIR=$(cd "$PGDIR" && pwd)
    export PGDIR PGHOST="$PGDIR/sock" PGUSER=postgres PGDATABASE=postgres
    if [ ! -f "$PGDIR/data/PG_VERSION" ]; then
        mkdir -p "$PGDIR/sock"
        if [ "$(id -u)" -eq 0 ]; then
            chown "${TAILGATE_PG_USER:-postgres}" "$PGDIR" "$PGDIR/sock" || return 1
            chmod 755 "$PGDIR"
        fi
        _pg_as "$_pg_bin/initdb" -D "$PGDIR/data" -U postgres -A trust -E UTF8 --locale=C \
            --no-sync --no-instructions >"$PGDIR/initdb.log" 2>&1 ||
            { cat "$PGDIR/initdb.log" >&2; return 1; }
        cat >"$PGDIR/data/pg_hba.conf" <<EOF
# written by tests/lib/pg.sh: a private test cluster
local all         all                trust
local replication all                trust
host  all         all  127.0.0.1/32  trust
host  replication all  127.0.0.1/32  trust
EOF
    fi
    if [ -z "${PGPORT:-}" ] || [ "${_pg_port_dir:-}" != "$PGDIR" ]; then
        PGPORT=$(sed -n 's/^port = //p' "$PGDIR/data/postgresql.auto.conf" 2>/dev/null)
        [ -n "$PGPORT" ] || PGPORT=$(_pg_free_port)
    fi
    _pg_port_dir=$PGDIR
    export PGPORT
    _pg_tries=0
    while :; do
        _pg_write_conf
        _pg_as "$_pg_bin/pg_ctl" start -W -D "$PGDIR/data" -l "$PGDIR/server.log" >/dev/null ||
            { _pg_log_tail; return 1; }
        if pg_wait_ready; then break; fi
        _pg_tries=$((_pg_tries + 1))
        if [ $_pg_tries -lt 5 ] && grep -q 'Address already in use' "$PGDIR/server.log"; then
            PGPORT=$(_pg_free_port); export PGPORT
            continue
        fi
        _pg_log_tail
        return 1
    done
    export TAILGATE_PG_DSN="host=127.0.0.1 port=$PGPORT user=postgres dbname=postgres"
    return 0
}

# Poll pg_isready until the server answers; fail early if it died.
pg_wait_ready() {
    _pg_bin=$(pg_bindir) || return 1
    _pg_deadline=$(( $(date +%s) + ${TAILGATE_PG_START_TIMEOUT:-60} ))
    _pg_t0=$(date +%s)
    while [ "$(date +%s)" -lt "$_pg_deadline" ]; do
        "$_pg_bin/pg_isready" -q -h "$PGDIR/sock" -p "$PGPORT" -t 1 && return 0
        if [ $(( $(date +%s) - _pg_t0 )) -ge 1 ] &&
            ! _pg_as "$_pg_bin/pg_ctl" status -D "$PGDIR/data" >/dev/null 2>&1; then
            echo "pg.sh: server did not start" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "pg.sh: server not ready within ${TAILGATE_PG_START_TIMEOUT:-60} s" >&2
    return 1
}

_pg_stop_mode() {
    _pg_bin=$(pg_bindir) || return 1
    _pg_as "$_pg_bin/pg_ctl" status -D "$PGDIR/data" >/dev/null 2>&1 || return 0
    _pg_as "$_pg_bin/pg_ctl" stop -D "$PGDIR/data" -m "$1" -w -t 60 >/dev/null
}

# Stop; remove the directory when pg_start made it.
pg_stop() {
    [ -n "${PGDIR:-}" ] && [ -d "$PGDIR/data" ] || return 0
    _pg_stop_mode fast
    if [ "${_pg_made:-0}" = 1 ]; then
        rm -rf "$PGDIR"
        unset PGDIR
    fi
}

pg_restart() { _pg_stop_mode fast && pg_start; }
pg_crash() { _pg_stop_mode immediate; }

pg_psql() {
    psql -X -q -At -v ON_ERROR_STOP=1 -h "$PGDIR/sock" -p "$PGPORT" -U postgres \
        -d "${PGDATABASE:-postgres}" -c "$1"
}

pg_psql_file() {
    psql -X -q -At -v ON_ERROR_STOP=1 -h "$PGDIR/sock" -p "$PGPORT" -U postgres \
        -d "${PGDATABASE:-postgres}" -f "$1"
}

# Command form.
case "$0" in
*pg.sh)
    set -u
    case "${1:-}" in
    start)
        pg_start "${2:-}" >&2 || exit 1
        for v in PGDIR PGHOST PGPORT PGUSER PGDATABASE TAILGATE_PG_DSN; do
            eval "printf 'export %s=%s\n' $v \"'\$$v'\""
        done
        ;;
    stop)
        [ -n "${2:-}" ] || { echo "usage: pg.sh stop DIR" >&2; exit 2; }
        PGDIR=$(cd "$2" && pwd) _pg_made=0
        _pg_stop_mode fast
        ;;
    *)
        echo "usage: pg.sh start [DIR] | pg.sh stop DIR   (or source it: . pg.sh; pg_start)" >&2
        exit 2
        ;;
    esac
    ;;
esac
