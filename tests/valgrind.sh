#!/bin/sh
# valgrind.sh - tailgate under valgrind's memcheck, as part of make check.
#
# 1. Every quick C unit test program (not the ring stress test, not the
#    fuzz replay) runs under memcheck: any invalid read or write, use of
#    an uninitialised value, or definite or indirect leak makes valgrind
#    exit 99, and the test fails.  Fork children are followed (%p logs).
# 2. tests/valgrind_stack.py: a real PostgreSQL, tailgated and
#    tailgate-fcgi both under memcheck, nginx in front; a snapshot, a
#    long-poll woken by an INSERT, an SSE batch, filters, several feeds,
#    bad requests, then SIGTERM: both exit 0 with clean valgrind logs.
#
# The options are tests/lib/util.py's valgrind_cmd; tests/valgrind.supp
# holds the only suppressions (third-party noise, each explained).
# Skips (77) without valgrind or in a sanitizer build (SANITIZER=asan|tsan,
# as tools/test sets it, or a binary linking a sanitizer runtime); the
# end-to-end part is skipped (not failed) without PostgreSQL or nginx.
# The unit tests' logs are kept (their path printed) after a failure, or
# always with VALGRIND_KEEP=1.
top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-.}

command -v valgrind >/dev/null 2>&1 || { echo "1..0 # SKIP valgrind not found"; exit 77; }
san=${SANITIZER:-}
if [ -z "$san" ]; then
    syms=$(nm "$top_builddir/tests/test_batch" 2>/dev/null; ldd "$top_builddir/tests/test_batch" 2>/dev/null)
    case $syms in
    *__tsan_init* | *libtsan*) san=tsan ;;
    *__asan_init* | *libasan*) san=asan ;;
    esac
fi
if [ -n "$san" ]; then
    echo "1..0 # SKIP a $san build: valgrind cannot run sanitized programs"
    exit 77
fi

logs=$(mktemp -d "${TMPDIR:-/tmp}/tailgate-vg.XXXXXX") || exit 99
supp=$top_srcdir/tests/valgrind.supp
n=0
failed=0

# memcheck NAME PROGRAM [VALGRIND-OPTION...]: run PROGRAM, its output in
# $logs/NAME.out, valgrind's report in $logs/NAME.PID.log; valgrind's status.
memcheck() {
    name=$1
    prog=$2
    shift 2
    valgrind --tool=memcheck --error-exitcode=99 --leak-check=full \
        --errors-for-leak-kinds=definite,indirect --suppressions="$supp" \
        --log-file="$logs/$name.%p.log" "$@" "$prog" >"$logs/$name.out" 2>&1
}

# One TAP line per unit test program; its output and valgrind's log on failure.
for t in test_ring test_batch test_encode test_copytext test_rowset test_conf test_feed \
    test_pgconn test_pgoutput test_render test_park test_conn test_netbatch test_http_params \
    test_filter; do
    n=$((n + 1))
    prog=$top_builddir/tests/$t
    if [ ! -x "$prog" ]; then
        echo "not ok $n - $t: $prog not built"
        failed=$((failed + 1))
        continue
    fi
    memcheck "$t" "$prog"
    rc=$?
    # A forked child's errors are in its own log, not in the test's status
    # (a log without a summary: a child killed on purpose, no report).
    if [ $rc -eq 0 ] && grep -L 'ERROR SUMMARY: 0 errors' "$logs/$t".*.log |
        xargs -r grep -l 'ERROR SUMMARY' | grep -q .; then
        rc=99
    fi
    if [ $rc -eq 0 ]; then
        echo "ok $n - $t under memcheck: 0 errors, no definite or indirect leak"
    else
        failed=$((failed + 1))
        echo "not ok $n - $t under memcheck: exit $rc (99: memcheck errors)"
        tail -15 "$logs/$t.out" | sed 's/^/#   /'
        # Again with --track-origins (twice as slow): where an
        # uninitialised value came from.
        rm -f "$logs/$t".*.log
        memcheck "$t" "$prog" --track-origins=yes
        for log in "$logs/$t".*.log; do
            grep -q 'ERROR SUMMARY: 0 errors' "$log" && continue
            sed 's/^/#   /' "$log" | head -80
        done
    fi
done

# The whole stack, end to end: its checks as comments, one TAP line here.
n=$((n + 1))
if ! command -v python3 >/dev/null 2>&1; then
    echo "ok $n - the stack under memcheck # SKIP python3 not found"
else
    python3 "$top_srcdir/tests/valgrind_stack.py" >"$logs/stack.out" 2>&1
    rc=$?
    sed 's/^/#   /' "$logs/stack.out"
    case $rc in
    0) echo "ok $n - the stack under memcheck (tests/valgrind_stack.py)" ;;
    77) echo "ok $n - the stack under memcheck # SKIP $(sed -n 's/^1\.\.0 # SKIP //p' "$logs/stack.out")" ;;
    *)
        failed=$((failed + 1))
        echo "not ok $n - the stack under memcheck (tests/valgrind_stack.py): exit $rc"
        ;;
    esac
fi

echo "1..$n"
if [ "${VALGRIND_KEEP:-}" = 1 ] || [ $failed -gt 0 ]; then
    echo "# logs kept in $logs"
else
    rm -rf "$logs"
fi
[ $failed -eq 0 ]
