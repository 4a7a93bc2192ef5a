#!/bin/sh
# bench/fcgi.sh - the responder under load: bench_fcgi's long-pollers and
# SSE clients through a private nginx (tests/lib/stack.py), loopback only.
#
#   bench/fcgi.sh                 N = 1000 and 10000, long-poll and SSE
#   NS="2000" MODES=longpoll RATE=20 BATCHES=20 bench/fcgi.sh
#
# Descriptors: every client holds one in bench_fcgi, two in an nginx
# worker (client and FastCGI connection) and one in tailgate-fcgi (two for
# a moment while a reply's connection closes), so the hard limit must be
# above N + a margin for every process, and nginx needs 2 workers so that
# each holds about N descriptors (10,000 clients run here under the
# container's hard limit of 20,000).  Raise it with ulimit -Hn as root.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
build=${TAILGATE_BUILDDIR:-$top/build}
NS=${NS:-"1000 10000"}
MODES=${MODES:-"longpoll sse"}
RATE=${RATE:-1}
BATCHES=${BATCHES:-10}
ROWS=${ROWS:-10}
make -C "$build" -s tailgate-fcgi tests/ringfeed bench/bench_fcgi >/dev/null
export TAILGATE_BUILDDIR="$build"

max=0
for n in $NS; do [ "$n" -gt "$max" ] && max=$n; done
want=$((max + 2048))
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
    ulimit -Hn "$want" 2>/dev/null || { echo "fcgi.sh: need ulimit -Hn >= $want"; exit 1; }
    hard=$want
fi
ulimit -n "$hard"

for n in $NS; do
    for mode in $MODES; do
        echo "== $mode, N=$n, $BATCHES batches of $ROWS rows at $RATE/s"
        flag=""; [ "$mode" = sse ] && flag=--sse
        python3 "$top/tests/lib/stack.py" run --nginx-workers 2 \
            --connections $((2 * n + 1024)) --nofile "$(ulimit -n)" \
            --responder-arg=--writers=4 -- \
            sh -c 'pids=""; for p in $TAILGATE_RESPONDER_PIDS; do pids="$pids --pid $p"; done
                   exec "$0" --port "$TAILGATE_PORT" --ring-dir "$TAILGATE_RING_DIR" $pids \
                        --nginx-pid "$TAILGATE_NGINX_PID" "$@"' \
            "$build/bench/bench_fcgi" -n "$n" $flag --rate "$RATE" --batches "$BATCHES" \
            --rows "$ROWS" --max-seconds 60
    done
done
