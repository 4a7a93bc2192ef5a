#!/bin/sh
# bench_smoke.sh - the benchmarks still start and print their figures.
#
# The figures in docs/BENCHMARKS.md come from bench/compare and bench/e2e,
# which fill nginx/nginx.conf and nginx/tailgate.conf the way the tests'
# stack does.  A change to those files (a new placeholder, a renamed
# directive) or to a program's options can leave a benchmark unable to
# start while every test passes; this runs each one briefly and checks
# that it measured, not how fast anything was (timing is the benchmarks'
# job, on a quiet machine).  TAP output.
#
#   1. bench/compare --servers tailgate,floor at N = 20 for 1 s: a row per
#      server and client kind, none FAILED, and the ratio lines
#   2. bench/e2e at N = 1 for 1 s (needs nchan: skipped without it): an
#      e2e row per client kind
#
# Environment: top_builddir, top_srcdir.  Skips (77) without nginx.
top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-.}
build=$(cd "$top_builddir" && pwd)
src=$(cd "$top_srcdir" && pwd)

command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || {
    echo "1..0 # SKIP nginx not installed"
    exit 77
}
make -s -C "$build" bench/loadclient bench/publisher bench/floor_fcgi >/dev/null || {
    echo "1..1"
    echo "not ok 1 - building bench/loadclient, bench/publisher, bench/floor_fcgi"
    exit 1
}

n=0
failed=0
check() { # check DESCRIPTION COMMAND...: ok when COMMAND succeeds
    n=$((n + 1))
    desc=$1
    shift
    if "$@"; then
        echo "ok $n - $desc"
    else
        echo "not ok $n - $desc"
        failed=1
    fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

timeout 300 python3 "$src/bench/compare" --servers tailgate,floor --clients 20 --rates 10 \
    --duration 1 --warmup 0.5 --builddir "$build" >"$tmp/compare.out" 2>"$tmp/compare.err"
rc=$?
rows() { grep -cE "^$1 +$2 +20 +10 +20 " "$tmp/compare.out"; }
check "bench/compare exits 0 (exit $rc)" test $rc -eq 0
check "bench/compare: no server failed to start" sh -c "! grep -q FAILED '$tmp/compare.out'"
for s in tailgate floor; do
    for k in longpoll sse; do
        check "bench/compare measured $s $k at N=20" test "$(rows $s $k)" = 1
    done
done
check "bench/compare prints cpu tailgate/floor per kind" \
    test "$(grep -c '^cpu tailgate/floor N=20 rate=10' "$tmp/compare.out")" = 2
if [ $failed -ne 0 ]; then
    sed 's/^/# /' "$tmp/compare.out" | tail -20
    sed 's/^/# /' "$tmp/compare.err" | tail -20
fi

if [ -f /usr/lib/nginx/modules/ngx_nchan_module.so ] && [ "$(id -u)" = 0 ]; then
    timeout 300 python3 "$src/bench/e2e" --clients 1 --duration 1 --warmup 0.5 \
        --builddir "$build" >"$tmp/e2e.out" 2>"$tmp/e2e.err"
    rc=$?
    check "bench/e2e exits 0 (exit $rc)" test $rc -eq 0
    for k in longpoll sse; do
        check "bench/e2e measured $k at N=1" grep -qE "^\| $k \| 1 \|" "$tmp/e2e.out"
    done
    if [ $rc -ne 0 ]; then
        sed 's/^/# /' "$tmp/e2e.out" | tail -20
        sed 's/^/# /' "$tmp/e2e.err" | tail -20
    fi
else
    echo "# bench/e2e skipped: needs root and libnginx-mod-nchan"
fi

echo "1..$n"
exit $failed
